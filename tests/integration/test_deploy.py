"""Deploy, rollback, lock and audit on provisioned lab hosts: real SSH, Docker, Compose, nginx."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, ProvisionedLab, http_get, opskit
from tests.receiver import closed_port, receiver

pytestmark = pytest.mark.integration


def version_on(lab: ProvisionedLab, index: int) -> str:
    status, body = http_get(lab.spec.http_port(index), "/version")
    assert status == 200, body
    return str(json.loads(body)["version"])


def counter(lab: ProvisionedLab, index: int) -> int:
    """Visit the page (which counts the visit in Redis) and read the count it shows."""
    status, body = http_get(lab.spec.http_port(index), "/")
    assert status == 200, body
    match = re.search(r'id="visits">(\d+)<', body)
    assert match, body
    return int(match.group(1))


def deploy(lab: ProvisionedLab, *args: str) -> subprocess.CompletedProcess[str]:
    return opskit(lab.root, "deploy", "--env", "itestp", *args)


def compose_on(lab: ProvisionedLab, index: int, args: str) -> str:
    """`docker compose ARGS` of the current release, run on the lab host by hand; its output."""
    return by_hand(lab, index, f"docker compose -p demo -f compose.yaml -f compose.opskit.yaml {args}")


def by_hand(lab: ProvisionedLab, index: int, script: str) -> str:
    """A shell script run by hand on the lab host in the current release's directory; its output."""
    import docker

    client = docker.from_env(version="auto")
    try:
        container = client.containers.get(lab.spec.container(index))
        code, output = container.exec_run(["sh", "-c", f"cd /opt/demo/current && {script}"])
    finally:
        client.close()
    assert code == 0, output
    return str(output.decode(errors="replace"))


def test_deploy_upgrade_failed_gate_and_rollback(deployed_lab: ProvisionedLab) -> None:
    lab = deployed_lab
    assert [version_on(lab, i) for i in (1, 2)] == ["v1", "v1"]
    for _ in range(3):
        counter(lab, 1)
    visits = counter(lab, 1)
    assert visits >= 4

    upgraded = deploy(lab, "--version", "v2")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert [version_on(lab, i) for i in (1, 2)] == ["v2", "v2"]
    assert counter(lab, 1) == visits + 1  # the Redis volume survived the deploy

    # After the blue-green deploy, a plain `docker compose up -d` of the current release by hand
    # finds nothing to recreate: the proxy (the only published port) keeps running.
    manual = compose_on(lab, 1, "up -d --no-build")
    assert "Recreate" not in manual, manual
    # The same release again: no new release directory; what drifted (a proxy stopped by hand on
    # the first host) converges, and the gate passes.
    compose_on(lab, 1, "stop proxy")
    # ... with a notification webhook that is down: the deploy's result and exit code stand, a
    # warning says so, and NOTIFY_URL (opskit's own secret) is not in the release's .env.
    secrets = lab.root / "env" / "itestp.secrets.env"
    secrets.write_text(f"NOTIFY_URL=http://127.0.0.1:{closed_port()}/hooks/deploys\n")
    secrets.chmod(0o600)
    try:
        again = deploy(lab, "--version", "v2", "--json")
    finally:
        secrets.unlink()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "notification of the deploy not delivered to NOTIFY_URL (connection refused" in again.stderr
    hosts = json.loads(again.stdout)["hosts"]
    assert [host["result"] for host in hosts] == ["unchanged", "unchanged"]
    assert all(host["release"] == host["previous"] for host in hosts)
    assert [version_on(lab, i) for i in (1, 2)] == ["v2", "v2"]
    # A release edited by hand on the second host is not "unchanged": a new release replaces it.
    by_hand(lab, 2, "echo '# edited by hand' >> compose.yaml")
    edited = deploy(lab, "--version", "v2", "--json")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    hosts = json.loads(edited.stdout)["hosts"]
    assert [host["result"] for host in hosts] == ["unchanged", "deployed"]
    assert hosts[1]["release"] != hosts[1]["previous"]
    assert "edited by hand" not in by_hand(lab, 2, "cat compose.yaml")
    assert [version_on(lab, i) for i in (1, 2)] == ["v2", "v2"]

    # v3 fails its health check: each host goes back to v2 by itself, exit code 1, audited, and the
    # team's webhook is told (its first answer too slow: the retry delivers; the result stands).
    bad_env = lab.root / "env" / "itestbad.env"
    bad_env.write_text(
        (lab.root / "env" / "itestp.env").read_text()
        + "STACK_VARS=HEALTH_FAIL=1\nHEALTH_TIMEOUT=40\nNOTIFY_TIMEOUT=2\n"
    )
    bad_secrets = lab.root / "env" / "itestbad.secrets.env"
    with receiver() as hook:
        hook.answers = ["slow"]
        bad_secrets.write_text(f"NOTIFY_URL={hook.url}\n")
        bad_secrets.chmod(0o600)
        failed = opskit(lab.root, "deploy", "--env", "itestbad", "--version", "v3")
        messages = hook.messages()
    bad_env.unlink()
    bad_secrets.unlink()
    assert failed.returncode == 1
    assert "rolled-back" in failed.stdout
    assert "service web" in failed.stdout
    assert "warning" not in failed.stderr, failed.stderr
    (message,) = messages
    assert str(message["text"]).startswith(":rotating_light: deploy v3 on itestbad: rolled back (service web ")
    fields = {field["title"]: field["value"] for field in message["attachments"][0]["fields"]}  # type: ignore[index]
    assert fields["failing service"] == "web" and fields["version"] == "v3"
    assert fields["hosts"] == ", ".join(f"{host.name} rolled-back" for host in lab.env.hosts)
    assert [version_on(lab, i) for i in (1, 2)] == ["v2", "v2"]

    back = opskit(lab.root, "rollback", "--env", "itestp")
    assert back.returncode == 0, back.stdout + back.stderr
    assert [version_on(lab, i) for i in (1, 2)] == ["v1", "v1"]
    assert counter(lab, 1) == visits + 2  # and the rollback

    audit = opskit(lab.root, "audit", "--env", "itestp", "--json", "--tail", "50")
    records = json.loads(audit.stdout)
    results = [(r["action"], r["version"], r["result"]) for r in records]
    assert ("deploy", "v3", "rolled-back") in results
    assert ("rollback", "previous", "deployed") in results

    releases = opskit(lab.root, "releases", "--env", "itestp", "--json")
    listing = json.loads(releases.stdout)
    for host in listing.values():
        current = [r for r in host["releases"] if r["id"] == host["current"]]
        assert current and current[0]["version"] == "v1"
        assert any(r["status"] == "failed" and r["version"] == "v3" for r in host["releases"])


