"""`inv swarm.*`: node maintenance (drain, activate), and the swarm's tables for `inv ops.status`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, load_env

if TYPE_CHECKING:
    from invoke.context import Context

    from ops.swarm import SwarmState


def print_swarm(state: SwarmState) -> None:
    """The nodes and the services of a swarm, as ops.status shows them."""
    from rich.markup import escape
    from rich.table import Table

    from ops.console import console

    out = console()
    nodes = Table(title=f"swarm nodes (read on {state.manager})")
    for column in ("node", "state", "availability", "manager", "engine"):
        nodes.add_column(column)
    for node in state.nodes:
        ready = "green" if node.state.lower() == "ready" else "red"
        active = "green" if node.availability.lower() == "active" else "yellow"
        nodes.add_row(
            escape(node.hostname),
            f"[{ready}]{node.state}[/]",
            f"[{active}]{node.availability}[/]",
            node.manager_status or "-",
            node.engine,
        )
    out.print(nodes)
    if not state.services:
        out.print("[dim]no services in the swarm[/]")
        return
    services = Table(title="swarm services")
    for column in ("service", "mode", "replicas", "update", "last task error"):
        services.add_column(column)
    for service in state.services:
        color = "green" if service.running >= service.desired else "red"
        services.add_row(
            escape(service.name),
            service.mode,
            f"[{color}]{service.running}/{service.desired}[/]",
            service.update_state or "-",
            escape(service.last_error) or "-",
        )
    out.print(services)


def drain(c: Context, host: str, env: str | None = None, timeout: int = 300) -> None:
    """Drain a node for maintenance: its tasks start on the others; waits until they run there."""
    from ops.console import ConsoleReporter, console
    from ops.swarm import drain as drain_node

    environment = load_env(c, env)
    with ConsoleReporter() as reporter:
        result = drain_node(environment, host, reporter, timeout=float(timeout))
    console().print(result.summary_line())


def activate(c: Context, host: str, env: str | None = None) -> None:
    """Make a node active again (new and rescheduled tasks may land on it), after pulling the current
    release's images it lacks: run it for a node that was drained, or down during a deploy."""
    from ops.console import ConsoleReporter, console
    from ops.swarm import activate as activate_node

    environment = load_env(c, env)
    with ConsoleReporter() as reporter:
        result = activate_node(environment, host, reporter)
    console().print(result.summary_line())


def collection() -> Collection:
    helps = {
        "host": "the host as HOSTS names it (host:port), or the node's hostname",
        "timeout": "seconds to wait for the node's tasks to run elsewhere (default 300)",
    }
    return Collection("swarm", command(drain, help=helps), command(activate, help=helps))
