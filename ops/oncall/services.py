"""A stack's services across hosts for on-call work: logs, restart, exec in their containers.

Containers are found by their labels on each host (compose's, or a swarm stack's on its tasks, on
whichever node runs them), so this works on whatever is running (also halfway through a swap). Restart waits for the service's health; nothing else changes.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ops.config import Environment, HostSpec
from ops.console import Reporter
from ops.deploy.health import wait_healthy
from ops.errors import HostError, OpsError
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL, STACK_LABEL, SWARM_SERVICE_LABEL, task_service
from ops.transport import Fleet, Host, Runner


class ServiceError(OpsError):
    """A service is unknown in the environment, or acting on it failed."""


@dataclass(frozen=True)
class Container:
    host: str
    id: str
    name: str
    service: str
    running: bool


def _containers(host: Host, project: str) -> list[Container]:
    """The project's containers on the host: compose's, and a swarm stack's running tasks (which a
    swarm names <stack>_<service>.<slot>.<task>), each once with its service's name."""
    labels = "|".join(f'{{{{.Label "{label}"}}}}' for label in (SERVICE_LABEL, STACK_LABEL, SWARM_SERVICE_LABEL))
    fmt = f"{{{{.ID}}}}|{{{{.Names}}}}|{labels}|{{{{.State}}}}"
    # A swarm's running tasks only: its exited ones are task history, replaced by the swarm itself
    # (restarting one by hand would start a second copy beside its replacement).
    listings = [
        f"docker ps -a --filter label={PROJECT_LABEL}={shlex.quote(project)} --format {shlex.quote(fmt)}",
        f"docker ps --filter label={STACK_LABEL}={shlex.quote(project)} --format {shlex.quote(fmt)}",
    ]
    result = host.run("; ".join(listings), timeout=30)
    found: dict[str, Container] = {}
    for line in result.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 6:
            continue
        container_id, name, compose_service, stack, swarm_service, state = parts
        service = (task_service(stack, swarm_service) if stack == project else "") or compose_service
        found[container_id] = Container(host.name, container_id, name, service, state == "running")
    return list(found.values())


def find_containers(fleet: Fleet, project: str, service: str) -> dict[str, list[Container]]:
    """host -> the service's containers there; ServiceError when no host knows the service."""
    result = fleet.map(lambda host: _containers(host, project))
    if result.failed and not any(outcome.value for outcome in result.outcomes):
        error = result.failed[0].error
        raise error or HostError("no host answered")
    services = sorted({c.service for outcome in result.outcomes for c in outcome.value or []})
    matched = {outcome.host: [c for c in outcome.value or [] if c.service == service] for outcome in result.outcomes}
    if not any(matched.values()):
        raise ServiceError(
            f"unknown service {service!r}: no container of it on any host of {project}",
            hint=f"services: {', '.join(services) or 'none (deploy first)'}",
        )
    return matched


@dataclass
class ExecResult:
    host: str
    container: str
    exit_code: int
    output: str


@dataclass
class RestartResult:
    restarted: list[str] = field(default_factory=list)  # host/container
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def restart_service(env: Environment, service: str, reporter: Reporter, *, timeout: float = 120) -> RestartResult:
    """Restart every container of service on every host, then wait until the service is healthy."""
    outcome = RestartResult()
    with Fleet.connect(env) as fleet:
        matched = find_containers(fleet, env.project, service)
        hosts = {host.name: host for host in fleet.hosts}
        lock = threading.Lock()

        def one(host: Host) -> None:
            containers = matched.get(host.name) or []
            if not containers:
                return
            ids = " ".join(c.id for c in containers)
            result = host.run(f"docker restart -t 10 {ids}", check=False, timeout=120)
            names = [f"{host.name}/{c.name}" for c in containers]
            if not result.ok:
                with lock:
                    outcome.failed.extend(names)
                reporter.step(host.name, f"restart {service}", "failed", (result.stderr or result.stdout).strip())
                return
            try:
                wait_healthy(host, env.project, [service], timeout=timeout)
            except OpsError as error:
                with lock:
                    outcome.failed.extend(names)
                reporter.step(host.name, f"restart {service}", "failed", error.message)
                return
            with lock:
                outcome.restarted.extend(names)
            reporter.step(host.name, f"restart {service}", "changed", f"{len(containers)} container(s), healthy")

        Fleet([hosts[name] for name in matched if matched[name]], env.parallel).map(one)
    return outcome


