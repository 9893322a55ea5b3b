"""The swarm as on-call people see it, from canned manager answers: state, doctor checks, drain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ops.swarm.maintenance as maintenance
from ops.config import HostSpec, load_environment
from ops.console import CHANGED, RecordingReporter
from ops.errors import SwarmError
from ops.oncall.doctor import CHECK_NAMES
from ops.oncall.swarm_checks import SWARM_CHECKS, ipvs, swarm_managers, swarm_nodes, swarm_replicas
from ops.swarm import SwarmState, parse_ipvs, parse_state
from ops.swarm.state import NodeStatus, ServiceStatus
from tests.fakes import FakeRunner

NODES = [
    {"ID": "n1", "Hostname": "m1", "Status": "Ready", "Availability": "Active", "ManagerStatus": "Leader"},
    {"ID": "n2", "Hostname": "w1", "Status": "Ready", "Availability": "Active", "ManagerStatus": ""},
    {"ID": "n3", "Hostname": "w2", "Status": "Down", "Availability": "Drain", "ManagerStatus": ""},
]
INSPECT = [
    {
        "Spec": {
            "Name": "demo_db",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Mounts": [
                        {"Type": "volume", "Source": "demo_data", "Target": "/data"},
                        {"Type": "bind", "Source": "/etc", "Target": "/etc"},
                        {"Type": "volume", "Source": "nfs", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}},
                    ]
                }
            },
        },
        "UpdateStatus": {"State": "rollback_completed", "Message": "rollback completed"},
    },
    {
        "Spec": {"Name": "demo_web", "TaskTemplate": {"Placement": {"Constraints": ["node.role==worker"]}}},
        "UpdateStatus": {"State": "paused", "Message": "update paused due to failure"},
    },
]
SERVICES = [
    {"Name": "demo_web", "Mode": "replicated", "Replicas": "1/3", "Image": "web:v2"},
    {"Name": "demo_db", "Mode": "replicated", "Replicas": "1/1 (max 1 per node)", "Image": "db:1"},
]
TASKS = [
    {"Name": "demo_web.1", "Node": "w1", "CurrentState": "Failed 5 seconds ago", "Error": '"task: non-zero exit (1)"'},
    {"Name": "demo_web.1", "Node": "m1", "CurrentState": "Failed 1 minute ago", "Error": '"older error"'},
    {"Name": "demo_db.1", "Node": "w1", "CurrentState": "Running 2 hours ago", "Error": ""},
]


def state_output(nodes: list[dict[str, str]] = NODES, services: list[dict[str, str]] = SERVICES) -> str:
    def lines(rows: list[dict[str, str]]) -> str:
        return "\n".join(json.dumps(row) for row in rows)

    sections = {
        "swarm": json.dumps({"LocalNodeState": "active", "ControlAvailable": True}),
        "nodes": lines(nodes),
        "services": lines(services),
        "inspect": json.dumps(INSPECT),
        "tasks": lines(TASKS),  # type: ignore[arg-type]
    }
    return "".join(f"\n@@{name}@@\n{body}" for name, body in sections.items()) + "\n@@end@@\n"


def test_the_state_has_nodes_replicas_updates_last_errors_and_local_volumes() -> None:
    state = parse_state("10.0.0.1", state_output())
    assert [(n.hostname, n.state, n.availability, n.manager) for n in state.nodes] == [
        ("m1", "Ready", "Active", True),
        ("w1", "Ready", "Active", False),
        ("w2", "Down", "Drain", False),
    ]
    db, web = state.services
    assert (web.name, web.running, web.desired, web.update_state) == ("demo_web", 1, 3, "paused")
    assert web.last_error == "task: non-zero exit (1) (on w1, failed 5 seconds ago)"
    assert web.constraints == ("node.role==worker",) and web.local_volumes == ()
    assert (db.running, db.desired, db.last_error) == (1, 1, "")
    assert [(v.source, v.target) for v in db.local_volumes] == [("demo_data", "/data")]


def test_the_doctor_judges_the_swarm() -> None:
    state = parse_state("10.0.0.1", state_output())
    state = SwarmState(
        state.manager, state.nodes, state.services, {"a": (False, "Could not get ipvs family"), "b": (True, "")}
    )
    found = {name: judge(state) for name, judge in SWARM_CHECKS}
    assert set(found) <= set(CHECK_NAMES)
    assert [(f.status, f.detail) for f in found["swarm-nodes"]] == [("fail", "1 of 3 nodes not ready: w2 down")]
    assert found["swarm-managers"][0].status == "pass"
    assert [(f.status, f.detail.split(":")[0]) for f in found["swarm-replicas"]] == [("fail", "demo_web runs 1/3")]
    assert [(f.status, f.detail) for f in found["swarm-updates"]] == [
        ("warn", "demo_db: its last update was rolled back (rollback completed)"),
        ("fail", "demo_web: update paused (update paused due to failure)"),
    ]
    volumes = found["swarm-volumes"]
    assert [f.status for f in volumes] == ["warn"] and "demo_db keeps demo_data" in volumes[0].detail
    assert "placement.constraints" in volumes[0].fix
    said = found["ipvs"][0]
    assert said.status == "warn" and "no IPVS on 1 of 2 nodes (a); dockerd: Could not get ipvs family" in said.detail
    assert "ingress routing mesh" in said.detail and "mode: host" in said.fix and "dnsrr" in said.fix


def node(hostname: str, manager_status: str = "", state: str = "Ready", availability: str = "Active") -> NodeStatus:
    return NodeStatus(hostname, hostname, state, availability, manager_status, "26.1")


def test_manager_quorum_and_even_counts() -> None:
    def judge(*statuses: str) -> tuple[str, str]:
        found = swarm_managers(SwarmState("m", tuple(node(f"m{i}", s) for i, s in enumerate(statuses))))[0]
        return found.status, found.detail

    assert judge("Leader", "Reachable", "Reachable") == ("pass", "3 of 3 managers reachable (survives losing 1)")
    assert judge("Leader", "Reachable", "Unreachable")[0] == "pass"
    assert judge("Leader", "Unreachable", "Unreachable")[0] == "fail"
    assert judge("Leader", "Reachable") == ("warn", "2 managers: an even count tolerates no more losses than 1")
    drained = swarm_nodes(SwarmState("m", (node("m1", "Leader"), node("w1", availability="Drain"))))[0]
    assert (drained.status, drained.detail) == ("warn", "2 nodes ready, not taking tasks: w1 drain")
    assert "swarm.activate" in drained.fix


def test_ipvs_read_from_the_node() -> None:
    assert parse_ipvs("ipvs=yes\n") == (True, "")
    assert parse_ipvs('ipvs=no\nipvs_log=level=warning msg="Could not get ipvs family information"\n') == (
        False,
        'level=warning msg="Could not get ipvs family information"',
    )
    full = SwarmState("m", (), (), {"a": (True, ""), "b": (True, "")})
    assert ipvs(full)[0].status == "pass"
    assert swarm_replicas(SwarmState("m", (), (ServiceStatus("s", "replicated", "i", 2, 2),)))[0].status == "pass"


# ---------------------------------------------------------------- drain and activate


class Swarm:
    """A manager's answers while a node drains: its tasks leave it, the service comes back to 3."""

    def __init__(self) -> None:
        self.drained = False
        self.polls = 0

    def runner(self) -> FakeRunner:
        swarm = self

        class Runner(FakeRunner):
            def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None):  # type: ignore[no-untyped-def]
                self.commands.append(command)
                if "ControlAvailable" in command:
                    return ok(command, "true\n")
                if "--availability drain" in command:
                    swarm.drained = True
                    return ok(command, "")
                if "docker node ps" in command:
                    here = not swarm.drained or swarm.polls < 1
                    return ok(command, "web.2|Running 1 hour ago\nweb.1|Shutdown 2 hours ago\n" if here else "")
                if "@@end@@" in command or "s end" in command:
                    swarm.polls += swarm.drained
                    running = 3 if not swarm.drained or swarm.polls >= 3 else 2
                    nodes = [{"ID": "n2", "Hostname": "w1", "Status": "Ready", "Availability": "Active"}]
                    services = [{"Name": "web", "Mode": "replicated", "Replicas": f"{running}/3"}]
                    return ok(command, state_output(nodes, services))
                return ok(command, "")

        return Runner()


