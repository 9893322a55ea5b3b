"""`inv hosts.*`: host keys of an environment's servers."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, failed, load_env

if TYPE_CHECKING:
    from invoke.context import Context


def trust(c: Context, env: str | None = None, host: str | None = None, yes: bool = False) -> None:
    """Show each host's SSH key fingerprints and pin them in the environment's known_hosts."""
    from rich.markup import escape

    from ops.console import confirm, console
    from ops.errors import OpsError
    from ops.transport import Fleet
    from ops.transport.hostkeys import compare, fetch_server_keys, pin, pinned_keys

    environment = load_env(c, env)
    specs = [h.spec for h in Fleet.connect(environment, only=[host] if host else None).hosts]
    out = console()
    pinned = skipped = 0
    for spec in specs:
        try:
            keys = fetch_server_keys(spec, environment.connect_timeout)
        except OpsError as error:
            out.print(f"[red]✗[/] {escape(error.one_line())}")
            skipped += 1
            continue
        state = compare(keys, pinned_keys(environment.known_hosts, spec))
        out.print(f"[bold]{spec.name}[/] ({state})")
        for key in keys:
            out.print(f"    {key.key_type:<22} {key.fingerprint}")
        if state == "pinned":
            continue
        if state == "changed":
            out.print("    [bold red]the host key CHANGED[/]: trust it only if you know the server was rebuilt")
        if not yes:
            if not sys.stdin.isatty():
                out.print("    [yellow]not pinned[/]: no terminal to confirm; compare the fingerprints, then use --yes")
                skipped += 1
                continue
            question = f"    pin these keys for {spec.name} in {environment.known_hosts.name}?"
            if not confirm(question, yes=False, refusing=None):
                skipped += 1
                continue
        pin(environment.known_hosts, spec, keys)
        pinned += 1
        out.print(f"    [green]pinned[/] in {environment.known_hosts}")
    out.print(f"{len(specs)} hosts: {pinned} pinned now, {skipped} not pinned")
    if skipped:
        raise failed()


def collection() -> Collection:
    helps = {"host": "only this host (host:port)", "yes": "pin without asking (after checking the fingerprints)"}
    return Collection("hosts", command(trust, help=helps))
