"""The swarm orchestrator's pure parts: which host deploys, how long the gate waits, what goes to the
managers, and that ORCHESTRATOR chooses it (and refuses --host, a swarm deploys as a whole)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ops.config import Environment, HostSpec, load_environment
from ops.console import RecordingReporter
from ops.deploy import DeployOptions, deploy
from ops.deploy.actions import orchestrator_for
from ops.deploy.stackfile import STACK_FILE, StackFile
from ops.deploy.swarm import SwarmOrchestrator, _stack_archive, env_values, gate_timeout, managers
from ops.errors import DeployError
from ops.transport import Host
from tests.fakes import FakeRunner


def swarm_env(tmp_path: Path, extra: str = "") -> Environment:
    (tmp_path / "env").mkdir(exist_ok=True)
    (tmp_path / "env" / "prod.env").write_text(f"HOSTS=m1/manager w1 w2\nORCHESTRATOR=swarm\n{extra}")
    return load_environment("prod", tmp_path, {})


def test_orchestrator_swarm_chooses_the_swarm_orchestrator(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    assert isinstance(orchestrator_for(env, RecordingReporter()), SwarmOrchestrator)


def test_a_swarm_deploy_to_some_hosts_is_refused_before_anything_runs(tmp_path: Path) -> None:
    env = swarm_env(tmp_path)
    with pytest.raises(DeployError, match="a swarm deploys to all of its nodes at once"):
        deploy(env, RecordingReporter(), DeployOptions(version="v2", hosts=["w1"]))


def test_the_first_manager_deploys() -> None:
    hosts = [Host(HostSpec(name, roles=roles), FakeRunner()) for name, roles in (("w1", ()), ("m1", ("manager",)))]
    assert [host.name for host in managers(hosts)] == ["m1"]
    with pytest.raises(DeployError, match="no host has the manager role"):
        managers(hosts[:1])


def test_the_gate_waits_for_the_slowest_start_and_the_longest_monitor(tmp_path: Path) -> None:
    env = swarm_env(tmp_path, "HEALTH_TIMEOUT=60\n")
    spec = {
        "services": {
            "web": {"deploy": {"update_config": {"monitor": "10s"}}, "healthcheck": {"start_period": "5s"}},
            "db": {"deploy": {"update_config": {"monitor": "1m"}}, "healthcheck": {"start_period": "90s"}},
        }
    }
    assert gate_timeout(env, spec) == 90 + 30 + 60


def test_the_stack_file_and_its_secrets_reach_the_managers_readable_by_the_deploy_user_alone() -> None:
    stack = StackFile({"services": {}}, files={".opskit-secrets/db": b"x"})
    with tarfile.open(fileobj=io.BytesIO(_stack_archive(stack)), mode="r:gz") as tar:
        assert {member.name: member.mode for member in tar.getmembers()} == {
            STACK_FILE: 0o600,
            ".opskit-secrets/db": 0o600,
        }


def test_the_release_env_is_read_as_compose_reads_it() -> None:
    assert env_values('APP_VERSION="v2"\nEMPTY=""\nQUOTED="a b"\n') == {
        "APP_VERSION": "v2",
        "EMPTY": "",
        "QUOTED": "a b",
    }


def test_secrets_and_configs_no_service_uses_are_removed_and_counted_not_named(tmp_path: Path) -> None:
    env = swarm_env(tmp_path, "PROJECT=shop\n")
    runner = FakeRunner({"xargs -r docker $kind rm": (0, "k2h3\nq9x1\n")})
    reporter = RecordingReporter()
    SwarmOrchestrator(env, reporter, delivery=object())._remove_unused(Host(HostSpec("m1"), runner))  # type: ignore[arg-type]
    assert "label=com.docker.stack.namespace=shop" in runner.commands[0]
    assert [(event.step, event.detail) for event in reporter.events] == [
        ("secrets, configs", "removed 2 no service uses")
    ]
    quiet = RecordingReporter()
    SwarmOrchestrator(env, quiet, delivery=object())._remove_unused(Host(HostSpec("m1"), FakeRunner()))  # type: ignore[arg-type]
    assert quiet.events == []


def nodes_listing(*rows: tuple[str, str, str]) -> str:
    """`docker node inspect` lines as NODES prints them: labels JSON|state|role."""
    return "".join(f'{{"opskit.host":"{host}","opskit.role.x":"true"}}|{state}|{role}\n' for host, state, role in rows)


def test_a_worker_the_swarm_reports_down_is_left_out_and_any_other_silent_host_stops_the_deploy(
    tmp_path: Path,
) -> None:
    from ops.console import SKIPPED

    env = swarm_env(tmp_path)
    listing = nodes_listing(("m1", "ready", "manager"), ("w1", "ready", "worker"), ("w2", "down", "worker"))

    def fleet(silent: str) -> list[Host]:
        runners = {
            "m1": FakeRunner({"docker node inspect": (0, listing)}),
            "w1": FakeRunner(),
            "w2": FakeRunner(),
        }
        if silent:
            runners[silent] = FakeRunner(unreachable="connection refused")
        return [Host(spec, runners[spec.name]) for spec in env.hosts]

    reporter = RecordingReporter()
    orchestrator = SwarmOrchestrator(env, reporter, delivery=object())  # type: ignore[arg-type]
    assert [host.name for host in orchestrator.answering(fleet(""))] == ["m1", "w1", "w2"]
    assert reporter.events == []
    assert [host.name for host in orchestrator.answering(fleet("w2"))] == ["m1", "w1"]
    assert [(e.host, e.status, e.detail) for e in reporter.events] == [
        (
            "w2",
            SKIPPED,
            "down in the swarm: left out (its tasks run on the other nodes; once it is back, "
            "inv swarm.activate w2 --env prod brings it this release's images)",
        )
    ]
    with pytest.raises(DeployError, match=r"does not answer .* and the swarm does not report it as a down worker"):
        orchestrator.answering(fleet("w1"))  # the swarm still counts it ready: a partition, not a dead node
    with pytest.raises(DeployError, match="no manager answers"):
        orchestrator.answering(fleet("m1"))
