"""The health gate: wait until every service of a compose project is running and healthy.

Reads container state through the host's Docker SDK and never changes it. A container that turns
unhealthy or exits fails the gate at once (Docker itself ignores failures during a healthcheck's
start_period); the failure carries the last health output and log lines so a person sees why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ops.config import Environment
from ops.errors import HealthGateError
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL
from ops.stack.compose import Stack
from ops.transport import Host
from ops.transport.docker import engine_calls

LOG_LINES = 15  # of a failing container, shown with the failure


@dataclass(frozen=True)
class ServiceHealth:
    service: str
    state: str  # healthy | starting | unhealthy | exited | missing | running (no healthcheck)
    health_output: str = ""
    logs: str = ""
    container: str = ""  # the failing container's name
    exit_code: int | None = None  # of an exited container
    oom_killed: bool = False
    node: str = ""  # the host the container ran on, when not the one reporting (a swarm task's node)

    @property
    def ok(self) -> bool:
        return self.state in ("healthy", "running")

    @property
    def failed(self) -> bool:
        return self.state in ("unhealthy", "exited", "dead", "restarting")

    def describe(self) -> str:
        """What is wrong with the service, as a person reads it: the exit code and OOM flag of an
        exited container, the last health output of an unhealthy one."""
        subject = f"service {self.service}" + (f" (container {self.container})" if self.container else "")
        if self.state in ("exited", "dead", "restarting"):
            verb = "restarts in a loop" if self.state == "restarting" else "exited"
            code = f" with code {self.exit_code}" if self.exit_code is not None else ""
            oom = " (OOM-killed: it ran out of its memory limit)" if self.oom_killed else ""
            return f"{subject} {verb}{code}{oom}"
        if self.state == "unhealthy":
            return f"{subject} is unhealthy; last health output: {_last(self.health_output) or 'none'}"
        if self.state == "missing":
            return f"{subject} has no container"
        return f"{subject} is {self.state}"


def _last(output: str, limit: int = 200) -> str:
    """The line of a health output that says what failed: its last (a traceback's error line)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][-limit:] if lines else ""


def last_health_output(state: Mapping[str, Any]) -> str:
    """The output of a container's newest health probe that ran (docker inspect's State). A probe
    the engine could not run at all (the container stopping) has exit code -1: the one before it
    says why the container was unhealthy."""
    log = (state.get("Health") or {}).get("Log") or []
    ran = [probe for probe in log if probe.get("ExitCode") != -1] or log
    return str(ran[-1].get("Output") or "").strip() if ran else ""


def _container_state(container: Any) -> tuple[str, str]:
    state = container.attrs.get("State", {})
    health = state.get("Health")
    status = state.get("Status", "missing")
    if status != "running":
        return ("restarting" if status == "restarting" else "exited" if status in ("exited", "dead") else status), ""
    if not health:
        return "running", ""
    return health.get("Status", "starting"), last_health_output(state)


def summary_state(summary: dict[str, Any]) -> str:
    """A container's state from the engine's list entry ("Up 5 s (healthy)"), with no inspect."""
    status = summary.get("State", "missing")
    if status != "running":
        return "restarting" if status == "restarting" else "exited" if status in ("exited", "dead") else status
    text = str(summary.get("Status", ""))
    for marker, state in (("(healthy)", "healthy"), ("(unhealthy)", "unhealthy"), ("(health: starting)", "starting")):
        if marker in text:
            return state
    return "running"


def project_containers(
    host: Host, project: str, container_filter: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The project's containers as the engine lists them (one API call, no per-container inspect)."""
    labels = [f"{PROJECT_LABEL}={project}", *(f"{k}={v}" for k, v in (container_filter or {}).items())]
    with engine_calls(host.name, "listing the project's containers"):
        return list(host.docker().api.containers(all=True, filters={"label": labels}))


def project_health(
    host: Host, project: str, services: Iterable[str], *, container_filter: dict[str, str] | None = None
) -> list[ServiceHealth]:
    """Each service's worst container state (a service with no container is 'missing').

    One list call when all is well; only a container that is not healthy is inspected, for its
    last health output and log lines."""
    with engine_calls(host.name, "checking the services' health"):
        return _project_health(host, project, services, container_filter)


def _project_health(
    host: Host, project: str, services: Iterable[str], container_filter: dict[str, str] | None
) -> list[ServiceHealth]:
    by_service: dict[str, list[dict[str, Any]]] = {}
    for summary in project_containers(host, project, container_filter):
        by_service.setdefault((summary.get("Labels") or {}).get(SERVICE_LABEL, ""), []).append(summary)
    rank = {"healthy": 0, "running": 0, "starting": 1, "created": 1, "missing": 2}
    report = []
    for service in sorted(services):
        summaries = by_service.get(service, [])
        if not summaries:
            report.append(ServiceHealth(service, "missing"))
            continue
        worst = max(summaries, key=lambda summary: rank.get(summary_state(summary), 3))
        state = summary_state(worst)
        if state in ("healthy", "running"):
            report.append(ServiceHealth(service, state))
            continue
        report.append(_inspect(host, service, worst["Id"]))
    return report


def _inspect(host: Host, service: str, container_id: str) -> ServiceHealth:
    return container_health(service, host.docker().containers.get(container_id))


def container_health(service: str, container: Any) -> ServiceHealth:
    """A container that is not healthy (a Docker SDK container, inspected): its state, last health
    output, exit code, OOM flag and last log lines."""
    state, output = _container_state(container)
    logs = "" if state == "starting" else container.logs(tail=LOG_LINES).decode(errors="replace").rstrip()
    facts = container.attrs.get("State", {})
    return ServiceHealth(
        service,
        state,
        output,
        logs,
        container=container.name,
        exit_code=facts.get("ExitCode") if state in ("exited", "dead", "restarting") else None,
        oom_killed=bool(facts.get("OOMKilled")),
    )


def wait_healthy(
    host: Host,
    project: str,
    services: Iterable[str],
    *,
    timeout: float,
    container_filter: dict[str, str] | None = None,
    on_progress: Callable[[list[ServiceHealth]], None] | None = None,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ServiceHealth]:
    """Block until every service is healthy; raise HealthGateError naming the failing service."""
    wanted = list(services)
    deadline = clock() + timeout
    while True:
        report = project_health(host, project, wanted, container_filter=container_filter)
        if on_progress:
            on_progress(report)
        failed = [service for service in report if service.failed]
        if failed:
            raise gate_error(host, failed[0], failed[0].describe())
        if all(service.ok for service in report):
            return report
        if clock() >= deadline:
            waiting = next(service for service in report if not service.ok)
            still = "has no container" if waiting.state == "missing" else f"is still {waiting.state}"
            said = f"; last health output: {_last(waiting.health_output)}" if waiting.health_output else ""
            raise gate_error(host, waiting, f"service {waiting.service} {still} after the gate's {timeout:.0f} s{said}")
        sleep(interval)


def gate_error(host: Host, service: ServiceHealth, message: str) -> HealthGateError:
    """The gate's failure: what failed and how; the service (with its log lines) rides along."""
    error = HealthGateError(message, where=host.name)
    error.service = service
    return error


def health_timeout(env: Environment, stack: Stack) -> float:
    """The gate's patience: HEALTH_TIMEOUT, or longer when a service's start_period needs it."""
    configured = env.deploy.health_timeout
    longest_start = max((service.start_period_s for service in stack.services.values()), default=0.0)
    return max(configured, longest_start + 30)
