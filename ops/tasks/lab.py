"""`inv lab.*`: the local lab of Debian 13 hosts on 127.0.0.1."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, project_root

if TYPE_CHECKING:
    from invoke.context import Context

    from ops.lab import LabSpec


def _spec(name: str, hosts: int = 2, swarm: bool = False) -> LabSpec:
    from ops.lab import LabSpec

    return LabSpec(name=name, checkout=project_root(), hosts=hosts, swarm=swarm)


def up(c: Context, hosts: int = 2, name: str = "lab", swarm: bool = False, json: bool = False) -> None:
    """Start N local lab hosts (fresh Debian 13 servers with sshd) and write env/<name>.env;
    --swarm: the env says ORCHESTRATOR=swarm (host 1 the manager, the others workers)."""
    from ops.console import ConsoleReporter, console, print_json
    from ops.lab import lab_up

    started = time.monotonic()
    with ConsoleReporter(quiet=json) as reporter:
        lab_hosts = lab_up(_spec(name, hosts, swarm), reporter)
    if json:
        print_json([host.__dict__ for host in lab_hosts])
        return
    changed = reporter.count("changed")
    after = f"inv provision.{name} (forms the swarm)" if swarm else f"inv ops.status --env {name}"
    console().print(
        f"[bold]lab {name}:[/] {len(lab_hosts)} hosts up, {changed} changed "
        f"({time.monotonic() - started:.1f} s). Next: {after}"
    )


def status(c: Context, name: str = "lab", json: bool = False) -> None:
    """Show the lab's hosts as the local Docker engine sees them."""
    from rich.table import Table

    from ops.console import console, print_json
    from ops.lab import lab_status

    spec = _spec(name)
    lab_hosts = lab_status(spec)
    if json:
        print_json([host.__dict__ for host in lab_hosts])
        return
    table = Table(title=f"lab {name} ({spec.lab_id})")
    for column in ("host", "container", "state", "ssh", "http"):
        table.add_column(column)
    for host in lab_hosts:
        table.add_row(
            str(host.index), host.container, host.state, f"127.0.0.1:{host.ssh_port}", f"127.0.0.1:{host.http_port}"
        )
    console().print(table)
    running = sum(1 for host in lab_hosts if host.state == "running")
    console().print(f"{len(lab_hosts)} hosts, {running} running" if lab_hosts else "lab is not up: run inv lab.up")


def down(c: Context, name: str = "lab", purge: bool = False) -> None:
    """Stop the lab's hosts (lab.up resumes them); --purge removes hosts, volumes, keys and env file."""
    from ops.console import ConsoleReporter, console
    from ops.lab import lab_down

    with ConsoleReporter() as reporter:
        lab_down(_spec(name), reporter, purge=purge)
    console().print(f"lab {name}: {'purged' if purge else 'stopped'} ({reporter.count('changed')} changed)")


def engine(c: Context) -> None:
    """Install and start the local Docker engine when it is missing, and wait until it answers."""
    from ops.console import ConsoleReporter
    from ops.lab import ensure_engine

    ensure_engine(ConsoleReporter())


def collection() -> Collection:
    helps = {
        "hosts": "number of hosts (1-9)",
        "name": "lab name (default lab)",
        "purge": "remove everything",
        "swarm": "write ORCHESTRATOR=swarm: host 1 the manager, the others workers (the lab has no IPVS)",
    }
    return Collection(
        "lab", command(up, help=helps), command(status, help=helps), command(down, help=helps), command(engine)
    )