def test_a_deploy_started_while_another_runs_exits_1_and_leaves_the_first_ones_lock(
    deployed_lab: ProvisionedLab,
) -> None:
    """Two deploys at once: the one that comes second fails at the first host, naming the holder,
    and takes nothing. The first is held here, in-process, exactly as a running deploy holds it
    (two real processes racing made the outcome depend on the machine's load: an unchanged deploy
    can finish before the other one starts)."""
    from ops.host.lock import DeployLock, read_lock
    from ops.transport import Fleet

    lab = deployed_lab
    with Fleet.connect(lab.env) as fleet:
        first = DeployLock(fleet.hosts, lab.env.project, "deploy v1")
        first.acquire()
        try:
            second = deploy(lab, "--version", "v1")
            assert second.returncode == 1, second.stdout + second.stderr
            assert "locked by" in second.stderr and "deploy v1" in second.stderr
            assert [(read_lock(host, lab.env.project) or first.info).token for host in fleet.hosts] == [
                first.info.token
            ] * len(fleet.hosts)
        finally:
            first.release()
    after = deploy(lab, "--version", "v1")
    assert after.returncode == 0, after.stdout + after.stderr
    status = opskit(lab.root, "lock.status", "--env", "itestp", "--json")
    assert all(not row["locked"] for row in json.loads(status.stdout).values())


