"""Backups on the lab: real volumes, real Redis and Prometheus, streamed over real SSH.

The stack is left as the deployed_lab fixture gave it: every service healthy, test data removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.backup import list_snapshots
from ops.deploy.health import project_health
from ops.deploy.releases import ReleaseStore
from ops.transport import Fleet, Host
from tests.integration.conftest import REPO, Lab, opskit, write_env
from tests.s3server import ACCESS_ID, SIGNING_WORD, CuttingRelay, S3Server

pytestmark = pytest.mark.integration

ENV = "itestbk"
SERVICES = ["alertmanager", "prometheus", "proxy", "redis", "web"]


def env_text(lab: Lab, backup_dir: Path) -> str:
    base = (lab.root / "env" / f"{lab.env.name}.env").read_text()
    return base + f"\nBACKUP_DIR={backup_dir}\n"


@pytest.fixture(scope="module")
def bk(deployed_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path, Host]]:
    """An environment (same hosts) whose snapshots go to a fresh directory; the first host."""
    backups = tmp_path_factory.mktemp("backups")
    write_env(deployed_lab.root, ENV, env_text(deployed_lab, backups))
    fleet = Fleet.connect(deployed_lab.env)
    yield deployed_lab, backups, fleet.hosts[0]
    fleet.close()
    (deployed_lab.root / "env" / f"{ENV}.env").unlink(missing_ok=True)


def redis(host: Host, *args: str) -> str:
    return host.run("docker exec demo-redis-1 redis-cli " + " ".join(args)).stdout.strip()


def mountpoint(host: Host, volume: str) -> str:
    return host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' demo_{volume}").stdout.strip()


def tree_digest(host: Host, volume: str) -> str:
    """Every file's path, mode, owner and sha256 under a volume: equal means byte-identical."""
    path = mountpoint(host, volume)
    return host.sudo(
        f"cd {path} && find . -path ./snapshots -prune -o -printf '%p %m %U:%G %y\\n' | sort && "
        "find . -path ./snapshots -prune -o -type f -print0 | sort -z | xargs -0r sha256sum"
    ).stdout


def destroy(host: Host, services: list[str]) -> None:
    """What a disaster leaves: the services' containers and their volumes (`<service>-data`) gone."""
    store = ReleaseStore(host, "demo")
    current = store.get(store.current_id() or "")
    assert current is not None
    host.run(store.compose_command(current, f"rm -s -f {' '.join(services)}"), timeout=120)
    host.run("docker volume rm " + " ".join(f"demo_{service}-data" for service in services))


