"""`inv ops.*`: what on-call people look at first."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from invoke.collection import Collection
from invoke.exceptions import Exit

from ops.tasks.base import command, load_env

if TYPE_CHECKING:
    from invoke.context import Context


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(count)


def status(c: Context, env: str | None = None, host: str | None = None, json: bool = False) -> None:
    """A table of the environment's hosts: reachable, OS, kernel, Docker, Compose, containers, disk."""
    from rich.table import Table

    from ops.console import console, print_json
    from ops.status import environment_status

    started = time.monotonic()
    environment = load_env(c, env)
    statuses = environment_status(environment, only=[host] if host else None)
    unreachable = [s for s in statuses if not s.reachable]
    if json:
        print_json({"environment": environment.name, "hosts": [s.as_dict() for s in statuses]})
    else:
        table = Table(title=f"environment {environment.name}")
        for column in ("host", "reachable", "OS", "kernel", "docker", "compose", "containers", "free /", "free docker"):
            table.add_column(column)
        for s in statuses:
            if not s.reachable:
                table.add_row(s.host, "[red]no[/]", f"[red]{s.error}[/]", *[""] * 6)
                continue
            containers = f"{s.containers_running} running"
            if s.containers_unhealthy:
                containers += f", [red]{s.containers_unhealthy} unhealthy[/]"
            table.add_row(
                s.host,
                f"[green]yes[/] ({s.login})",
                s.os,
                s.kernel,
                s.docker,
                s.compose,
                containers,
                _size(s.root_free_bytes),
                _size(s.docker_free_bytes),
            )
        console().print(table)
        console().print(
            f"{len(statuses)} hosts: {len(statuses) - len(unreachable)} reachable, "
            f"{len(unreachable)} unreachable ({time.monotonic() - started:.1f} s)"
        )
    if unreachable:
        raise Exit(code=1)


def collection() -> Collection:
    return Collection("ops", command(status, help={"host": "only this host (host:port)"}))
