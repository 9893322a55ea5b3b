"""The swarm health gate: wait until every service of a stack runs its desired replicas of the
current spec, its update completed. Reads each service's UpdateStatus and its tasks from a manager's
engine, never the exit code of `docker stack deploy` (0 even after a service rolled back,
docker/cli#6752). A swarm reports a task with a health check running only once it is healthy, so a
running task is a healthy one. Never changes anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ops.deploy.health import ServiceHealth, container_health, last_health_output
from ops.errors import HealthGateError
from ops.host.labels import NODE_HOST_LABEL, STACK_LABEL
from ops.transport import Host
from ops.transport.docker import engine_calls

FAILED_UPDATES = ("paused", "rollback_started", "rollback_paused", "rollback_completed")
FAILED_TASKS = ("failed", "rejected")
CRASHES_TO_FAIL = 3  # new tasks of one service that failed: it crashes, whatever the restart policy

Snapshot = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (services, tasks) as the engine's API gives them


@dataclass(frozen=True)
class SwarmService:
    """One service of a stack during a rollout, as its manager sees it."""

    name: str  # without the stack's prefix
    desired: int
    running: int  # tasks of the current spec that run (healthy, when the service has a health check)
    update: str = ""  # UpdateStatus.State: updating | completed | paused | rollback_* | "" (never updated)
    message: str = ""  # UpdateStatus.Message
    error: str = ""  # what the most telling task started since the gate began says (task_error)
    failures: int = 0  # tasks started since the gate began that failed or were rejected

    @property
    def ok(self) -> bool:
        return self.running >= self.desired and self.update in ("", "completed") and self.desired > 0

    @property
    def failed(self) -> bool:
        return self.update in FAILED_UPDATES or self.failures >= CRASHES_TO_FAIL

    def describe(self) -> str:
        state = self.update or "created"
        error = f": {self.error}" if self.error else ""
        return f"{self.running}/{self.desired} running, update {state}{error}"


def short_name(service: Mapping[str, Any], stack: str) -> str:
    name = str(service["Spec"]["Name"])
    return name.removeprefix(f"{stack}_")


def _image(spec: Mapping[str, Any]) -> str:
    return str(((spec.get("TaskTemplate") or spec).get("ContainerSpec") or {}).get("Image", ""))


def service_states(
    stack: str, services: list[dict[str, Any]], tasks: list[dict[str, Any]], known: set[str]
) -> list[SwarmService]:
    """Each service's state from the engine's service and task lists; known: the IDs of the tasks
    that existed before the gate began (their failures belong to an earlier rollout)."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_service.setdefault(str(task.get("ServiceID")), []).append(task)
    states = []
    for service in services:
        spec = service["Spec"]
        image = _image(spec)
        own = by_service.get(str(service["ID"]), [])
        current = [t for t in own if t.get("DesiredState") == "running" and _image(t.get("Spec") or {}) == image]
        running = sum(1 for t in current if (t.get("Status") or {}).get("State") == "running")
        if "Replicated" in (spec.get("Mode") or {}):
            desired = int(spec["Mode"]["Replicated"].get("Replicas", 1))
        else:  # global: one per eligible node, as the scheduler made them
            desired = max(1, len(current))
        new = [t for t in own if str(t.get("ID")) not in known]
        failed = [t for t in new if (t.get("Status") or {}).get("State") in FAILED_TASKS]
        status = service.get("UpdateStatus") or {}
        states.append(
            SwarmService(
                short_name(service, stack),
                desired,
                running,
                str(status.get("State") or ""),
                str(status.get("Message") or ""),
                task_error(new, failed_image(service)),
                len(failed),
            )
        )
    return sorted(states, key=lambda state: state.name)


def failed_image(service: Mapping[str, Any]) -> str:
    """The image of the service's update that failed: a rolled-back update's is in PreviousSpec
    (the spec is the old one again), a paused or running one's in the spec."""
    state = str((service.get("UpdateStatus") or {}).get("State") or "")
    return _image(service.get("PreviousSpec") or {}) if state.startswith("rollback") else _image(service["Spec"])


def most_telling(tasks: list[dict[str, Any]], image: str) -> dict[str, Any]:
    """Of a service's ended tasks, the one that says most about a failed update: one with an error,
    then one that ran the failing image, then one that had a container (a task cancelled before it
    started, or an old one the rollback stopped, says nothing), the newest of equals."""

    def rank(task: dict[str, Any]) -> tuple[bool, bool, bool, str]:
        status = task.get("Status") or {}
        return (
            bool(status.get("Err")),
            _image(task.get("Spec") or {}) == image,
            bool((status.get("ContainerStatus") or {}).get("ContainerID")),
            str(status.get("Timestamp")),
        )

    return max(tasks, key=rank)


