"""Swarm nodes on a 3-host lab (the session's swarm_lab): formation, status, doctor, drain."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from ops.console import RecordingReporter
from tests.integration.conftest import Lab, opskit

pytestmark = pytest.mark.integration


def manager_sees(lab: Lab, command: str, index: int = 0) -> str:
    from ops.transport import Host, SSHRunner

    spec = lab.env.hosts[index]
    with_user = spec.as_user(lab.env.deploy_user)
    host = Host(with_user, SSHRunner.for_environment(with_user, lab.env))
    try:
        return host.run(command, timeout=60).stdout
    finally:
        host.close()


def test_a_second_provision_changes_nothing_and_the_swarm_has_three_labelled_nodes(swarm_lab: Lab) -> None:
    from ops.provision import provision

    result = provision(swarm_lab.env, RecordingReporter())
    assert result.ok and result.changed == 0, result.summary_line()
    swarm = [event.detail for report in result.hosts for event in report.events if event.step == "swarm"]
    assert swarm[0].startswith("manager (leader) of 3 nodes, advertises 172.")
    assert all(detail.startswith("worker of 3 nodes") for detail in swarm[1:])
    nodes = manager_sees(
        swarm_lab,
        "docker node ls -q | xargs docker node inspect --format '{{.Spec.Role}} {{.Status.State}} {{json .Spec.Labels}}'",
    )
    ports = [swarm_lab.spec.ssh_port(index) for index in (1, 2, 3)]
    assert sorted(nodes.splitlines()) == [
        f'manager ready {{"opskit.host":"127.0.0.1:{ports[0]}","opskit.role.manager":"true"}}',
        *sorted(f'worker ready {{"opskit.host":"127.0.0.1:{port}","opskit.role.worker":"true"}}' for port in ports[1:]),
    ]


# A 2 MB image made on each node from its own files (no registry in the lab): sleep and its libc.
SLEEP_IMAGE = "sa-sleep:1"
IMPORT_SLEEP = (
    "tar -C / -ch usr/bin/sleep usr/lib/x86_64-linux-gnu/libc.so.6 lib64/ld-linux-x86-64.so.2 "
    f"| docker import - {SLEEP_IMAGE} >/dev/null"
)


@pytest.fixture(scope="module")
def sleepers(swarm_lab: Lab) -> Iterator[str]:
    """A service of 3 replicas spread over the nodes, removed afterwards (the swarm is shared)."""
    for index in range(3):
        manager_sees(swarm_lab, IMPORT_SLEEP, index)
    manager_sees(
        swarm_lab,
        "docker service create -d -q --name sleepers --replicas 3 --no-resolve-image --stop-grace-period 1s "
        "--placement-pref spread=node.id " + SLEEP_IMAGE + " /usr/bin/sleep 1d",
    )
    deadline = time.monotonic() + 60
    while "3/3" not in manager_sees(swarm_lab, "docker service ls --filter name=sleepers --format '{{.Replicas}}'"):
        assert time.monotonic() < deadline, manager_sees(swarm_lab, "docker service ps --no-trunc sleepers")
        time.sleep(0.5)
    yield "sleepers"
    manager_sees(swarm_lab, "docker service rm sleepers")


def run(lab: Lab, *args: str) -> tuple[int, str]:
    done = opskit(lab.root, *args, "--env", lab.env.name)
    return done.returncode, done.stdout + done.stderr


def test_status_and_doctor_show_the_nodes_services_and_no_ipvs(swarm_lab: Lab, sleepers: str) -> None:
    code, out = run(swarm_lab, "ops.status", "--json")
    assert code == 0, out
    swarm = json.loads(out)["swarm"]
    assert sorted((n["hostname"], n["state"], n["availability"]) for n in swarm["nodes"]) == [
        ("itests1", "Ready", "Active"),
        ("itests2", "Ready", "Active"),
        ("itests3", "Ready", "Active"),
    ]
    assert [n["manager_status"] for n in swarm["nodes"] if n["hostname"] == "itests1"] == ["Leader"]
    assert [(s["name"], s["running"], s["desired"]) for s in swarm["services"]] == [("sleepers", 3, 3)]
    code, out = run(swarm_lab, "ops.doctor", "--json")
    checks = {check["name"]: check for check in json.loads(out)["checks"] if check["host"] == "swarm"}
    assert checks["swarm-nodes"]["status"] == "pass" and checks["swarm-replicas"]["status"] == "pass"
    assert checks["swarm-managers"]["status"] == "pass"
    assert checks["ipvs"]["status"] == "warn"
    assert "no IPVS on 3 of 3 nodes" in checks["ipvs"]["detail"] and "do not answer" in checks["ipvs"]["detail"]
    assert "mode: host" in checks["ipvs"]["fix"]


def test_drain_moves_a_workers_tasks_and_activate_takes_it_back(swarm_lab: Lab, sleepers: str) -> None:
    worker = swarm_lab.env.hosts[1].name
    code, out = run(swarm_lab, "swarm.drain", worker)
    assert code == 0, out
    assert "itests2 is drained; 1 task(s) now run on other nodes" in out
    placed = manager_sees(
        swarm_lab, "docker service ps sleepers --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'"
    )
    nodes = [line.split()[0] for line in placed.splitlines()]
    assert len(nodes) == 3 and "itests2" not in nodes and all("Running" in line for line in placed.splitlines())
    code, out = run(swarm_lab, "swarm.activate", "itests2")
    assert code == 0 and "itests2 is active" in out, out
    assert "Active" in manager_sees(swarm_lab, "docker node inspect itests2 --format '{{.Spec.Availability}}'").title()
    code, out = run(swarm_lab, "swarm.drain", "nosuch")
    assert code == 1 and "no host or node named 'nosuch'" in out and "Traceback" not in out
