"""A stack we did not write, on the deployed lab: tests/fixtures/stacks/notes (gateway, api, cache,
db: no web, no proxy, its Redis called cache) under its own project beside the demo.

What a person reads when its releases fail (each host named once, the exit code or health output,
the container's last log lines once for both hosts, the next commands; the audit's cause without a
host), and the shipped runbooks finding its Redis and database by what they run, fixing them and
saying "fixed" as soon as the stack is healthy again.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ops.console import RecordingReporter
from ops.deploy.health import wait_healthy
from ops.deploy.releases import ReleaseStore
from ops.transport import Fleet, Host
from tests.integration.conftest import REPO, Lab, opskit, write_env

pytestmark = pytest.mark.integration

ENV = "itestnotes"
PROJECT = "notes"
STACK = REPO / "tests" / "fixtures" / "stacks" / "notes"
SERVICES = ["api", "cache", "db", "gateway"]


@dataclass(frozen=True)
class Notes:
    lab: Lab
    hosts: list[str]


def env_text(lab: Lab, extra: str = "") -> str:
    base = (lab.root / "env" / f"{lab.env.name}.env").read_text().splitlines()
    lines = [line for line in base if not line.startswith(("STACK_DIR=", "PROJECT=", "STACK_VARS="))]
    return "\n".join([*lines, f"STACK_DIR={STACK}", f"PROJECT={PROJECT}", "HEALTH_TIMEOUT=30", extra, ""])


def each_host(lab: Lab, work: object) -> None:
    with Fleet.connect(lab.env) as fleet:
        outcome = fleet.map(work)  # type: ignore[arg-type]
        assert outcome.ok, [str(item.error) for item in outcome.failed]


@pytest.fixture(scope="module")
def notes(deployed_lab: Lab) -> Iterator[Notes]:
    """The notes stack deployed on both lab hosts (beside the demo, port 8081 inside the hosts)."""
    from ops.config import load_environment
    from ops.provision import provision

    lab = deployed_lab
    started = time.monotonic()
    env_file = write_env(lab.root, ENV, env_text(lab))
    env = load_environment(ENV, lab.root, {})
    try:
        assert provision(env, RecordingReporter()).ok  # makes /opt/notes; the rest is in place
        done = opskit(lab.root, "deploy", "--env", ENV, timeout=1500)
        assert done.returncode == 0, done.stdout + done.stderr
        print(f"\nnotes deployed in {time.monotonic() - started:.0f} s")
        yield Notes(lab, [spec.name for spec in lab.env.hosts])
    finally:

        def remove(host: Host) -> None:
            label = f"label=com.docker.compose.project={PROJECT}"
            host.run(f"docker ps -aq --filter {label} | xargs -r docker rm -f -v", check=False, timeout=120)
            host.run(f"docker volume ls -q --filter {label} | xargs -r docker volume rm", check=False, timeout=60)
            host.sudo(f"rm -rf {ReleaseStore(host, PROJECT).base}", check=False)

        each_host(lab, remove)
        env_file.unlink(missing_ok=True)
        print(f"notes module: {time.monotonic() - started:.0f} s")


def failing_deploy(notes: Notes, name: str, variables: str, *args: str) -> tuple[str, list[dict[str, object]]]:
    """Deploy with the stack's variables set to fail; its output, and the audit records it made."""
    env_file = write_env(notes.lab.root, name, env_text(notes.lab, f"STACK_VARS={variables}"))
    try:
        done = opskit(notes.lab.root, "deploy", "--env", name, "--version", "v2", *args, timeout=600)
        assert done.returncode == 1, done.stdout + done.stderr
        audit = opskit(notes.lab.root, "audit", "--env", name, "--json", "--tail", "2" if not args else "1")
    finally:
        env_file.unlink()
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout, json.loads(audit.stdout)


def test_a_release_whose_api_exits_names_the_code_and_shows_its_log_once(notes: Notes) -> None:
    output, audit = failing_deploy(notes, "itestnotesexit", "API_FAIL=exit")
    first, second = notes.hosts
    cause = r"service api \(container notes-api-1\) exited with code 3"
    for host in (first, second):
        # named once, where it is rendered: at the start of its line and nowhere else in it
        [line] = [line for line in output.splitlines() if line.startswith(f"{host}: service api")]
        assert re.fullmatch(rf"{re.escape(host)}: {cause}; put back on \S+", line), line
        assert line.count(host) == 1
    logs = f"last 3 log lines of api (notes-api-1) on {first} and {second}:"
    assert output.count(logs) == 1, output  # identical on both hosts: shown once, naming both
    block = output.split(logs, 1)[1].splitlines()[1:]
    assert block[:3] == [
        "    api: starting",
        "    api: DATABASE_URL is not set",
        "    api: refusing to start without a database",
    ]
    assert "inv ops.logs api --env itestnotesexit" in output and "inv releases.itestnotesexit" in output
    assert {record["result"] for record in audit} == {"rolled-back"}
    for record in audit:
        assert re.fullmatch(cause, str(record["detail"])), record  # the record has its host field


def test_a_release_that_stays_unhealthy_shows_its_health_output(notes: Notes) -> None:
    first = notes.hosts[0]  # one host is enough here (the exit test shows two)
    output, audit = failing_deploy(notes, "itestnotessick", "API_FAIL=unhealthy", "--host", first)
    for host in [first]:
        [line] = [line for line in output.splitlines() if line.startswith(f"{host}: service api")]
        assert "is unhealthy; last health output:" in line and "HTTP Error 500" in line, line
        assert line.count(host) == 1
    assert "inv ops.logs api --env itestnotessick" in output
    assert all(str(record["detail"]).startswith("service api (container notes-api-1) is unhealthy") for record in audit)


def run(notes: Notes, *args: str) -> tuple[int, str]:
    done = opskit(notes.lab.root, *args, "--env", ENV)
    return done.returncode, done.stdout + done.stderr


def test_the_shipped_runbooks_find_its_redis_and_database_and_fix_them(notes: Notes) -> None:
    first = notes.hosts[0]

    def stop(host: Host) -> None:
        if host.name == first:
            host.run("docker stop -t 1 notes-db-1 notes-cache-1", timeout=60)

    each_host(notes.lab, stop)

    code, output = run(notes, "runbook.run", "redis-down", "--json")
    report = json.loads(output)
    assert code == 1
    assert report["causes"][0] == "the Redis service cache is not running (exited notes-cache-1)"
    assert "service cache has no running container" in report["causes"]
    code, output = run(notes, "runbook.run", "database-down", "--json")
    report = json.loads(output)
    assert code == 1 and report["causes"] == ["service db has no running container"]
    assert [s["value"] for s in report["steps"] if not s["applicable"]] == [
        "not applicable: no service of the stack plays mysql"
    ] * 2

    started = time.monotonic()
    code, output = run(notes, "runbook.run", "service-unhealthy", "--fix", "--yes")
    seconds = time.monotonic() - started
    assert code == 0, output
    assert re.search(r"conclusion: container not healthy: (api|cache|db) notes-\w+-1: (Exited|Up .*unhealthy)", output)
    assert "the entry point gateway accepts connections on its published ports port 8081 open" in output
    assert "fixed: every check answers healthy again" in output
    assert seconds < 30, f"the fix took {seconds:.0f} s"  # no minute of waiting on a healthy stack

    def healthy(host: Host) -> None:
        wait_healthy(host, PROJECT, SERVICES, timeout=1)

    each_host(notes.lab, healthy)