def healthy(host: Host, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        report = project_health(host, "demo", SERVICES)
        bad = [f"{s.service}={s.state}" for s in report if not s.ok]
        if not bad or time.monotonic() > deadline:
            return bad
        time.sleep(1)


def test_backup_destroy_restore_gives_back_identical_data(bk: tuple[Lab, Path, Host]) -> None:
    lab, backups, host = bk
    # Known data: Redis keys (binary-safe values), files with modes in a volume, Prometheus samples.
    redis(host, "SET", "opskit:greeting", "'hello backup'")
    redis(host, "RPUSH", "opskit:list", "a", "b", "c")
    am = mountpoint(host, "alertmanager-data")
    host.sudo(
        f"mkdir -p {am}/opskit-test/sub && head -c 300000 /dev/urandom > {am}/opskit-test/blob.bin && "
        f"printf 'line\\n' > {am}/opskit-test/sub/note.txt && chmod 640 {am}/opskit-test/sub/note.txt && "
        f"chown 1234:5678 {am}/opskit-test/blob.bin"
    )
    before_files = tree_digest(host, "alertmanager-data")
    # Samples: Prometheus scrapes every 15 s, so right after a deploy the first may be seconds away.
    deadline = time.monotonic() + 45
    while True:
        sample_time = int(time.time())
        query = f"promtool query instant --time={sample_time} http://127.0.0.1:9090 'up'"
        if "=>" in host.run(f"docker exec demo-prometheus-1 {query}").stdout:
            break  # samples exist now
        assert time.monotonic() < deadline, "Prometheus stored no sample within 45 s"
        time.sleep(1)

    done = opskit(lab.root, "backup.all", "--env", ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "complete" in done.stdout and "redis BGSAVE" in done.stdout and "prometheus snapshot" in done.stdout
    (snapshot,) = [s for s in list_snapshots(backups) if s.complete]
    manifest = json.loads((snapshot.path / "manifest.json").read_text())
    assert {(a["host"], a["volume"]) for a in manifest["archives"]} == {
        (h.name, v) for h in lab.env.hosts for v in ("alertmanager-data", "prometheus-data", "redis-data")
    }
    assert all(len(a["sha256"]) == 64 and a["archive"].endswith(".tar.zst") for a in manifest["archives"])
    assert manifest["hosts"][host.name]["release"] and manifest["hosts"][host.name]["docker"]
    assert "inv backup.restore" in (snapshot.path / "BACKUP_INFO.md").read_text()
    # No staging copy was left on the host, and the Prometheus snapshot was cleaned up.
    assert host.sudo(f"ls {mountpoint(host, 'prometheus-data')}/snapshots 2>/dev/null | wc -l").stdout.strip() == "0"

    verified = opskit(lab.root, "backup.verify", "--env", ENV)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "6/6 archives ok" in verified.stdout and verified.stdout.count("test extract") == 6

    # Destroy: the volumes' services and the volumes themselves.
    destroy(host, ["redis", "alertmanager", "prometheus"])

    # Bad input changes nothing: no --yes and no terminal.
    refused = opskit(lab.root, "backup.restore", snapshot.id, "--env", ENV, "--host", host.name)
    assert refused.returncode == 1 and "without confirmation" in refused.stderr
    assert host.run("docker volume inspect demo_redis-data", check=False).exit_code != 0

    restored = opskit(lab.root, "backup.restore", snapshot.id, "--env", ENV, "--host", host.name, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restore: 3 volumes" in restored.stdout and "health gate" in restored.stdout
    assert healthy(host) == []
    assert redis(host, "GET", "opskit:greeting") == "hello backup"
    assert redis(host, "LRANGE", "opskit:list", "0", "-1").split() == ["a", "b", "c"]
    assert tree_digest(host, "alertmanager-data") == before_files
    samples = host.run(f"docker exec demo-prometheus-1 {query}").stdout
    assert "=>" in samples, "Prometheus lost the samples taken before the backup"
    # The restored volume is still the stack's: compose owns it.
    labels = host.run("docker volume inspect -f '{{json .Labels}}' demo_redis-data").stdout
    assert '"com.docker.compose.project":"demo"' in labels
    host.sudo(f"rm -rf {am}/opskit-test")
    redis(host, "DEL", "opskit:greeting", "opskit:list")


def test_verify_names_a_corrupted_archive(bk: tuple[Lab, Path, Host]) -> None:
    lab, backups, _ = bk
    good = [s for s in list_snapshots(backups) if s.complete]
    if not good:
        assert opskit(lab.root, "backup.all", "--env", ENV).returncode == 0
        good = [s for s in list_snapshots(backups) if s.complete]
    copy = backups / "20990101T000000Z"
    shutil.copytree(good[-1].path, copy)
    try:
        target = next(copy.rglob("redis-data.tar.zst"))
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        result = opskit(lab.root, "backup.verify", "--snapshot", "20990101T000000Z", "--env", ENV, "--no-extract")
        assert result.returncode == 1
        assert f"{target.parent.name}/redis-data.tar.zst: checksum mismatch" in result.stderr
        assert "5/6 archives" in result.stdout
    finally:
        shutil.rmtree(copy)


def drill_leftovers(host: Host, project: str) -> str:
    """Containers, volumes and networks of a drill's copy still on the host, and its directory."""
    label = f"label=com.docker.compose.project={project}"
    return host.sudo(
        f"docker ps -aq --filter {label}; docker volume ls -q --filter {label}; "
        f"docker network ls -q --filter {label}; ls -d /opt/demo/drills/{project} 2>/dev/null; true"
    ).stdout.strip()


def test_drill_restores_a_throwaway_copy_checks_every_volume_and_removes_it(bk: tuple[Lab, Path, Host]) -> None:
    lab, backups, host = bk
    good = [s for s in list_snapshots(backups) if s.complete]
    if not good:
        assert opskit(lab.root, "backup.all", "--env", ENV).returncode == 0
        good = [s for s in list_snapshots(backups) if s.complete]
    snapshot = good[-1]
    stack = host.run("docker ps -q --filter label=com.docker.compose.project=demo | sort").stdout
    done = opskit(lab.root, "backup.drill", "--env", ENV, "--snapshot", snapshot.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"drill: snapshot {snapshot.id} on {host.name} ok, 3 volumes usable" in done.stdout, done.stdout
    record = json.loads((snapshot.path / "drill.json").read_text())
    assert record["ok"] and record["host"] == host.name and record["left"] == ""
    checks = {volume["volume"]: (volume["recipe"], volume["summary"]) for volume in record["volumes"]}
    assert set(checks) == {"alertmanager-data", "prometheus-data", "redis-data"}, checks
    assert checks["redis-data"][0] == "redis" and checks["redis-data"][1].startswith("PING PONG, ")
    assert int(checks["redis-data"][1].split(", ")[1].split()[0]) >= 1  # the archived keys came back
    assert checks["prometheus-data"][0] == "prometheus" and checks["prometheus-data"][1].startswith("ready, ")
    assert checks["alertmanager-data"] == ("files", checks["alertmanager-data"][1])
    # Nothing of the copy is left, and the stack was never touched (same containers, all healthy).
    assert drill_leftovers(host, record["project"]) == ""
    assert host.run("docker ps -q --filter label=com.docker.compose.project=demo | sort").stdout == stack
    assert healthy(host) == []


def test_drill_of_a_corrupted_archive_fails_naming_it(bk: tuple[Lab, Path, Host]) -> None:
    lab, backups, host = bk
    good = [s for s in list_snapshots(backups) if s.complete]
    assert good, "needs the snapshot of the first test"
    copy = backups / "20990101T000001Z"
    shutil.copytree(good[-1].path, copy)
    try:
        (copy / "drill.json").unlink(missing_ok=True)
        (archive,) = [r.archive for r in good[-1].archives if r.host == host.name and r.volume == "redis-data"]
        data = bytearray((copy / archive).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / archive).write_bytes(bytes(data))
        result = opskit(lab.root, "backup.drill", "--env", ENV, "--snapshot", "20990101T000001Z")
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"redis-data: archive {archive} does not match its sha256 (corrupted)" in result.stderr
        assert "Traceback" not in result.stderr
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
        record = json.loads((copy / "drill.json").read_text())
        assert not record["ok"] and "redis-data" in record["error"]
        assert drill_leftovers(host, record["project"]) == ""
    finally:
        shutil.rmtree(copy)


def test_backup_holds_the_deploy_lock_and_waits_for_it_only_when_asked(bk: tuple[Lab, Path, Host]) -> None:
    """A backup reads the volumes under the deploy lock: never while a deploy, rollback or restore
    (or maintenance, here) holds it; the cron entry waits, a person gets the holder at once."""
    lab, backups, _ = bk
    before = sorted(path.name for path in backups.iterdir())
    locked = opskit(lab.root, "lock.acquire", "--env", ENV, "--reason", "restore drill")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    try:
        refused = opskit(lab.root, "backup.all", "--env", ENV, "--volume", "redis-data")
        assert refused.returncode == 1
        assert "locked by" in refused.stderr and "restore drill" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert sorted(path.name for path in backups.iterdir()) == before  # no snapshot, no .partial
        environ = {**os.environ, "OPS_ROOT": str(lab.root)}
        waiting = subprocess.Popen(
            [sys.executable, "-c", "from ops.cli import main; main()", "backup.all", "--env", ENV,
             "--volume", "redis-data", "--lock-wait", "60"],
            cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(4)
        assert waiting.poll() is None  # still waiting for the lock
    finally:
        released = opskit(lab.root, "lock.release", "--env", ENV)
    assert released.returncode == 0, released.stdout + released.stderr
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, out + err
    (new,) = [s for s in list_snapshots(backups) if s.path.name not in before]
    assert new.complete and [a.volume for a in new.archives] == ["redis-data"] * len(lab.env.hosts)
    status = json.loads(opskit(lab.root, "lock.status", "--env", ENV, "--json").stdout)
    assert all(not row["locked"] for row in status.values())  # and it let go of the lock


def test_prune_keeps_exactly_what_the_policy_says(bk: tuple[Lab, Path, Host], tmp_path: Path) -> None:
    lab, backups, _ = bk
    good = [s for s in list_snapshots(backups) if s.complete]
    assert good, "needs the snapshot of the first test"
    store = tmp_path / "store"
    # Ten daily snapshots, two on the last day: same archives, other times.
    days = [f"202611{day:02d}T0{hour}0000Z" for day in range(1, 11) for hour in ((1, 2) if day == 10 else (1,))]
    for snapshot_id in days:
        shutil.copytree(good[-1].path, store / snapshot_id)
        manifest_path = store / snapshot_id / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["created"] = f"2026-11-{snapshot_id[6:8]}T0{snapshot_id[10]}:00:00+00:00"
        manifest_path.write_text(json.dumps(manifest))
    write_env(lab.root, "itestbkp", env_text(lab, store))
    try:
        result = opskit(lab.root, "backup.prune", "--env", "itestbkp", "--keep-last", "1", "--keep-daily", "3",
                        "--keep-weekly", "0", "--keep-monthly", "0")  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        left = sorted(path.name for path in store.iterdir())
        assert left == ["20261108T010000Z", "20261109T010000Z", "20261110T020000Z"]
        assert "removed 8 snapshots" in result.stdout
    finally:
        (lab.root / "env" / "itestbkp.env").unlink(missing_ok=True)


def test_interrupted_backup_and_full_disk_leave_no_complete_snapshot(
    bk: tuple[Lab, Path, Host], tmp_path: Path
) -> None:
    lab, _, host = bk
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    am = mountpoint(host, "alertmanager-data")
    write_env(lab.root, "itestbkd", env_text(lab, disk))
    try:
        first = opskit(lab.root, "backup.all", "--env", "itestbkd")
        assert first.returncode == 0, first.stdout + first.stderr
        before = sorted(path.name for path in disk.iterdir())
        # 40 MB of random data does not compress and does not fit.
        host.sudo(f"head -c 40000000 /dev/urandom > {am}/opskit-big.bin")
        full = opskit(lab.root, "backup.all", "--env", "itestbkd")
        assert full.returncode == 1
        assert "target disk full while writing alertmanager-data.tar.zst" in full.stderr
        assert "partial archive was removed" in full.stderr and "Traceback" not in full.stderr
        assert sorted(path.name for path in disk.iterdir()) == before  # nothing partial left
        intact = opskit(lab.root, "backup.verify", "--env", "itestbkd", "--no-extract")
        assert intact.returncode == 0, intact.stdout + intact.stderr

        # Killed mid-stream: the snapshot stays .partial and is never listed complete.
        environ = {**os.environ, "OPS_ROOT": str(lab.root)}
        write_env(lab.root, "itestbkd", env_text(lab, tmp_path / "kill"))
        process = subprocess.Popen(
            [sys.executable, "-c", "from ops.cli import main; main()", "backup.all", "--env", "itestbkd"],
            cwd=REPO,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        archive = None
        while time.monotonic() < deadline and archive is None:
            archive = next((tmp_path / "kill").glob("*.partial/*/alertmanager-data.tar.zst"), None)
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert archive is not None, "the backup never started writing"
        snapshots = list_snapshots(tmp_path / "kill")
        assert snapshots and not any(s.complete for s in snapshots)
        listing = opskit(lab.root, "backup.list", "--env", "itestbkd")
        assert "incomplete" in listing.stdout and "0 complete, 1 incomplete" in listing.stdout
        missing = opskit(lab.root, "backup.verify", "--env", "itestbkd")
        assert missing.returncode == 1 and "no complete snapshot" in missing.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=False)
        host.sudo(f"rm -f {am}/opskit-big.bin")
        host.sudo(f"rm -rf {mountpoint(host, 'prometheus-data')}/snapshots", check=False)
        (lab.root / "env" / "itestbkd.env").unlink(missing_ok=True)
    assert healthy(host) == []


def test_encrypted_backup_is_ciphertext_here_and_restores(bk: tuple[Lab, Path, Host], tmp_path: Path) -> None:
    lab, _, host = bk
    if shutil.which("age-keygen") is None:
        pytest.fail("age is not installed: ./scripts/bootstrap installs it")
    identity = tmp_path / "key.txt"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    public = keygen.stderr.split("Public key:")[1].strip()
    store = tmp_path / "enc"
    text = env_text(lab, store) + f"BACKUP_AGE_RECIPIENT={public}\nBACKUP_AGE_IDENTITY={identity}\n"
    write_env(lab.root, "itestbke", text)
    am = mountpoint(host, "alertmanager-data")
    marker = "opskit-plaintext-marker-" + "x" * 40
    host.sudo(f"printf '%s\\n' {marker} > {am}/opskit-secret.txt")
    try:
        done = opskit(lab.root, "backup.all", "--env", "itestbke", "--host", host.name, "--volume", "alertmanager-data")
        assert done.returncode == 0, done.stdout + done.stderr
        (archive,) = store.glob("*/*/alertmanager-data.tar.zst.age")
        data = archive.read_bytes()
        assert data.startswith(b"age-encryption.org/v1") and marker.encode() not in data
        verified = opskit(lab.root, "backup.verify", "--env", "itestbke")
        assert verified.returncode == 0 and "1/1 archives ok" in verified.stdout, verified.stdout + verified.stderr
        assert "test extract" in verified.stdout
        host.sudo(f"rm {am}/opskit-secret.txt")
        restored = opskit(lab.root, "backup.restore", "latest", "--env", "itestbke", "--yes")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert host.sudo(f"cat {am}/opskit-secret.txt").stdout.strip() == marker
    finally:
        host.sudo(f"rm -f {am}/opskit-secret.txt")
        (lab.root / "env" / "itestbke.env").unlink(missing_ok=True)
    assert healthy(host) == []


def test_offsite_copy_is_checked_then_final(bk: tuple[Lab, Path, Host]) -> None:
    lab, backups, _ = bk
    good = [s for s in list_snapshots(backups) if s.complete]
    assert good, "needs the snapshot of the first test"
    far = lab.env.hosts[1]
    base = "/tmp/opskit-offsite"
    write_env(lab.root, "itestbko", env_text(lab, backups) + f"BACKUP_OFFSITE=deploy@{far.address}:{far.port}:{base}\n")
    with Fleet.connect(lab.env, only=[far.name]) as fleet:
        other = fleet.hosts[0]
        other.run(f"rm -rf {base}")
        try:
            copied = opskit(lab.root, "backup.offsite", "--env", "itestbko")
            assert copied.returncode == 0, copied.stdout + copied.stderr
            assert f"offsite: snapshot {good[-1].id} copied" in copied.stdout
            listing = other.run(f"cd {base} && ls && cd {good[-1].id} && sha256sum */*.tar.zst").stdout
            assert good[-1].id in listing.split() and ".partial" not in listing
            for record in good[-1].archives:
                assert f"{record.sha256}  {record.archive}" in listing
            again = opskit(lab.root, "backup.offsite", "--env", "itestbko")
            assert again.returncode == 0 and "already there" in again.stdout
        finally:
            other.run(f"rm -rf {base}")
            (lab.root / "env" / "itestbko.env").unlink(missing_ok=True)


HOST_DIR = "/var/backups/opskit-itest"


def test_host_target_backs_up_verifies_and_restores_on_the_host(bk: tuple[Lab, Path, Host], tmp_path: Path) -> None:
    """BACKUP_TARGET=host: archives are written and hashed on each host, never transferred;
    verify, restore and prune read them there; a full disk there is a clear error."""
    lab, _, host = bk
    catalogue = tmp_path / "catalogue"
    write_env(lab.root, "itestbkh", env_text(lab, catalogue) + f"BACKUP_TARGET=host\nBACKUP_HOST_DIR={HOST_DIR}\n")
    am = mountpoint(host, "alertmanager-data")
    volumes = ("--volume", "alertmanager-data", "--volume", "redis-data")
    try:
        redis(host, "SET", "opskit:host-target", "'kept on the host'")
        host.sudo(f"mkdir -p {am}/opskit-host && head -c 200000 /dev/urandom > {am}/opskit-host/blob.bin")
        before = tree_digest(host, "alertmanager-data")

        done = opskit(lab.root, "backup.all", "--env", "itestbkh", *volumes)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{HOST_DIR}/" in done.stdout and "on each host" in done.stdout
        (snapshot,) = [s for s in list_snapshots(catalogue) if s.complete]
        assert snapshot.host_dir == HOST_DIR and len(snapshot.archives) == 4
        # Nothing came to this machine but the catalogue (manifest and BACKUP_INFO.md).
        assert sorted(str(p.relative_to(snapshot.path)) for p in snapshot.path.rglob("*") if p.is_file()) == [
            "BACKUP_INFO.md",
            "manifest.json",
        ]
        # Each host holds its own complete snapshot directory: archives, manifest, restore steps.
        on_host = f"{HOST_DIR}/{snapshot.id}"
        listing = host.sudo(f"cd {on_host} && find . -type f | sort && ls {HOST_DIR}").stdout
        assert "./manifest.json" in listing and "./BACKUP_INFO.md" in listing and ".partial" not in listing
        mine = [r for r in snapshot.archives if r.host == host.name]
        for record in mine:
            assert f"./{record.archive}" in listing
            assert host.sudo(f"sha256sum {on_host}/{record.archive}").stdout.split()[0] == record.sha256

        verified = opskit(lab.root, "backup.verify", "--env", "itestbkh")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "4/4 archives ok" in verified.stdout and verified.stdout.count("test extract") == 4

        # Destroy the data, restore from the archives on the host: byte-identical, healthy.
        destroy(host, ["redis", "alertmanager"])
        restored = opskit(lab.root, "backup.restore", snapshot.id, "--env", "itestbkh", "--host", host.name, "--yes")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "restore: 2 volumes" in restored.stdout
        assert healthy(host) == []
        assert redis(host, "GET", "opskit:host-target") == "kept on the host"
        assert tree_digest(host, "alertmanager-data") == before

        # A corrupted archive on the host is found by verify (exit 1, named), and not restored.
        redis_archive = next(r.archive for r in mine if r.volume == "redis-data")
        host.sudo(f"printf 'X' | dd of={on_host}/{redis_archive} bs=1 seek=20 conv=notrunc status=none")
        bad = opskit(lab.root, "backup.verify", "--env", "itestbkh", "--no-extract")
        assert bad.returncode == 1
        assert f"{redis_archive}: checksum mismatch" in bad.stderr and "3/4 archives" in bad.stdout
        refused = opskit(lab.root, "backup.restore", snapshot.id, "--env", "itestbkh", "--host", host.name,
                         "--volume", "redis-data", "--yes")  # fmt: skip
        assert refused.returncode == 1 and "does not match its sha256" in refused.stdout + refused.stderr
        assert healthy(host) == []

        # A full disk on the host: clear error, partial archive gone, the earlier snapshot intact.
        small = f"{HOST_DIR}-small"
        mounted = host.sudo(f"mkdir -p {small} && mount -t tmpfs -o size=2m tmpfs {small}", check=False)
        if mounted.ok:
            try:
                write_env(lab.root, "itestbkh", env_text(lab, catalogue) + f"BACKUP_HOST_DIR={small}\n")
                host.sudo(f"head -c 8000000 /dev/urandom > {am}/opskit-big.bin")
                full = opskit(lab.root, "backup.all", "--env", "itestbkh", "--target", "host", "--host", host.name,
                              *volumes)  # fmt: skip
                assert full.returncode == 1
                assert "target disk full while writing alertmanager-data.tar.zst" in full.stderr
                assert "partial archive was removed" in full.stderr and "Traceback" not in full.stderr
                assert host.sudo(f"ls -A {small}").stdout.strip() == ""
                assert [s.id for s in list_snapshots(catalogue)] == [snapshot.id]
            finally:
                host.sudo(f"umount {small}; rmdir {small}; rm -f {am}/opskit-big.bin", check=False)

        # Killed once its first archive is on the host (os._exit: no cleanup runs, as with SIGKILL):
        # the host keeps `<id>.partial`, the catalogue here an incomplete snapshot that says where.
        write_env(lab.root, "itestbkh", env_text(lab, catalogue) + f"BACKUP_TARGET=host\nBACKUP_HOST_DIR={HOST_DIR}\n")
        killed_run = (
            "import os, sys\n"
            "from ops import backup\n"
            "write = backup.HostStore.write\n"
            "def write_then_die(self, *args, **kwargs):\n"
            "    write(self, *args, **kwargs)\n"
            "    os._exit(137)\n"
            "backup.HostStore.write = write_then_die\n"
            "from ops.cli import main\n"
            "sys.argv = ['opskit', 'backup.all', '--env', 'itestbkh', '--host', sys.argv[1]]\n"
            "main()\n"
        )
        environ = {**os.environ, "OPS_ROOT": str(lab.root)}
        died = subprocess.run([sys.executable, "-c", killed_run, host.name], cwd=REPO, env=environ, capture_output=True)
        assert died.returncode == 137, died.stderr
        (leftover,) = [s for s in list_snapshots(catalogue) if not s.complete]
        assert leftover.host_dir == HOST_DIR and list(leftover.hosts) == [host.name]
        assert f"{leftover.id}.partial" in host.sudo(f"ls {HOST_DIR}").stdout.split()
        # Fresh, it may still be running: prune keeps it. Stale (older than 6 h): prune removes it,
        # here and on the host.
        fresh = opskit(lab.root, "backup.prune", "--env", "itestbkh", "--dry-run")
        assert fresh.returncode == 0 and f"{leftover.id}.partial (incomplete, may still be running)" in fresh.stdout
        hours_ago = time.time() - 7 * 3600
        os.utime(leftover.path, (hours_ago, hours_ago))

        # prune removes a host-target snapshot on the hosts too (a newer one keeps every volume).
        time.sleep(1)
        again = opskit(lab.root, "backup.all", "--env", "itestbkh", *volumes)
        assert again.returncode == 0, again.stdout + again.stderr
        pruned = opskit(lab.root, "backup.prune", "--env", "itestbkh", "--keep-last", "1", "--keep-daily", "0",
                        "--keep-weekly", "0", "--keep-monthly", "0")  # fmt: skip
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "and 1 incomplete" in pruned.stdout
        (newest,) = list_snapshots(catalogue)
        assert newest.id not in (snapshot.id, leftover.id)
        assert host.sudo(f"ls {HOST_DIR}").stdout.split() == [newest.id]
    finally:
        host.sudo(f"rm -rf {HOST_DIR} {am}/opskit-host", check=False)
        redis(host, "DEL", "opskit:host-target")
        (lab.root / "env" / "itestbkh.env").unlink(missing_ok=True)
        with Fleet.connect(lab.env) as fleet:
            for other in fleet.hosts:
                other.sudo(f"rm -rf {HOST_DIR}", check=False)


def test_s3_offsite_copy_prune_fetch_on_a_new_machine_and_restore(
    bk: tuple[Lab, Path, Host], s3: S3Server, tmp_path: Path
) -> None:
    """To a real S3-compatible server (moto's) through boto3: a copy cut off halfway never looks
    complete; copies are pruned there by the policy; an empty BACKUP_DIR gets a snapshot back, checked,
    and it restores byte-identical."""
    lab, _, host = bk
    bucket = s3.make_bucket("itest-offsite")
    here, new_machine = tmp_path / "here", tmp_path / "new-machine"
    offsite = f"BACKUP_OFFSITE=s3://{bucket}/lab\nS3_ENDPOINT={s3.endpoint}\n"
    relay = CuttingRelay(int(s3.endpoint.rsplit(":", 1)[1]), cut_after=400_000)
    envs = {
        "itestbks": env_text(lab, here) + offsite,
        "itestbkc": env_text(lab, here) + offsite.replace(s3.endpoint, relay.endpoint),
        "itestbkf": env_text(lab, new_machine) + offsite,
    }
    for name, text in envs.items():
        write_env(lab.root, name, text)
        secrets = lab.root / "env" / f"{name}.secrets.env"
        secrets.write_text(f"S3_ACCESS_KEY_ID={ACCESS_ID}\nS3_SECRET_ACCESS_KEY={SIGNING_WORD}\n")
        secrets.chmod(0o600)
    am = mountpoint(host, "alertmanager-data")
    one = ("--host", host.name, "--volume", "alertmanager-data")
    try:
        host.sudo(f"mkdir -p {am}/opskit-s3 && head -c 1000000 /dev/urandom > {am}/opskit-s3/blob.bin")
        before = tree_digest(host, "alertmanager-data")
        done = opskit(lab.root, "backup.all", "--env", "itestbks", *one)
        assert done.returncode == 0, done.stdout + done.stderr
        (snapshot,) = [s for s in list_snapshots(here) if s.complete]
        # The same archives a week earlier: what the policy will prune offsite.
        older = "20261101T031700Z"
        shutil.copytree(snapshot.path, here / older)
        manifest = json.loads((here / older / "manifest.json").read_text())
        (here / older / "manifest.json").write_text(json.dumps({**manifest, "created": "2026-11-01T03:17:00+00:00"}))

        cut = opskit(lab.root, "backup.offsite", "--env", "itestbkc")
        relay.close()
        assert cut.returncode == 1 and "cannot reach the S3 store" in cut.stderr, cut.stdout + cut.stderr
        listed = opskit(lab.root, "backup.list", "--env", "itestbks", "--offsite")
        assert listed.returncode == 0 and "0 complete" in listed.stdout, listed.stdout + listed.stderr

        for snapshot_id in (older, snapshot.id):
            copied = opskit(lab.root, "backup.offsite", "--env", "itestbks", "--snapshot", snapshot_id)
            assert copied.returncode == 0 and f"{snapshot_id} copied" in copied.stdout, copied.stdout + copied.stderr
        pruned = opskit(lab.root, "backup.prune", "--env", "itestbks", "--keep-last", "1", "--keep-daily", "0",
                        "--keep-weekly", "0", "--keep-monthly", "0")  # fmt: skip
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "prune offsite: kept 1, removed 1 snapshots" in pruned.stdout
        offsite = json.loads(opskit(lab.root, "backup.list", "--env", "itestbks", "--offsite", "--json").stdout)
        assert [(item["id"], item["complete"]) for item in offsite] == [(snapshot.id, True)]

        # A new machine with only the bucket: fetch, then restore from it after the data is lost.
        fetched = opskit(lab.root, "backup.fetch", "--env", "itestbkf")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert f"fetch: snapshot {snapshot.id} complete" in fetched.stdout and "checksums match" in fetched.stdout
        host.sudo(f"rm -rf {am}/opskit-s3")
        restored = opskit(lab.root, "backup.restore", snapshot.id, "--env", "itestbkf", *one, "--yes")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert tree_digest(host, "alertmanager-data") == before
    finally:
        relay.close()
        host.sudo(f"rm -rf {am}/opskit-s3")
        for name in envs:
            (lab.root / "env" / f"{name}.env").unlink(missing_ok=True)
            (lab.root / "env" / f"{name}.secrets.env").unlink(missing_ok=True)
    assert healthy(host) == []
