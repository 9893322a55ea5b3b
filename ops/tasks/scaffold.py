"""`opskit init`: start a repository (env files, .gitignore, tasks.py, a runbook, a sample stack)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.tasks.base import command

if TYPE_CHECKING:
    from invoke.context import Context
    from invoke.tasks import Task


def init(c: Context, stack: str = "", json: bool = False) -> None:
    """Write what a repository needs to use opskit here; existing files are kept, never overwritten."""
    from ops.console import ConsoleReporter, console, print_json
    from ops.scaffold import CREATED, DEFAULT_STACK, EXTENDED, KEPT, init_repository

    root = Path(os.environ.get("OPS_ROOT") or Path.cwd()).resolve()
    with ConsoleReporter(quiet=json) as reporter:
        result = init_repository(root, reporter, stack=stack or DEFAULT_STACK)
    if json:
        print_json({"root": str(result.root), "stack": result.stack, "files": [f.__dict__ for f in result.files]})
        return
    created, kept = result.paths(CREATED), result.paths(KEPT)
    extended = result.paths(EXTENDED)
    summary = f"[bold]opskit init:[/] {len(created)} files created"
    if extended:
        summary += f", {', '.join(extended)} extended"
    summary += f", {len(kept)} kept as they were" + (f" ({', '.join(kept)})" if kept else "") + f" in {root}."
    console().print(summary)
    console().print(
        "Next: start a local lab, make its hosts Docker servers, deploy the sample stack:\n"
        "  opskit lab.up\n  opskit provision.lab\n  opskit deploy.lab"
    )


def task() -> Task[Any]:
    return command(init, help={"stack": "name of the sample stack (stacks/NAME, PROJECT); default app"})
