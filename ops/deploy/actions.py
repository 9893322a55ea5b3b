"""Deploy and rollback of an environment's stack: choose the orchestrator, prepare the release on
this machine, roll it out over the fleet. The orchestrators by name live here (compose: per host;
swarm: the whole cluster at once). No host work of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ops.config import Environment
from ops.console import Reporter
from ops.deploy.compose import ComposeOrchestrator
from ops.deploy.orchestrator import ClusterOrchestrator, Orchestrator
from ops.deploy.prepare import prepare
from ops.deploy.rollout import ClusterWork, DeployResult, in_batches, roll_out_cluster
from ops.deploy.swarm import SwarmOrchestrator
from ops.errors import DeployError
from ops.images import ImageDelivery, delivery_for
from ops.transport import Fleet

AnyOrchestrator = Orchestrator | ClusterOrchestrator
ORCHESTRATORS: dict[str, Callable[[Environment, Reporter, ImageDelivery], AnyOrchestrator]] = {
    "compose": lambda env, reporter, delivery: ComposeOrchestrator(env, reporter, delivery=delivery),
    "swarm": lambda env, reporter, delivery: SwarmOrchestrator(env, reporter, delivery=delivery),
}


def orchestrator_for(env: Environment, reporter: Reporter, delivery: ImageDelivery | None = None) -> AnyOrchestrator:
    """The environment's orchestrator (ORCHESTRATOR), bringing images with delivery (default: IMAGE_SOURCE's)."""
    return ORCHESTRATORS[env.orchestrator.orchestrator](env, reporter, delivery or delivery_for(env))


def _whole_cluster(orchestrator: AnyOrchestrator, hosts: list[str] | None) -> None:
    if isinstance(orchestrator, ClusterOrchestrator) and hosts:
        raise DeployError(
            "a swarm deploys to all of its nodes at once: --host does not apply",
            hint="leave out --host; drain a node with inv swarm.drain to keep work off it",
        )


@dataclass(frozen=True)
class DeployOptions:
    version: str = "v1"
    hosts: list[str] | None = None
    batch: int = 0  # 0: all hosts at once
    dry_run: bool = False
    lock_wait: float = 0.0
    reason: str = ""


def deploy(env: Environment, reporter: Reporter, options: DeployOptions) -> DeployResult:
    """Deploy options.version of the environment's stack to its hosts."""
    started = time.monotonic()
    result = DeployResult("deploy", env.name, options.version)
    # One delivery for the whole deploy: what prepare pushed is not pushed again for the hosts.
    delivery = delivery_for(env)
    orchestrator = orchestrator_for(env, reporter, delivery)
    _whole_cluster(orchestrator, options.hosts)
    with Fleet.connect(env, only=options.hosts) as fleet:
        # The SSH handshakes run while the stack is checked (and built) here; no host changes
        # before the stack passed.
        with ThreadPoolExecutor(max_workers=1) as background:
            opening = background.submit(fleet.open_connections)
            try:
                prepared = prepare(env, reporter, options.version, build=not options.dry_run, delivery=delivery)
            finally:
                opening.result()
        if options.dry_run:
            if isinstance(orchestrator, ClusterOrchestrator):
                result.hosts = orchestrator.plan_cluster(fleet.hosts, prepared)
            else:
                result.hosts = [orchestrator.plan_host(host, prepared) for host in fleet.hosts]
            return result
        if isinstance(orchestrator, ClusterOrchestrator):
            cluster = orchestrator
            fleet = Fleet(cluster.answering(fleet.hosts), env.parallel)
            work: ClusterWork = lambda hosts: cluster.deploy_cluster(hosts, prepared)  # noqa: E731
        else:
            per_host = orchestrator
            work = in_batches(env, fleet, options.batch, lambda host: per_host.deploy_host(host, prepared), reporter)
        result.hosts = roll_out_cluster(
            env,
            fleet,
            work,
            reporter,
            action="deploy",
            version=options.version,
            reason=options.reason or f"deploy {options.version}",
            lock_wait=options.lock_wait,
        )
    result.seconds = time.monotonic() - started
    return result


def rollback(
    env: Environment, reporter: Reporter, *, to: str | None = None, hosts: list[str] | None = None, lock_wait: float = 0
) -> DeployResult:
    """Go back to the previous (or named) release with its own compose files, env and images."""
    started = time.monotonic()
    result = DeployResult("rollback", env.name, to or "previous")
    orchestrator = orchestrator_for(env, reporter)
    _whole_cluster(orchestrator, hosts)
    with Fleet.connect(env, only=hosts) as fleet:
        if isinstance(orchestrator, ClusterOrchestrator):
            cluster = orchestrator
            fleet = Fleet(cluster.answering(fleet.hosts), env.parallel)
            work: ClusterWork = lambda all_hosts: cluster.rollback_cluster(all_hosts, to)  # noqa: E731
        else:
            per_host = orchestrator
            work = in_batches(env, fleet, 0, lambda host: per_host.rollback_host(host, to), reporter, "rollback")
        result.hosts = roll_out_cluster(
            env,
            fleet,
            work,
            reporter,
            action="rollback",
            version=to or "previous",
            reason=f"rollback to {to or 'previous'}",
            lock_wait=lock_wait,
        )
    result.seconds = time.monotonic() - started
    return result
