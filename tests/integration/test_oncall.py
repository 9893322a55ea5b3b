"""On-call commands on the deployed lab: failures provoked for real, named by the runbooks and by doctor.

The lab is shared with the deploy and swap tests: every test puts the stack back healthy (the
`sick_lab` fixture's finalizer), whatever the test did.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ops.deploy.health import wait_healthy
from ops.transport import Fleet, Host
from tests.integration.conftest import Lab, http_get, opskit

pytestmark = pytest.mark.integration

SERVICES = ["alertmanager", "prometheus", "proxy", "redis", "web"]
LABEL = "label=com.docker.compose.project=demo"
# A small tmpfs over one volume's directory on the host: "fills a volume's disk" without touching
# the machine's real disk, which the lab hosts share.
FILLED_VOLUME = "demo_alertmanager-data"


def run(lab: Lab, task: str, *args: str) -> tuple[int, str]:
    done = opskit(lab.root, task, "--env", lab.env.name, *args)
    return done.returncode, done.stdout + done.stderr


def run_json(lab: Lab, task: str, *args: str) -> tuple[int, Any]:
    done = opskit(lab.root, task, "--env", lab.env.name, "--json", *args)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def on_first_host(lab: Lab, command: str) -> str:
    with Fleet.connect(lab.env, only=[lab.env.hosts[0].name]) as fleet:
        return fleet.hosts[0].run(command, timeout=120).stdout.strip()


def container(lab: Lab, service: str) -> str:
    return on_first_host(lab, f"docker ps -aq --filter {LABEL} --filter label=com.docker.compose.service={service}")


def restore(host: Host) -> None:
    """Put a host's stack back healthy: no tmpfs, no lock, every container running and healthy."""
    path = f"/var/lib/docker/volumes/{FILLED_VOLUME}/_data"
    host.run(f"sudo -n sh -c 'mountpoint -q {path} && umount -l {path}; rm -rf /opt/demo/lock'", check=False)
    host.run(
        f'ids=$(docker ps -q --filter {LABEL} --filter health=unhealthy); [ -z "$ids" ] || docker restart -t 1 $ids;'
        f' ids=$(docker ps -aq --filter {LABEL} --filter status=exited); [ -z "$ids" ] || docker start $ids;'
        # A restart clears a container's OOMKilled mark (and ends a memory hog).
        f" docker ps -q --filter {LABEL} | xargs -r docker inspect -f '{{{{.State.OOMKilled}}}} {{{{.Id}}}}'"
        " | awk '$1 == \"true\" {print $2}' | xargs -r docker restart -t 1",
        check=False,
        timeout=120,
    )
    wait_healthy(host, "demo", SERVICES, timeout=90)


@pytest.fixture
def sick_lab(deployed_lab: Lab) -> Iterator[Lab]:
    yield deployed_lab
    for path in (deployed_lab.root / "backups").glob("*/*"):
        for item in path.iterdir():
            item.unlink()
        path.rmdir()
    with Fleet.connect(deployed_lab.env) as fleet:
        assert fleet.map(restore).ok


def step(report: dict[str, Any], title: str, host: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["step"] == title and s["host"] == host)


def test_redis_stopped_is_named_by_its_runbook_and_doctor_and_fixed(sick_lab: Lab) -> None:
    host = sick_lab.env.hosts[0].name
    on_first_host(sick_lab, f"docker stop {container(sick_lab, 'redis')}")

    code, report = run_json(sick_lab, "runbook.run", "redis-down")
    assert code == 1
    assert re.search(r"the Redis service redis is not running \(exited demo-redis-\d+\)", report["conclusion"])
    assert not step(report, "a redis container is running", host)["ok"]
    assert step(report, "a redis container is running", sick_lab.env.hosts[1].name)["ok"]

    code, doctor = run_json(sick_lab, "ops.doctor")
    assert code == 1
    assert any(c["status"] == "fail" and re.match(r"demo-redis-\d+ is exited", c["detail"]) for c in doctor["checks"])

    code, output = run(sick_lab, "runbook.run", "redis-down", "--fix", "--yes")
    assert code == 0, output
    assert "start the redis containers" in output and "fixed: every check answers healthy again" in output


