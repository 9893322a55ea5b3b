"""Node maintenance: drain a node (its tasks start elsewhere, and we wait until they run there) or
make it active again (with the current release's images it lacks). Never prints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ops.config import Environment, HostSpec
from ops.console import CHANGED, OK, SKIPPED, Reporter
from ops.deploy.releases import ReleaseStore
from ops.errors import SwarmError
from ops.images import delivery_for
from ops.images.registry import RegistryImages
from ops.swarm.state import RunnerFactory, SwarmState, manager_host, node_host, read_state
from ops.transport import Host
from ops.transport.shell import q

DRAIN_TIMEOUT = 300.0
AVAILABILITIES = ("active", "drain", "pause")


@dataclass(frozen=True)
class MaintenanceResult:
    """What a drain or an activate did: the node, its availability now, and how long it took."""

    node: str
    availability: str
    changed: bool
    tasks_moved: int
    seconds: float

    def summary_line(self) -> str:
        word = {"drain": "drained", "pause": "paused"}.get(self.availability, self.availability)
        what = f"{self.node} is {word}" + ("" if self.changed else " (it already was)")
        if self.availability == "drain":
            what += f"; {self.tasks_moved} task(s) now run on other nodes"
        return f"{what} ({self.seconds:.1f} s)"


def host_named(env: Environment, name: str) -> HostSpec | None:
    """The host of HOSTS that name names (as HOSTS spells it, or its address); None for any other name."""
    return next((spec for spec in env.hosts if name in (spec.name, spec.address) and name), None)


def resolve_node(env: Environment, state: SwarmState, name: str, runner_factory: RunnerFactory | None = None) -> str:
    """The node ID for name: a host as HOSTS names it, a node's hostname or its ID."""
    spec = host_named(env, name)
    if spec is not None:
        host = node_host(env, spec, runner_factory)
        try:
            node_id = host.run("docker info --format '{{.Swarm.NodeID}}'", timeout=30).stdout.strip()
        finally:
            host.close()
        if node_id and state.node(node_id):
            return node_id
        raise SwarmError(f"host {name} is not a node of the swarm", hint=f"inv provision.{env.name} joins it")
    node = state.node(name)
    if node is None:
        known = ", ".join([spec.name for spec in env.hosts] + [node.hostname for node in state.nodes])
        raise SwarmError(f"no host or node named {name!r}", hint=f"name one of: {known}")
    return node.id


def _running_here(manager: Host, node_id: str) -> dict[str, int]:
    """Tasks starting or running on the node, by service."""
    lines = manager.run(
        f"docker node ps {q(node_id)} --format '{{{{.Name}}}}|{{{{.CurrentState}}}}'", timeout=30
    ).stdout.splitlines()
    counts: dict[str, int] = {}
    for line in lines:
        name, _, current = line.partition("|")
        if re.match(r"^(Running|Starting|Preparing|Assigned|Ready)", current):
            service = name.strip().lstrip("\\_ ").rsplit(".", 1)[0]
            counts[service] = counts.get(service, 0) + 1
    return counts


def _waiting_for(state: SwarmState, before: dict[str, int], moving: dict[str, int]) -> list[str]:
    """Replicated services that had tasks on the node and run fewer than before (at most desired)."""
    short = []
    for service in state.services:
        if service.name in moving and service.mode == "replicated":
            target = min(before.get(service.name, 0), service.desired)
            if service.running < target:
                short.append(f"{service.name} {service.running}/{target}")
    return short


def set_availability(
    env: Environment,
    name: str,
    availability: str,
    reporter: Reporter,
    *,
    timeout: float = DRAIN_TIMEOUT,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    runner_factory: RunnerFactory | None = None,
) -> MaintenanceResult:
    """Set a node's availability on a manager. A drain waits until no task runs on the node and
    each replicated service that had tasks there runs as many as before (at most its desired
    count) elsewhere; past timeout it raises SwarmError (the node stays drained: activate undoes it)."""
    if availability not in AVAILABILITIES:
        raise SwarmError(f"availability {availability!r} is not one of {', '.join(AVAILABILITIES)}")
    started = clock()
    with manager_host(env, runner_factory) as manager:
        state = read_state(manager)
        node_id = resolve_node(env, state, name, runner_factory)
        node = state.node(node_id)
        label = node.hostname if node else name
        changed = node is None or node.availability.lower() != availability
        moving = _running_here(manager, node_id) if availability == "drain" else {}
        before = {service.name: service.running for service in state.services}
        if changed:
            manager.run(f"docker node update --availability {availability} {q(node_id)}", timeout=60)
        reporter.step(label, availability, CHANGED if changed else OK, f"availability {availability}")
        shown = ""
        while moving:
            here = sum(_running_here(manager, node_id).values())
            short = _waiting_for(read_state(manager), before, moving)
            if not here and not short:
                break
            progress = f"{here} task(s) still on {label}" + (f"; waiting for {', '.join(short)}" if short else "")
            if progress != shown:
                reporter.step(label, "drain", OK, progress)
                shown = progress
            if clock() - started > timeout:
                raise SwarmError(
                    f"{label} drained, but after {timeout:.0f} s {progress}",
                    where=manager.name,
                    hint="see inv ops.status (a constraint or a lack of room may pin them); "
                    f"inv swarm.activate {name} undoes the drain",
                )
            sleep(poll)
    return MaintenanceResult(label, availability, changed, sum(moving.values()), clock() - started)


def drain(env: Environment, name: str, reporter: Reporter, *, timeout: float = DRAIN_TIMEOUT) -> MaintenanceResult:
    """Drain a node and wait until its tasks run elsewhere (see set_availability)."""
    return set_availability(env, name, "drain", reporter, timeout=timeout)


def activate(env: Environment, name: str, reporter: Reporter) -> MaintenanceResult:
    """Make a node active again: new and rescheduled tasks may land on it (running ones stay put).
    First it gets the current release's images it lacks, so those tasks can start there."""
    bring_current_images(env, name, reporter)
    return set_availability(env, name, "active", reporter)


def bring_current_images(
    env: Environment, name: str, reporter: Reporter, runner_factory: RunnerFactory | None = None
) -> int:
    """Pull the images the current release pins that the host lacks (it was down, or not yet a node,
    when that release was deployed; a deploy leaves out a node that is down); how many. A node named
    by hostname or ID rather than as HOSTS names it is not reached, and said so."""
    spec = host_named(env, name)
    if spec is None:
        reporter.step(name, "images", SKIPPED, "not named as in HOSTS: its images are not checked")
        return 0
    with manager_host(env, runner_factory) as manager:
        current = ReleaseStore(manager, env.project).current()
    delivery = delivery_for(env)
    if current is None or not current.pins or not isinstance(delivery, RegistryImages):
        return 0
    host = node_host(env, spec, runner_factory)
    try:
        lacked = delivery.bring_missing(host, current.pins, reporter)
    finally:
        host.close()
    if not lacked:
        reporter.step(spec.name, "images", OK, f"has those of {current.id}")
    return lacked
