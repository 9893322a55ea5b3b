"""The health gate through a fake host: healthy, starting then healthy, unhealthy (with its
output), exited, timed out. No SSH, no Docker; the clock and sleep are the test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import HostSpec, load_environment
from ops.deploy.health import ServiceHealth, health_timeout, wait_healthy
from ops.errors import HealthGateError
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL
from ops.stack.compose import Service, Stack
from ops.transport import Host
from tests.fakes import FakeClock, FakeContainer, FakeDocker, FakeRunner


def host_with(*containers: tuple[str, dict[str, object]]) -> tuple[Host, dict[str, FakeContainer]]:
    engine = FakeDocker()
    made = {}
    for service, state in containers:
        labels = {PROJECT_LABEL: "demo", SERVICE_LABEL: service}
        made[service] = engine.add(f"demo-{service}-1", labels, f"sha256:{service}", **state)  # type: ignore[arg-type]
    return Host(HostSpec("a"), FakeRunner(), docker_client=engine), made


def test_a_healthy_project_passes_at_once() -> None:
    host, _ = host_with(("web", {}), ("redis", {"health": None}))  # redis has no healthcheck: running is enough
    clock = FakeClock()
    report = wait_healthy(host, "demo", ["web", "redis"], timeout=60, clock=clock, sleep=clock.sleep)
    assert report == [ServiceHealth("redis", "running"), ServiceHealth("web", "healthy")]
    assert clock.sleeps == []


def test_the_gate_waits_for_a_starting_service() -> None:
    host, containers = host_with(("web", {"health": "starting"}))
    clock = FakeClock()
    clock.on_sleep = [lambda: None, lambda: setattr(containers["web"], "health", "healthy")]
    seen: list[list[str]] = []
    report = wait_healthy(
        host,
        "demo",
        ["web"],
        timeout=60,
        clock=clock,
        sleep=clock.sleep,
        on_progress=lambda states: seen.append([s.state for s in states]),
    )
    assert [service.state for service in report] == ["healthy"]
    assert seen == [["starting"], ["starting"], ["healthy"]]
    assert clock.sleeps == [0.5, 0.5]


def test_an_unhealthy_service_fails_the_gate_with_its_health_output_and_logs() -> None:
    host, _ = host_with(
        ("web", {"health": "unhealthy", "health_output": "curl: (7) Failed to connect", "log": "boot\nno db"}),
        ("redis", {}),
    )
    clock = FakeClock()
    with pytest.raises(HealthGateError) as raised:
        wait_healthy(host, "demo", ["web", "redis"], timeout=60, clock=clock, sleep=clock.sleep)
    assert raised.value.one_line() == (
        "a: service web (container demo-web-1) is unhealthy; last health output: curl: (7) Failed to connect"
    )
    failing = raised.value.service
    assert isinstance(failing, ServiceHealth)
    assert (failing.state, failing.logs) == ("unhealthy", "boot\nno db")
    assert clock.sleeps == []  # failed at once, no waiting out the timeout


def test_an_exited_container_fails_the_gate() -> None:
    host, _ = host_with(
        ("web", {"state": "exited", "health": None, "exit_code": 3, "log": "Traceback ...\nKeyError: 'REDIS_URL'"})
    )
    with pytest.raises(HealthGateError) as raised:
        wait_healthy(host, "demo", ["web"], timeout=60, sleep=lambda s: None)
    failing = raised.value.service
    assert isinstance(failing, ServiceHealth)
    assert failing.state == "exited" and "KeyError: 'REDIS_URL'" in failing.logs
    assert raised.value.one_line() == "a: service web (container demo-web-1) exited with code 3"


def test_an_oom_killed_container_says_so() -> None:
    host, _ = host_with(("web", {"state": "exited", "health": None, "exit_code": 137, "oom_killed": True}))
    with pytest.raises(HealthGateError) as raised:
        wait_healthy(host, "demo", ["web"], timeout=60, sleep=lambda s: None)
    assert raised.value.message == (
        "service web (container demo-web-1) exited with code 137 (OOM-killed: it ran out of its memory limit)"
    )


def test_a_service_still_starting_at_the_deadline_times_out() -> None:
    host, _ = host_with(("web", {"health": "starting", "health_output": "connection refused"}), ("redis", {}))
    clock = FakeClock()
    with pytest.raises(HealthGateError) as raised:
        wait_healthy(host, "demo", ["web", "redis"], timeout=10, clock=clock, sleep=clock.sleep)
    assert raised.value.one_line() == (
        "a: service web is still starting after the gate's 10 s; last health output: connection refused"
    )
    assert clock.now == 10 and len(clock.sleeps) == 20


def test_a_service_without_a_container_is_missing_until_the_deadline() -> None:
    host, _ = host_with(("redis", {}))
    clock = FakeClock()
    with pytest.raises(HealthGateError, match=r"service web has no container after the gate's 5 s"):
        wait_healthy(host, "demo", ["web", "redis"], timeout=5, clock=clock, sleep=clock.sleep)


def test_the_gate_gives_a_slow_starting_service_its_start_period(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "prod.env").write_text("HOSTS=a\nHEALTH_TIMEOUT=60\n")
    env = load_environment("prod", tmp_path, {})
    quick = Stack(tmp_path, ("compose.yaml",), {"web": Service("web", "w", False, start_period_s=10)})
    slow = Stack(tmp_path, ("compose.yaml",), {"db": Service("db", "d", False, start_period_s=90)})
    assert health_timeout(env, quick) == 60
    assert health_timeout(env, slow) == 120