def test_web_unhealthy_is_named_and_fixed_by_a_restart(sick_lab: Lab) -> None:
    web = container(sick_lab, "web")
    # Freeze the app (not its init): the healthcheck times out and Docker marks web unhealthy.
    pids = on_first_host(sick_lab, f"docker top {web} -o pid,args | awk '$2 ~ /python/ && /app.py/ {{print $1}}'")
    on_first_host(sick_lab, f"sudo -n kill -STOP {pids}")
    deadline = time.monotonic() + 60
    while on_first_host(sick_lab, f"docker inspect -f '{{{{.State.Health.Status}}}}' {web}") != "unhealthy":
        assert time.monotonic() < deadline, "web never turned unhealthy"
        time.sleep(2)

    code, report = run_json(sick_lab, "runbook.run", "service-unhealthy")
    assert code == 1
    assert re.search(r"container not healthy: web demo-web-\d+: Up .*\(unhealthy\)", report["conclusion"])
    code, doctor = run_json(sick_lab, "ops.doctor")
    assert code == 1
    assert any(re.match(r"demo-web-\d+ is unhealthy", c["detail"]) and c["fix"] for c in doctor["checks"])

    code, output = run(sick_lab, "runbook.run", "service-unhealthy", "--fix", "--yes")
    assert code == 0, output
    assert "fixed: every check answers healthy again" in output


def test_a_container_near_its_memory_limit_is_named_and_fixed(sick_lab: Lab) -> None:
    prometheus = container(sick_lab, "prometheus")
    # Hold prometheus at about 93 % of its limit as Docker counts it (usage less inactive page cache,
    # cgroup v2 or v1), topping up as the kernel reclaims cache, from perl (Essential in Debian, so in
    # every image of the stack). Prometheus's 512 MiB leaves room for its own healthcheck; in web's
    # 128 MiB, web's python healthcheck every second pushed the cgroup over its limit under load and
    # the OOM killer took the hog before the fix ran.
    hog = (
        "sub rd { for (@_) { if (open my $f, '<', \"/sys/fs/cgroup/$_\") { local $/; return <$f> } } '' }"
        "my $limit = rd('memory.max', 'memory/memory.limit_in_bytes') + 0; my @held; my $end = time + 300;"
        "while (time < $end) {"
        " my %stat = map { split ' ' } split /\\n/, rd('memory.stat', 'memory/memory.stat');"
        " my $inactive = $stat{total_inactive_file} // $stat{inactive_file} // 0;"
        " my $used = rd('memory.current', 'memory/memory.usage_in_bytes') - $inactive;"
        " if ($used < $limit * 0.93) { push @held, 'x' x 2**20 } else { select(undef, undef, undef, 0.2) } }"
    )
    on_first_host(sick_lab, f"docker exec -d {prometheus} perl -e {shlex.quote(hog)}")
    deadline = time.monotonic() + 60  # a loaded machine starts slowly
    while time.monotonic() < deadline:
        used = on_first_host(sick_lab, f"docker stats --no-stream --format '{{{{.MemPerc}}}}' {prometheus}")
        if float(used.rstrip("%") or 0) > 91:
            break
        time.sleep(0.5)
    code, report = run_json(sick_lab, "runbook.run", "memory-pressure")
    assert code == 1
    assert re.search(
        r"a container is near its memory limit: \d+\.\d+% of its limit demo-prometheus-\d+", report["conclusion"]
    ), report
    code, doctor = run_json(sick_lab, "ops.doctor")
    assert any(c["name"] == "container-memory" and c["status"] != "pass" for c in doctor["checks"])

    code, output = run(sick_lab, "runbook.run", "memory-pressure", "--fix", "--yes")
    assert code == 0, output
    assert "fixed: every check answers healthy again" in output