def test_invalid_compose_file_is_caught_before_any_host_changes(deployed_lab: ProvisionedLab, tmp_path: Path) -> None:
    lab = deployed_lab
    broken = tmp_path / "stack"
    shutil.copytree(REPO / "stacks" / "demo", broken)
    compose = broken / "compose.yaml"
    compose.write_text(compose.read_text().replace("services:", "services:\n  oops: [not, a, mapping]", 1))
    env_text = (lab.root / "env" / "itestp.env").read_text()
    (lab.root / "env" / "itestbroken.env").write_text(
        "\n".join(line for line in env_text.splitlines() if not line.startswith("STACK_DIR="))
        + f"\nSTACK_DIR={broken}\n"
    )
    before = opskit(lab.root, "releases", "--env", "itestp", "--json").stdout
    done = opskit(lab.root, "deploy", "--env", "itestbroken", "--version", "v9")
    (lab.root / "env" / "itestbroken.env").unlink()
    assert done.returncode == 1
    assert "invalid compose file" in done.stderr
    assert "Traceback" not in done.stderr
    assert opskit(lab.root, "releases", "--env", "itestp", "--json").stdout == before


def test_missing_stack_directory_and_unknown_service(deployed_lab: ProvisionedLab) -> None:
    lab = deployed_lab
    env_text = (lab.root / "env" / "itestp.env").read_text()
    (lab.root / "env" / "itestnostack.env").write_text(env_text.replace("STACK_DIR=", "STACK_DIR=/nonexistent/") + "\n")
    done = opskit(lab.root, "deploy", "--env", "itestnostack")
    (lab.root / "env" / "itestnostack.env").unlink()
    assert done.returncode == 1
    assert "STACK_DIR: directory" in done.stderr and "does not exist" in done.stderr
    unknown = opskit(lab.root, "swap", "nosuch", "--env", "itestp", "--version", "v1")
    assert unknown.returncode == 1
    assert "unknown service 'nosuch'" in unknown.stderr


def test_a_host_that_goes_down_mid_deploy_leaves_every_host_on_a_complete_release(
    deployed_lab: ProvisionedLab,
) -> None:
    import time

    import docker

    from ops.console import RecordingReporter
    from ops.lab import lab_up
    from ops.provision import provision

    lab = deployed_lab
    before = {index: version_on(lab, index) for index in (1, 2)}
    target = "v2" if before[1] == "v1" else "v1"
    client = docker.from_env(version="auto")
    second = client.containers.get(lab.spec.container(2))

    def releases_on_second() -> int:
        code, output = second.exec_run(["sh", "-c", "ls /opt/demo/releases | wc -l"])
        return int(output.decode().strip() or 0) if code == 0 else 0

    count = releases_on_second()
    command = [sys.executable, "-c", "from ops.cli import main; main()", "deploy", "--env", "itestp"]
    env = {**__import__("os").environ, "OPS_ROOT": str(lab.root), "COLUMNS": "200"}
    process = subprocess.Popen(
        [*command, "--version", target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    deadline = time.monotonic() + 120
    while releases_on_second() == count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    second.kill()  # the server dies mid-deploy: sshd, its Docker engine and the stack with it
    stdout, stderr = process.communicate(timeout=600)

    assert process.returncode == 1, stdout + stderr
    assert lab.env.hosts[1].name in stdout + stderr
    assert "Traceback" not in stderr
    assert version_on(lab, 1) == target  # the healthy host finished its deploy
    locks = json.loads(opskit(lab.root, "lock.status", "--env", "itestp", "--json").stdout)
    assert locks[lab.env.hosts[0].name] == {"locked": False}  # released where the host is up
    assert "error" in locks[lab.env.hosts[1].name]

    # The server comes back (a reboot): provisioning starts its engine, the stack restarts on the
    # release that was current before the deploy, complete and healthy.
    lab_up(lab.spec, RecordingReporter())
    assert provision(lab.env, RecordingReporter(), only_hosts=[lab.env.hosts[1].name]).ok
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if http_get(lab.spec.http_port(2), "/version")[0] == 200:
                break
        except OSError:  # the proxy is not up yet
            pass
        time.sleep(1)
    assert version_on(lab, 2) == before[2]
    listing = json.loads(opskit(lab.root, "releases", "--env", "itestp", "--json").stdout)
    second_host = listing[lab.env.hosts[1].name]
    current = [r for r in second_host["releases"] if r["id"] == second_host["current"]]
    assert current and current[0]["version"] == before[2] and current[0]["status"] == "active"

    # The dead deploy's lock on that host is taken over by the next deploy, which completes.
    again = deploy(lab, "--version", target)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [version_on(lab, index) for index in (1, 2)] == [target, target]
