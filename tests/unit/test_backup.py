"""Backups without hosts: plans from canned facts, snapshot store, retention policy, task input checks."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.backup import (
    ArchiveRecord,
    ContainerFact,
    HostStore,
    LocalStore,
    RetentionPolicy,
    Snapshot,
    VolumeFact,
    find_snapshot,
    list_snapshots,
    parse_containers,
    parse_volumes,
    plan_volume,
    read_volume_facts,
    retention,
    select_volumes,
    tar_command,
)
from ops.config import HostSpec
from ops.errors import BackupError
from ops.transport import Host
from tests.cli import opskit as run_cli
from tests.fakes import FakeRunner

REPO = Path(__file__).resolve().parents[2]
REDIS_VOLUME = VolumeFact("demo_redis-data", "redis-data", "/var/lib/docker/volumes/demo_redis-data/_data")


def container(
    service: str, image: str, volume: str = "demo_redis-data", running: bool = True, **labels: str
) -> ContainerFact:
    return ContainerFact(
        id="abc", name=f"demo-{service}-1", service=service, image=image, running=running,
        labels={k.replace("_", "."): v for k, v in labels.items()}, mounts={volume: "/data"},
    )  # fmt: skip


def test_facts_are_read_from_docker_inspect_output() -> None:
    volumes = parse_volumes(
        json.dumps(
            [
                {
                    "Name": "demo_redis-data",
                    "Mountpoint": "/v/_data",
                    "Labels": {"com.docker.compose.volume": "redis-data", "com.docker.compose.project": "demo"},
                }
            ]
        )
    )
    assert volumes == [VolumeFact("demo_redis-data", "redis-data", "/v/_data")]
    containers = parse_containers(
        json.dumps(
            [
                {
                    "Id": "0123456789abcdef",
                    "Name": "/demo-redis-1",
                    "Config": {
                        "Image": "opskit-pin/demo-redis:1a2b",
                        "Labels": {"com.docker.compose.service": "redis"},
                    },
                    "State": {"Running": True},
                    "Mounts": [
                        {"Type": "volume", "Name": "demo_redis-data", "Destination": "/data"},
                        {"Type": "bind", "Source": "/etc/x", "Destination": "/x"},
                    ],
                }
            ]
        )
    )
    assert containers[0].service == "redis" and containers[0].mounts == {"demo_redis-data": "/data"}
    assert containers[0].running and containers[0].name == "demo-redis-1"


def test_plan_of_a_redis_volume_uses_bgsave_on_the_running_container() -> None:
    plan = plan_volume(REDIS_VOLUME, [container("redis", "opskit-pin/demo-redis:1")])
    assert (plan.recipe, plan.recipe_container, plan.services) == ("redis", "demo-redis-1", ("redis",))
    assert plan.archive_name == "redis-data.tar.zst" and not plan.stop and not plan.pre


def test_plan_falls_back_to_files_when_the_service_is_not_running() -> None:
    plan = plan_volume(REDIS_VOLUME, [container("redis", "redis:7", running=False)])
    assert plan.recipe == "files" and plan.recipe_container == ""


def test_plan_takes_hooks_and_stop_from_labels() -> None:
    app = container(
        "app",
        "shop/app:3",
        opskit_backup_pre="app flush",
        opskit_backup_post="app resume",
        opskit_backup_stop="true",
    )
    other = ContainerFact(
        "x", "demo-other-1", "other", "x:1", True, {"opskit.backup.stop": "true"}, {"elsewhere": "/d"}
    )
    plan = plan_volume(REDIS_VOLUME, [app, other], compression="gzip")
    assert plan.pre == (("demo-app-1", "app flush"),)
    assert plan.post == (("demo-app-1", "app resume"),)
    assert plan.stop == ("demo-app-1",)  # not the container that does not use the volume
    assert plan.archive_name == "redis-data.tar.gz"


def test_a_stopped_container_is_archived_as_files_even_for_a_database() -> None:
    db = container("db", "postgres:16", opskit_backup_stop="true")
    plan = plan_volume(REDIS_VOLUME, [db])
    assert plan.recipe == "files" and plan.stop == ("demo-db-1",)


def test_tar_command_streams_to_stdout_with_sudo_unless_root() -> None:
    as_deploy = tar_command("/v/_data", "zstd", "deploy")
    assert as_deploy.startswith("sudo -n bash -c ") and "tar -C /v/_data --numeric-owner -cf - ." in as_deploy
    assert "zstd -q -c -T0 -1" in as_deploy and "pipefail" in as_deploy  # the default level is 1 (speed)
    assert "zstd -q -c -T0 -6" in tar_command("/v/_data", "zstd", "deploy", 6)
    assert not tar_command("/v/_data", "gzip", "root").startswith("sudo")
    assert "gzip -c" in tar_command("/v/_data", "gzip", "root")


def test_tar_command_runs_in_a_real_shell(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("hello")
    command = tar_command(str(tmp_path / "data"), "gzip", "root").replace("tar -C", "tar --owner=0 -C")
    done = subprocess.run(["bash", "-c", f"{command} | gzip -dc | tar -tf -"], capture_output=True, text=True)
    assert done.returncode == 0 and "./a.txt" in done.stdout.split()
    failing = tar_command(str(tmp_path / "missing"), "gzip", "root")
    assert subprocess.run(["bash", "-c", failing], capture_output=True).returncode != 0  # pipefail


def test_volume_selection_by_include_and_exclude() -> None:
    volumes = [VolumeFact(f"demo_{k}", k, "/m") for k in ("redis-data", "prometheus-data", "alertmanager-data")]
    assert [v.key for v in select_volumes(volumes, [], [])] == ["alertmanager-data", "prometheus-data", "redis-data"]
    assert [v.key for v in select_volumes(volumes, ["redis-data"], [])] == ["redis-data"]
    assert [v.key for v in select_volumes(volumes, [], ["demo_alertmanager-data"])] == [
        "prometheus-data",
        "redis-data",
    ]


# --- the snapshot store ---


def write_snapshot(directory: Path, snapshot_id: str, volumes: list[tuple[str, str]], complete: bool = True) -> Path:
    path = directory / (snapshot_id if complete else f"{snapshot_id}.partial")
    path.mkdir(parents=True)
    created = datetime.strptime(snapshot_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()
    archives = [
        ArchiveRecord(
            host, volume, f"demo_{volume}", ("svc",), "files", f"{host}/{volume}.tar.zst", "zstd", 1, "x", 0.1
        )
        for host, volume in volumes
    ]
    manifest = {"complete": True, "created": created, "archives": [a.as_dict() for a in archives], "hosts": {}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_partial_snapshots_are_never_complete(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "20261101T000000Z", [("h1", "redis-data")])
    write_snapshot(tmp_path, "20261102T000000Z", [("h1", "redis-data")], complete=False)
    (tmp_path / "20261103T000000Z").mkdir()  # no manifest: interrupted before the end
    found = {s.id: s.complete for s in list_snapshots(tmp_path)}
    assert found == {"20261101T000000Z": True, "20261102T000000Z": False, "20261103T000000Z": False}
    assert find_snapshot(tmp_path, None).id == "20261101T000000Z"
    assert find_snapshot(tmp_path, "latest").id == "20261101T000000Z"
    assert find_snapshot(tmp_path, "2026110").id == "20261101T000000Z"
    with pytest.raises(BackupError, match="no complete snapshot '20261102T000000Z'"):
        find_snapshot(tmp_path, "20261102T000000Z")


def test_unknown_snapshot_and_empty_store(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no complete snapshot in"):
        find_snapshot(tmp_path, None)
    write_snapshot(tmp_path, "20261101T000000Z", [("h1", "a")])
    with pytest.raises(BackupError, match="no complete snapshot 'nope'") as caught:
        find_snapshot(tmp_path, "nope")
    assert "20261101T000000Z" in caught.value.one_line()


# --- retention (restic forget's rules, plus: never the last copy of a volume) ---


def snapshots_at(times: list[datetime], volumes: list[tuple[str, str]] | None = None) -> list[Snapshot]:
    volumes = volumes or [("h1", "redis-data")]
    out = []
    for moment in times:
        archives = [ArchiveRecord(h, v, v, (), "files", "a", "zstd", 1, "x", 0) for h, v in volumes]
        out.append(Snapshot(moment.strftime("%Y%m%dT%H%M%SZ"), Path("/x"), True, moment.isoformat(), archives=archives))
    return out


START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # a Thursday


def kept(snapshots: list[Snapshot], policy: RetentionPolicy) -> list[str]:
    return sorted(retention(snapshots, policy))


def test_keep_last_keeps_the_newest_n() -> None:
    snaps = snapshots_at([START + timedelta(hours=h) for h in range(10)])
    assert kept(snaps, RetentionPolicy(last=3)) == [s.id for s in snaps[-3:]]


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days_with_snapshots() -> None:
    # 4 snapshots a day for 10 days, but day 8 has none.
    times = [START + timedelta(days=d, hours=h) for d in range(10) if d != 8 for h in (0, 3, 6, 9)]
    snaps = snapshots_at(times)
    result = kept(snaps, RetentionPolicy(daily=3))
    expected = [(START + timedelta(days=d, hours=9)).strftime("%Y%m%dT%H%M%SZ") for d in (6, 7, 9)]
    assert result == sorted(expected)


def test_keep_weekly_and_monthly_use_iso_weeks_and_calendar_months() -> None:
    times = [START + timedelta(days=d) for d in range(0, 120, 2)]
    snaps = snapshots_at(times)
    weekly = retention(snaps, RetentionPolicy(weekly=2))
    assert len(weekly) == 2
    newest = max(times)
    week_of = {s.id: s.created_at.isocalendar()[:2] for s in snaps}
    assert {week_of[i] for i in weekly} == {newest.isocalendar()[:2], (newest - timedelta(days=7)).isocalendar()[:2]}
    monthly = retention(snaps, RetentionPolicy(monthly=3))
    months = sorted(s.created_at.strftime("%Y-%m") for s in snaps if s.id in monthly)
    assert months == ["2026-02", "2026-03", "2026-04"]
    # Each kept one is the newest of its month.
    for snapshot in snaps:
        if snapshot.id in monthly:
            same_month = [s for s in snaps if s.created_at.strftime("%Y-%m") == snapshot.created_at.strftime("%Y-%m")]
            assert snapshot.created_at == max(s.created_at for s in same_month)


def test_rules_combine_as_a_union_with_reasons() -> None:
    times = [START + timedelta(days=d) for d in range(40)]
    snaps = snapshots_at(times)
    keep = retention(snaps, RetentionPolicy(last=2, daily=5, weekly=3, monthly=2))
    newest = snaps[-1].id
    assert set(keep[newest]) == {"last", "daily", "weekly", "monthly"}
    daily = {i for i, reasons in keep.items() if "daily" in reasons}
    assert daily == {s.id for s in snaps[-5:]}
    # Jan's newest (Jan 31) is kept as the monthly of January.
    assert "monthly" in keep[(START + timedelta(days=30)).strftime("%Y%m%dT%H%M%SZ")]
    assert len(keep) == len(daily | {i for i, r in keep.items() if r != ["daily"]})


def test_incomplete_snapshots_count_for_nothing() -> None:
    snaps = snapshots_at([START + timedelta(hours=h) for h in range(3)])
    snaps[-1].complete = False
    assert kept(snaps, RetentionPolicy(last=1)) == [snaps[1].id]


def test_the_last_copy_of_a_volume_is_never_dropped() -> None:
    old = snapshots_at([START], [("h1", "redis-data"), ("h1", "old-volume")])
    new = snapshots_at([START + timedelta(days=d) for d in range(1, 4)], [("h1", "redis-data")])
    keep = retention(old + new, RetentionPolicy(last=1))
    assert sorted(keep) == sorted([old[0].id, new[-1].id])
    assert keep[old[0].id] == ["last copy of old-volume on h1"]
    # The same volume on another host is another copy.
    other = snapshots_at([START], [("h2", "redis-data")])
    keep = retention(other + new, RetentionPolicy(last=1))
    assert other[0].id in keep


def test_prune_refuses_an_empty_policy(tmp_path: Path) -> None:
    from ops.backup import prune
    from ops.config import load_environment
    from ops.console import RecordingReporter

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\nBACKUP_KEEP_LAST=0\nBACKUP_KEEP_DAILY=0\n")
    env = load_environment("t", tmp_path, {})
    with pytest.raises(BackupError, match="no retention policy"):
        prune(env, RecordingReporter(), RetentionPolicy())


def test_prune_removes_what_the_policy_drops_and_stale_partials(tmp_path: Path) -> None:
    from ops.backup import prune
    from ops.config import load_environment
    from ops.console import RecordingReporter

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\n")
    env = load_environment("t", tmp_path, {})
    store = tmp_path / "backups" / "t"
    ids = [f"202611{day:02d}T000000Z" for day in range(1, 6)]
    for snapshot_id in ids:
        write_snapshot(store, snapshot_id, [("h1", "redis-data")])
    stale = write_snapshot(store, "20261001T000000Z", [("h1", "redis-data")], complete=False)
    os.utime(stale, (0, 0))
    fresh = write_snapshot(store, "20261106T000000Z", [("h1", "redis-data")], complete=False)
    dry = prune(env, RecordingReporter(), RetentionPolicy(last=2), dry_run=True)
    assert dry.removed == ids[:3] and len(list(store.iterdir())) == 7
    result = prune(env, RecordingReporter(), RetentionPolicy(last=2))
    assert result.removed == ids[:3] and result.incomplete_removed == [stale.name]
    assert sorted(p.name for p in store.iterdir()) == sorted([*ids[3:], fresh.name])


# --- the tasks: bad input is one red line, exit 1 ---


def test_restore_input_is_checked_before_anything(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1:1\n")
    store = tmp_path / "backups" / "t"
    write_snapshot(store, "20261101T000000Z", [("127.0.0.1:1", "redis-data")])
    unknown = run_cli(tmp_path, "backup.restore", "nope", "--yes")
    assert unknown.returncode == 1 and "no complete snapshot 'nope'" in unknown.stderr
    volume = run_cli(tmp_path, "backup.restore", "20261101T000000Z", "--volume", "nope", "--yes")
    assert volume.returncode == 1 and "has no volume 'nope'" in volume.stderr and "redis-data" in volume.stderr
    asked = run_cli(tmp_path, "backup.restore", "20261101T000000Z")
    assert asked.returncode == 1 and "without confirmation" in asked.stderr and "--yes" in asked.stderr
    assert "Traceback" not in unknown.stderr + volume.stderr + asked.stderr
    listing = run_cli(tmp_path, "backup.list")
    assert listing.returncode == 0 and "20261101T000000Z" in listing.stdout and "1 complete" in listing.stdout


# --- schedule ---


def test_cron_entry_is_checked_and_replaced_per_environment(tmp_path: Path) -> None:
    from ops.backup import check_cron, edit_crontab, schedule
    from ops.config import load_environment

    with pytest.raises(BackupError, match="not a cron schedule"):
        check_cron("every night")
    assert check_cron("@daily") == "@daily"
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\n")
    env = load_environment("t", tmp_path, {})
    # A fake crontab that keeps the table in a file, as the real one does.
    table = tmp_path / "table"
    fake = tmp_path / "crontab"
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = -l ]; then cat {table} 2>/dev/null || {{ echo "no crontab" >&2; exit 1; }}; '
        f"else cat > {table}; fi\n"
    )
    fake.chmod(0o755)
    table.write_text("0 1 * * * other job\n")
    line = schedule(env, "17 3 * * *", crontab=str(fake))
    assert (
        line.startswith("17 3 * * * cd ")
        and "backup.all --lock-wait 900 --env t" in line
        and "backup.prune --env t" in line
    )
    schedule(env, "5 4 * * *", crontab=str(fake))
    entries = table.read_text().splitlines()
    assert entries[0] == "0 1 * * * other job" and len(entries) == 2 and entries[1].startswith("5 4 * * *")
    schedule(env, "", remove=True, crontab=str(fake))
    assert table.read_text() == "0 1 * * * other job\n"
    assert edit_crontab("", "t", None) == ""


def test_a_stopped_container_is_started_again_and_post_hooks_run_when_the_archive_fails(tmp_path: Path) -> None:
    from ops.backup import archive_volume
    from ops.config import HostSpec
    from ops.console import RecordingReporter
    from ops.transport import Host
    from tests.fakes import FakeRunner

    runner = FakeRunner({"tar -C": (2, "tar: ./dump.rdb: file changed as we read it")}, outputs={"tar -C": b"x"})
    host = Host(HostSpec("h1"), runner)
    app = container(
        "app", "shop/app:3", opskit_backup_pre="flush", opskit_backup_post="resume", opskit_backup_stop="true"
    )
    plan = plan_volume(REDIS_VOLUME, [app])
    with pytest.raises(BackupError, match=r"archive command exited 2: tar: \./dump\.rdb: file changed"):
        archive_volume(host, plan, LocalStore(tmp_path), "20260101T000000Z", RecordingReporter())
    commands = runner.commands
    assert commands[0] == "docker exec demo-app-1 sh -c flush"
    assert commands[1].startswith("docker stop demo-app-1")
    assert "tar -C /var/lib/docker/volumes/demo_redis-data/_data" in commands[2]  # the failed archive
    assert commands[3].startswith("docker start demo-app-1")
    assert commands[4] == "docker exec demo-app-1 sh -c resume"
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []  # no partial archive left


def test_a_failing_pre_hook_stops_the_backup_of_that_volume_before_anything_is_stopped(tmp_path: Path) -> None:
    from ops.backup import archive_volume
    from ops.config import HostSpec
    from ops.console import RecordingReporter
    from ops.transport import Host
    from tests.fakes import FakeRunner

    runner = FakeRunner({"sh -c flush": (3, "cannot flush")})
    host = Host(HostSpec("h1"), runner)
    app = container("app", "shop/app:3", opskit_backup_pre="flush", opskit_backup_stop="true")
    with pytest.raises(BackupError, match="pre hook of demo-app-1 exited 3: cannot flush"):
        archive_volume(host, plan_volume(REDIS_VOLUME, [app]), LocalStore(tmp_path), "x", RecordingReporter())
    assert not any(command.startswith("docker stop") for command in runner.commands)


def test_offsite_target_is_parsed_and_checked(tmp_path: Path) -> None:
    from ops.backup import cron_line, offsite_store, ssh_target
    from ops.config import HostSpec, load_environment

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\nBACKUP_OFFSITE=vault@backup.example:2222:/srv/b/shop/\n")
    env = load_environment("t", tmp_path, {})
    assert ssh_target(env) == (HostSpec("backup.example", 2222, "vault"), "/srv/b/shop")
    assert "backup.offsite --env t" in cron_line(env, "@daily")
    (tmp_path / "env" / "u.env").write_text("HOSTS=127.0.0.1\nBACKUP_OFFSITE=backup.example\n")
    with pytest.raises(BackupError, match="has no :/path"):
        ssh_target(load_environment("u", tmp_path, {}))
    (tmp_path / "env" / "v.env").write_text("HOSTS=127.0.0.1\n")
    with pytest.raises(BackupError, match="BACKUP_OFFSITE is not set"):
        offsite_store(load_environment("v", tmp_path, {}))


def test_host_target_archives_and_hashes_on_the_host_and_a_full_disk_removes_the_partial_archive() -> None:
    from ops.backup import archive_volume
    from ops.config import HostSpec
    from ops.console import RecordingReporter
    from ops.transport import Host
    from tests.fakes import FakeRunner

    digest = "ab" * 32
    runner = FakeRunner({"&& sha256sum <": (0, f"{digest}  -\n4096\n")})
    host = Host(HostSpec("h1"), runner)
    store = HostStore("/var/backups/opskit/t")
    record = archive_volume(host, plan_volume(REDIS_VOLUME, []), store, "20260101T000000Z", RecordingReporter())
    assert (record.bytes, record.sha256, record.archive) == (4096, digest, "h1/redis-data.tar.zst")
    (command,) = [c for c in runner.commands if "sha256sum" in c]
    # tar | zstd > ARCHIVE, then sha256sum < ARCHIVE, all on the host, in the partial snapshot directory.
    archive = "/var/backups/opskit/t/20260101T000000Z.partial/h1/redis-data.tar.zst"
    assert "zstd" in command and f"> {archive} && sha256sum < {archive}" in command
    assert command.index("tar ") < command.index("zstd") < command.index("sha256sum")

    full = FakeRunner(
        {"&& sha256sum <": (1, "zstd: error 70 : Write error : cannot write block : No space left on device")}
    )
    with pytest.raises(BackupError, match=r"target disk full while writing redis-data\.tar\.zst") as error:
        archive_volume(Host(HostSpec("h1"), full), plan_volume(REDIS_VOLUME, []), store, "x", RecordingReporter())
    assert "partial archive was removed" in error.value.one_line()
    assert any("rm -f /var/backups/opskit/t/x.partial/h1/redis-data.tar.zst" in c for c in full.commands)


def test_host_target_is_chosen_in_the_env_file_or_by_flag_and_checked(tmp_path: Path) -> None:
    from ops.backup import host_store
    from ops.config import load_environment

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\n")
    env = load_environment("t", tmp_path, {})
    assert host_store(env) is None
    store = host_store(env, "host")
    assert store is not None and store.base == "/var/backups/opskit/t"
    with pytest.raises(BackupError, match="unknown backup target 'nas'"):
        host_store(env, "nas")
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\nBACKUP_TARGET=host\nBACKUP_HOST_DIR=/srv/bk/\n")
    env = load_environment("t", tmp_path, {})
    store = host_store(env)
    assert store is not None and store.base == "/srv/bk" and host_store(env, "local") is None
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\nBACKUP_HOST_DIR=backups\n")
    with pytest.raises(BackupError, match="not an absolute directory"):
        host_store(load_environment("t", tmp_path, {}), "host")


def test_compression_level_is_checked_against_the_compressor_and_negative_zstd_levels_are_fast(tmp_path: Path) -> None:
    from ops.backup import compression_level, compressor
    from ops.config import load_environment
    from ops.errors import ConfigError

    (tmp_path / "env").mkdir()
    env_file = tmp_path / "env" / "t.env"
    env_file.write_text("HOSTS=127.0.0.1\n")
    assert compression_level(load_environment("t", tmp_path, {}), "zstd") == 1
    env_file.write_text("HOSTS=127.0.0.1\nBACKUP_LEVEL=-3\n")
    level = compression_level(load_environment("t", tmp_path, {}), "zstd")
    assert compressor("zstd", level) == "zstd -q -c -T0 --fast=3"
    assert compressor("zstd", 19) == "zstd -q -c -T0 -19"
    with pytest.raises(BackupError, match=r"BACKUP_LEVEL=-3 is not a gzip level") as error:
        compression_level(load_environment("t", tmp_path, {}), "gzip")
    assert "1 to 9" in error.value.one_line()
    env_file.write_text("HOSTS=127.0.0.1\nBACKUP_LEVEL=0\n")
    with pytest.raises(BackupError, match="BACKUP_LEVEL=0 is not a zstd level"):
        compression_level(load_environment("t", tmp_path, {}), "zstd")
    env_file.write_text("HOSTS=127.0.0.1\nBACKUP_LEVEL=fast\n")
    with pytest.raises(ConfigError, match="BACKUP_LEVEL"):
        load_environment("t", tmp_path, {})


def test_host_target_discard_goes_on_past_an_unreachable_host_and_names_it() -> None:
    from ops.config import HostSpec
    from ops.transport import Host
    from tests.fakes import FakeRunner

    up, down = FakeRunner(), FakeRunner(unreachable="h2 gone")
    store = HostStore("/var/backups/opskit/t")
    with pytest.raises(BackupError, match=r"could not remove /var/backups/opskit/t/x\.partial on h2") as error:
        store.discard([Host(HostSpec("h2"), down), Host(HostSpec("h1"), up)], "x", partial=True)
    assert "backup.prune removes it" in error.value.one_line()
    assert up.commands and "rm -rf /var/backups/opskit/t/x.partial" in up.commands[0]


def test_an_interrupted_host_target_snapshot_says_where_its_parts_are(tmp_path: Path) -> None:
    from ops.backup import MANIFEST, read_snapshot
    from ops.backup.catalogue import manifest_text
    from ops.config import load_environment

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1,127.0.0.2\n")
    env = load_environment("t", tmp_path, {})
    partial = tmp_path / "20260101T000000Z.partial"
    partial.mkdir()
    under_way = Snapshot(
        "20260101T000000Z", partial, complete=False, created="2026-01-01T00:00:00+00:00", host_dir="/srv/bk"
    )
    under_way.hosts = {"127.0.0.2": {}}
    (partial / MANIFEST).write_text(manifest_text(under_way, env))
    snapshot = read_snapshot(partial)
    assert (snapshot.id, snapshot.complete, snapshot.host_dir) == ("20260101T000000Z", False, "/srv/bk")
    assert list(snapshot.hosts) == ["127.0.0.2"] and snapshot.archives == []


def test_host_target_progress_follows_the_archive_as_it_grows_on_the_host() -> None:
    """No bytes come back from a host-target archive: progress is the file's size, polled."""
    from ops.backup.stores import size_watch
    from ops.config import HostSpec
    from ops.transport import CommandResult, Host
    from tests.fakes import FakeRunner

    sizes = iter([1000, 5000, 5000, 9000])

    class GrowingArchive(FakeRunner):
        def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
            if "stat -c %s" in command:
                return CommandResult(command, 0, f"{next(sizes, 9000)}\n", "")
            return super().run(command, timeout=timeout, stdin=stdin)

    host = Host(HostSpec("h1"), GrowingArchive())
    steps: list[int] = []
    with size_watch(host, "/b/x.partial/h1/redis-data.tar.zst", steps.append, every=0.01) as reported:
        while len(steps) < 3:
            time.sleep(0.01)
    assert steps[:3] == [1000, 4000, 4000] and reported[0] == sum(steps)


