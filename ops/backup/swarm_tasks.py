"""A swarm stack's tasks around a restore: scaled to 0 through a manager while their volume is
replaced on its node (a stopped task's container would be replaced by the swarm at once), scaled
back afterwards, and checked to have come back on that node (a local volume exists on one node).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ops.backup.model import ContainerFact
from ops.console import CHANGED, Reporter
from ops.deploy.swarm_gate import read_stack, wait_converged
from ops.errors import BackupError
from ops.host.labels import STACK_LABEL, SWARM_SERVICE_LABEL
from ops.transport import Host


def swarm_services(users: list[ContainerFact]) -> list[str]:
    """The swarm services (stack_service) of the running containers among users."""
    return sorted({c.labels[SWARM_SERVICE_LABEL] for c in users if c.running and c.labels.get(STACK_LABEL)})


def _replicas(manager: Host, service: str) -> int:
    mode = manager.run(
        f"docker service inspect --format '{{{{if .Spec.Mode.Replicated}}}}{{{{.Spec.Mode.Replicated.Replicas}}}}"
        f"{{{{else}}}}global{{{{end}}}}' {shlex.quote(service)}"
    ).stdout.strip()
    if not mode.isdigit():
        raise BackupError(
            f"service {service} runs on every node (global): it cannot be stopped for a restore",
            hint="restore its volume by hand, or make it a replicated service placed on one node",
        )
    return int(mode)


def _wait_gone(host: Host, services: list[str], timeout: float) -> None:
    """Until no container of services runs on host."""
    listing = "; ".join(f"docker ps -q --filter label={SWARM_SERVICE_LABEL}={shlex.quote(s)}" for s in services)
    deadline = time.monotonic() + timeout
    while host.run(listing).stdout.strip():
        if time.monotonic() >= deadline:
            raise BackupError(f"the tasks of {', '.join(services)} did not stop in {timeout:.0f} s", where=host.name)
        time.sleep(0.5)


@contextmanager
def scaled_down(
    manager: Host, host: Host, stack: str, services: list[str], reporter: Reporter, timeout: float
) -> Iterator[None]:
    """services (stack_service) scaled to 0 until the block ends, then back to their replicas
    (whatever happened); then running again, on host."""
    replicas = {service: _replicas(manager, service) for service in services}
    manager.run("docker service scale -d " + " ".join(f"{shlex.quote(s)}=0" for s in services) + " >/dev/null")
    reporter.step(host.name, "stop", CHANGED, f"scaled {', '.join(services)} to 0")
    try:
        _wait_gone(host, services, timeout)
        yield
    finally:
        wanted = " ".join(f"{shlex.quote(s)}={n}" for s, n in replicas.items())
        manager.run(f"docker service scale -d {wanted} >/dev/null", check=False)
        reporter.step(host.name, "start", CHANGED, f"scaled {', '.join(services)} back")
    wait_converged(
        lambda: read_stack(manager, stack),
        stack,
        [service.removeprefix(f"{stack}_") for service in services],
        where=manager.name,
        timeout=timeout,
        known=set(),
    )
    placed = manager.run(
        "docker service ps --filter desired-state=running --format '{{.Node}}' " + " ".join(map(shlex.quote, services))
    ).stdout.split()
    hostname = host.run("docker info --format '{{.Name}}'").stdout.strip()
    if any(name != hostname for name in placed):
        raise BackupError(
            f"{', '.join(services)} came back on node {', '.join(sorted(set(placed)))}, not on {hostname} where the "
            "restored volume is",
            hint="place the service on one node (deploy.placement.constraints), then restore again",
        )