def exec_in_service(
    env: Environment, service: str, command: list[str], *, on_result: Callable[[ExecResult], None] | None = None
) -> list[ExecResult]:
    """Run command in every running container of service (on every host); results per container."""
    if not command:
        raise ServiceError("no command given", hint="inv ops.exec SERVICE -- CMD [ARGS]")
    quoted = " ".join(shlex.quote(word) for word in command)
    results: list[ExecResult] = []
    with Fleet.connect(env) as fleet:
        matched = find_containers(fleet, env.project, service)
        running = {name: [c for c in found if c.running] for name, found in matched.items()}
        if not any(running.values()):
            raise ServiceError(f"service {service!r} has no running container", hint=f"inv ops.restart {service}")
        lock = threading.Lock()

        def one(host: Host) -> None:
            for container in running.get(host.name, []):
                result = host.run(f"docker exec {container.id} {quoted}", check=False, timeout=600)
                item = ExecResult(host.name, container.name, result.exit_code, result.stdout + result.stderr)
                with lock:
                    results.append(item)
                    if on_result:
                        on_result(item)

        fleet.map(one)
    return results


def _log_command(container: Container, since: str | None, tail: int | None, follow: bool) -> str:
    flags = ["--timestamps"]
    if since:
        flags.append(f"--since {shlex.quote(since)}")
    if tail is not None:
        flags.append(f"--tail {int(tail)}")
    if follow:
        flags.append("--follow")
    return f"docker logs {' '.join(flags)} {container.id} 2>&1"


def service_logs(
    env: Environment,
    service: str,
    on_line: Callable[[str, str, str], None],
    *,
    since: str | None = None,
    tail: int | None = 100,
    follow: bool = False,
    grep: str | None = None,
    stop: threading.Event | None = None,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> int:
    """Feed on_line(host, container, line) with the service's logs from every host; lines fed.

    Without follow, each container's lines come in one block; with follow, as they arrive, until
    stop is set (or the containers end).
    """
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as error:
        raise ServiceError(f"--grep {grep!r} is not a valid regex: {error}") from None
    count = 0
    count_lock = threading.Lock()
    stop = stop or threading.Event()

    def emit(container: Container, line: str) -> None:
        nonlocal count
        if pattern and not pattern.search(line):
            return
        with count_lock:
            count += 1
            on_line(container.host, container.name, line)

    with Fleet.connect(env, runner_factory=runner_factory) as fleet:
        matched = find_containers(fleet, env.project, service)

        def one(host: Host) -> None:
            for container in matched.get(host.name, []):
                if not follow:
                    result = host.run(_log_command(container, since, tail, False), check=False, timeout=120)
                    for line in result.stdout.splitlines():
                        emit(container, line)

        if not follow:
            fleet.map(one)
            return count

        hosts = {host.name: host for host in fleet.hosts}
        threads = []
        for host_name, containers in matched.items():
            for container in containers:
                thread = threading.Thread(
                    target=_follow,
                    args=(hosts[host_name], _log_command(container, since, tail, True), container, emit, stop),
                    daemon=True,
                )
                thread.start()
                threads.append(thread)
        try:
            while any(thread.is_alive() for thread in threads) and not stop.is_set():
                stop.wait(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=2)
    return count


def _follow(
    host: Host, command: str, container: Container, emit: Callable[[Container, str], None], stop: threading.Event
) -> None:
    """Stream one container's log lines (the runner's follow) until stop is set."""
    host.follow(command, lambda line: emit(container, line), stop=stop)