def test_a_swarm_stacks_volume_counts_on_the_node_whose_running_task_mounts_it() -> None:
    stack = {"com.docker.stack.namespace": "demo"}
    volumes = [
        {"Name": "demo_alertmanager-data", "Mountpoint": "/v/a", "Labels": stack},
        {"Name": "demo_redis-data", "Mountpoint": "/v/r", "Labels": stack},  # a task that left this node
    ]
    task = {
        "Id": "0123456789abcdef",
        "Name": "/demo_alertmanager.1.x",
        "Config": {
            "Image": "127.0.0.1:5000/demo/alertmanager@sha256:ab",
            "Labels": {**stack, "com.docker.swarm.service.name": "demo_alertmanager"},
        },
        "State": {"Running": True},
        "Mounts": [{"Type": "volume", "Name": "demo_alertmanager-data", "Destination": "/alertmanager"}],
    }
    runner = FakeRunner(
        {
            "docker volume ls": (0, "demo_alertmanager-data\ndemo_redis-data\n"),
            "docker volume inspect": (0, json.dumps(volumes)),
            "docker ps -aq": (0, "0123456789ab\n"),
            "docker inspect": (0, json.dumps([task])),
        }
    )
    found, containers = read_volume_facts(Host(HostSpec("worker1"), runner), "demo")
    assert [(v.name, v.key) for v in found] == [("demo_alertmanager-data", "alertmanager-data")]
    assert [(c.service, c.running) for c in containers] == [("alertmanager", True)]