def test_a_full_volume_disk_a_stale_lock_and_an_old_backup_are_named(sick_lab: Lab) -> None:
    path = f"/var/lib/docker/volumes/{FILLED_VOLUME}/_data"
    on_first_host(
        sick_lab,
        f"sudo -n sh -c 'mount -t tmpfs -o size=8m tmpfs {path} && dd if=/dev/zero of={path}/big bs=1M count=16 2>/dev/null; true'",
    )
    since = (datetime.now(UTC) - timedelta(hours=5)).isoformat(timespec="seconds")
    info = json.dumps({"holder": "ci@gone", "since": since, "reason": "deploy v7", "token": "x"})
    on_first_host(sick_lab, f"mkdir -p /opt/demo/lock && printf '%s' {shlex.quote(info)} > /opt/demo/lock/info.json")
    snapshot = sick_lab.root / "backups" / sick_lab.env.name / "20261120-0300"
    snapshot.mkdir(parents=True)
    created = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    (snapshot / "manifest.json").write_text(json.dumps({"created": created, "complete": True}))

    code, doctor = run_json(sick_lab, "ops.doctor")
    assert code == 1
    failed = {c["name"]: c for c in doctor["checks"] if c["status"] == "fail"}
    assert failed["disk"]["detail"] == f"volume {FILLED_VOLUME}: its filesystem is 100% used"
    assert failed["lock"]["detail"].startswith("stale deploy lock (5.0 h old): locked by ci@gone")
    assert failed["lock"]["fix"] == "if no deploy runs: inv lock.release --force"
    assert re.match(
        r"newest complete backup 20261120-0300 is 72\.\d h old \(policy: 26 h\)", failed["backup"]["detail"]
    )

    code, report = run_json(sick_lab, "runbook.run", "disk-full")
    assert code == 1
    assert report["conclusion"] == f"a volume's filesystem is full: 100% volume {FILLED_VOLUME} used"
    code, report = run_json(sick_lab, "runbook.run", "deploy-failed")
    assert code == 1 and "stale deploy lock (5.0 h old)" in report["conclusion"]
    code, report = run_json(sick_lab, "runbook.run", "backup-stale")
    assert code == 1 and "newest complete backup 20261120-0300 is 72." in report["conclusion"]


def test_status_logs_exec_and_restart_across_hosts(sick_lab: Lab) -> None:
    hosts = [spec.name for spec in sick_lab.env.hosts]
    code, status = run_json(sick_lab, "ops.status")
    assert code == 0
    for entry in status["hosts"]:
        assert entry["release"].endswith(("-v1", "-v2")) and not entry["lock"]
        services = {c["service"]: c for c in entry["containers"]}
        assert set(services) >= set(SERVICES)
        assert services["redis"]["health"] == "healthy" and services["redis"]["memory_limit_bytes"] == 128 * 1024**2

    code, output = run(sick_lab, "ops.exec", "redis", "--", "redis-cli", "ping")
    assert code == 0, output
    pongs = [line for line in output.splitlines() if line.endswith("| PONG")]
    assert sorted(line.split()[0] for line in pongs) == sorted(hosts)

    code, output = run(sick_lab, "ops.logs", "redis", "--tail", "5", "--grep", "Ready to accept")
    assert code == 0, output
    lines = [line for line in output.splitlines() if "|" in line]
    assert lines and all(re.match(r"^127\.0\.0\.1:\d+ demo-redis-\d+ \| .*Ready to accept", line) for line in lines)

    # --follow streams from every host as lines arrive, until interrupted.
    environ = {**os.environ, "OPS_ROOT": str(sick_lab.root), "COLUMNS": "200"}
    command = [sys.executable, "-c", "from ops.cli import main; main()", "ops.logs", "web", "--env", sick_lab.env.name]
    follow = subprocess.Popen(
        [*command, "--follow", "--tail", "0", "--grep", "GET /version"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        time.sleep(4)
        for port in (sick_lab.spec.http_port(1), sick_lab.spec.http_port(2)):
            assert http_get(port, "/version")[0] == 200
        time.sleep(2)
    finally:
        follow.send_signal(signal.SIGINT)
        streamed, errors = follow.communicate(timeout=30)
    assert follow.returncode == 0 and not errors.strip(), errors
    lines = [line for line in streamed.splitlines() if "GET /version" in line]
    assert sorted(line.split()[0] for line in lines) == sorted(hosts), streamed

    code, output = run(sick_lab, "ops.restart", "proxy")
    assert code == 0, output
    assert "proxy: 2 container(s) restarted and healthy, 0 failed" in output


def test_an_unknown_service_is_one_clear_error(deployed_lab: Lab) -> None:
    for args in (("ops.logs", "nope"), ("ops.restart", "nope"), ("ops.exec", "nope", "--", "true")):
        code, output = run(deployed_lab, *args)
        assert code == 1
        assert output.strip().splitlines()[-1].startswith("error: unknown service 'nope': no container of it")
        assert "services: alertmanager, prometheus, proxy, redis, web" in output