def task_error(tasks: list[dict[str, Any]], image: str) -> str:
    """What went wrong with the most telling of tasks that failed or ended: its error, or (a task a
    swarm stopped because its health check failed ends with no error) how it ended."""
    ended = [t for t in tasks if t.get("DesiredState") != "running" or (t.get("Status") or {}).get("Err")]
    if not ended:
        return ""
    telling = most_telling(ended, image)
    status = telling.get("Status") or {}
    if status.get("Err"):
        return str(status["Err"])
    state = status.get("State", "")
    return f"its new task {str(telling.get('ID'))[:12]} was stopped before it was healthy ({state})"


def read_stack(host: Host, stack: str) -> Snapshot:
    """The stack's services and their tasks, from the manager's engine in two API calls."""
    api = host.docker().api
    services = list(api.services(filters={"label": f"{STACK_LABEL}={stack}"}))
    if not services:
        return [], []
    tasks = list(api.tasks(filters={"service": [str(service["ID"]) for service in services]}))
    return services, tasks


def gate_failure(where: str, service: SwarmService, what: str) -> HealthGateError:
    hint = service.message if service.message and service.message not in what else "inv ops.logs " + service.name
    error = HealthGateError(f"service {service.name} {what}", where=where, hint=hint)
    error.service = ServiceHealth(service.name, "unhealthy", service.error)
    return error


def wait_converged(
    read: Callable[[], Snapshot],
    stack: str,
    wanted: Iterable[str],
    *,
    where: str,
    timeout: float,
    known: set[str],
    on_progress: Callable[[list[SwarmService]], None] | None = None,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SwarmService]:
    """Block until every wanted service runs its desired replicas of its current spec with its
    update completed; raise HealthGateError naming the first failing service and its task error."""
    names = sorted(wanted)
    deadline = clock() + timeout
    while True:
        services, tasks = read()
        states = {state.name: state for state in service_states(stack, services, tasks, known)}
        report = [states.get(name) or SwarmService(name, 1, 0, error="no such service in the stack") for name in names]
        if on_progress:
            on_progress(report)
        failed = [state for state in report if state.failed]
        if failed:
            first = failed[0]
            what = (
                f"failed its update: {first.error or first.message}"
                if first.update
                else f"keeps failing: {first.error}"
            )
            raise gate_failure(where, first, what)
        if all(state.ok for state in report):
            return report
        if clock() >= deadline:
            waiting = next(state for state in report if not state.ok)
            raise gate_failure(where, waiting, f"not running after {timeout:.0f} s ({waiting.describe()})")
        sleep(interval)


def task_ids(snapshot: Snapshot) -> set[str]:
    return {str(task.get("ID")) for task in snapshot[1]}


def failed_task_evidence(leader: Host, hosts: Iterable[Host], stack: str, service: str) -> ServiceHealth | None:
    """What the most telling stopped task of a service (most_telling) left on the node that ran it:
    its last health output or exit code, and its last log lines (the gate only sees the manager's
    view). None when no stopped task has a container, or its node is none of hosts (found by its
    host label)."""
    services, tasks = read_stack(leader, stack)
    own = [item for item in services if short_name(item, stack) == service]
    ids = {str(item["ID"]) for item in own}
    ended = [
        task
        for task in tasks
        if str(task.get("ServiceID")) in ids
        and (task.get("Status") or {}).get("State") != "running"
        and ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    ]
    if not ended:
        return None
    telling = most_telling(ended, failed_image(own[0]))
    container = str(telling["Status"]["ContainerStatus"]["ContainerID"])
    node = leader.docker().api.inspect_node(str(telling.get("NodeID")))
    name = str(((node.get("Spec") or {}).get("Labels") or {}).get(NODE_HOST_LABEL, ""))
    host = next((host for host in hosts if host.name == name), None)
    if host is None:
        return None
    # A stopped container: container_health gives its exit code and logs, and the health output
    # is read even so (the probe that failed is why the swarm stopped it).
    with engine_calls(host.name, "reading the failed task's container"):
        stopped = host.docker().containers.get(container)
        found = container_health(service, stopped)
    output = last_health_output(stopped.attrs.get("State", {}))
    return replace(
        found,
        state="unhealthy" if output else found.state,
        health_output=output,
        exit_code=None if output else found.exit_code,
        container=container[:12],
        node=host.name,
    )
