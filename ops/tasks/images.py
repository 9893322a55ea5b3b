"""`inv images.gc`: collect the garbage of this checkout's local registry."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, load_env

if TYPE_CHECKING:
    from invoke.context import Context


def _mb(count: int | None) -> str:
    if count is None:
        return "?"
    return f"{count / 1e3:.0f} kB" if count < 1e6 else f"{count / 1e6:.1f} MB"


def gc(c: Context, env: str | None = None, dry_run: bool = False, json: bool = False) -> None:
    """Delete from this checkout's registry the images no kept release on any host pins; free their blobs."""
    from ops.console import ConsoleReporter, add_redactor, console, print_json
    from ops.deploy.gc import collect_garbage, registry_environments

    environment = load_env(c, env)
    environments = registry_environments(environment, os.environ)
    for other in environments:
        add_redactor(other.redact)
    reporter = ConsoleReporter(quiet=json)
    try:
        result = collect_garbage(environments, reporter, dry_run=dry_run)
    finally:
        reporter.close()
    if json:
        print_json(result.as_dict())
        return
    hosts = len({(pins.host, pins.project) for pins in result.hosts})
    read = f"read {result.releases} kept releases on {hosts} hosts of {', '.join(e.name for e in environments)}"
    if result.note:
        line = f"images.gc: {result.note}"
    elif dry_run:
        line = (
            f"images.gc (dry run): would delete {len(result.deleted)} manifests and keep {len(result.kept)}"
            f" in {result.registry} ({_mb(result.bytes_before)}); {read}; nothing was deleted"
        )
    else:
        line = (
            f"images.gc: deleted {len(result.deleted)} manifests ({result.blobs_deleted} blobs), kept "
            f"{len(result.kept)}, freed {_mb(result.bytes_freed)} ({_mb(result.bytes_before)} -> "
            f"{_mb(result.bytes_after)}) in {result.seconds:.1f} s; {read}"
        )
    console().print(line, markup=False)


def collection() -> Collection:
    namespace = Collection("images")
    namespace.add_task(command(gc, help={"dry_run": "show what would be deleted; delete nothing, take no lock"}))
    return namespace
