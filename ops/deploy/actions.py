"""Deploy and rollback of an environment's stack: choose the orchestrator, prepare the release on
this machine, roll it out over the fleet. The orchestrators by name live here (compose today;
swarm joins as one module plus one line). No host work of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ops.config import Environment
from ops.console import Reporter
from ops.deploy.compose import ComposeOrchestrator
from ops.deploy.orchestrator import Orchestrator
from ops.deploy.prepare import prepare
from ops.deploy.rollout import DeployResult, roll_out
from ops.images import ImageDelivery, delivery_for
from ops.transport import Fleet

ORCHESTRATORS: dict[str, Callable[[Environment, Reporter, ImageDelivery], Orchestrator]] = {
    "compose": lambda env, reporter, delivery: ComposeOrchestrator(env, reporter, delivery=delivery),
}
DEFAULT_ORCHESTRATOR = "compose"  # until an ORCHESTRATOR setting chooses (swarm)


def orchestrator_for(env: Environment, reporter: Reporter, delivery: ImageDelivery | None = None) -> Orchestrator:
    """The environment's orchestrator, bringing images with delivery (default: IMAGE_SOURCE's)."""
    return ORCHESTRATORS[DEFAULT_ORCHESTRATOR](env, reporter, delivery or delivery_for(env))


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
            result.hosts = [orchestrator.plan_host(host, prepared) for host in fleet.hosts]
            return result
        result.hosts = roll_out(
            env,
            fleet,
            lambda host: orchestrator.deploy_host(host, prepared),
            reporter,
            action="deploy",
            version=options.version,
            reason=options.reason or f"deploy {options.version}",
            batch=options.batch,
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
    with Fleet.connect(env, only=hosts) as fleet:
        result.hosts = roll_out(
            env,
            fleet,
            lambda host: orchestrator.rollback_host(host, to),
            reporter,
            action="rollback",
            version=to or "previous",
            reason=f"rollback to {to or 'previous'}",
            lock_wait=lock_wait,
        )
    result.seconds = time.monotonic() - started
    return result