def ok(command: str, stdout: str):  # type: ignore[no-untyped-def]
    from ops.transport import CommandResult

    return CommandResult(command, 0, stdout, "")


def swarm_env(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "s.env").write_text("HOSTS=10.0.0.1/manager,10.0.0.2\nORCHESTRATOR=swarm\n")
    return load_environment("s", tmp_path, {})


def test_drain_waits_until_the_tasks_run_elsewhere_with_progress(tmp_path: Path) -> None:
    runner = Swarm().runner()
    reporter = RecordingReporter()
    result = maintenance.set_availability(
        swarm_env(tmp_path), "w1", "drain", reporter, sleep=lambda s: None, runner_factory=lambda spec: runner
    )
    assert "docker node update --availability drain n2" in runner.commands
    assert result.summary_line().startswith("w1 is drained; 1 task(s) now run on other nodes")
    steps = [(event.status, event.detail) for event in reporter.events]
    assert steps[0] == (CHANGED, "availability drain")
    assert any("waiting for web 2/3" in detail for _, detail in steps[1:])


def test_drain_times_out_with_what_is_left_and_a_bad_name_is_one_line(tmp_path: Path) -> None:
    runner = Swarm().runner()
    env = swarm_env(tmp_path)
    ticks = iter(range(0, 1000, 100))
    with pytest.raises(SwarmError) as caught:
        maintenance.set_availability(
            env,
            "w1",
            "drain",
            RecordingReporter(),
            timeout=150,
            clock=lambda: float(next(ticks)),
            sleep=lambda s: None,
            runner_factory=lambda spec: runner,
        )
    assert "w1 drained, but after 150 s" in caught.value.one_line()
    assert "inv swarm.activate w1 undoes the drain" in caught.value.one_line()
    with pytest.raises(SwarmError) as caught:
        maintenance.set_availability(env, "nosuch", "active", RecordingReporter(), runner_factory=lambda spec: runner)
    assert caught.value.one_line() == "no host or node named 'nosuch' (name one of: 10.0.0.1, 10.0.0.2, w1)"


def test_a_compose_environment_has_no_swarm_to_drain(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "c.env").write_text("HOSTS=10.0.0.1\n")
    with pytest.raises(SwarmError) as caught:
        maintenance.drain(load_environment("c", tmp_path, {}), "10.0.0.1", RecordingReporter())
    assert "is not a swarm (ORCHESTRATOR=compose)" in caught.value.one_line()
    assert HostSpec("a", roles=("manager",)).manager
