"""The local pipeline, the same as CI: `nox -s ci` runs every stage in order.

Sessions run in the project's .venv (made by ./scripts/bootstrap) instead of building a
virtualenv each: the tools are pinned by pyproject.toml's dev extra, and a stage costs seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

CI_STAGES = ["lint", "typecheck", "tests", "integration"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check on the whole tree."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the ops/ package."""
    session.run("mypy", "ops")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests: no SSH, no Docker (fake runners)."""
    session.run("pytest", "tests/unit", "-q", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Integration tests against the local lab: real sshd, real Docker, real Compose."""
    session.run("pytest", "tests/integration", "-m", "integration", "-q", *session.posargs)


@nox.session
def ci(session: nox.Session) -> None:
    """The full gate: every stage in order, stopping at the first failure, then a summary table."""
    from rich.console import Console
    from rich.table import Table

    results: list[tuple[str, str, float]] = []
    failed = None
    for stage in CI_STAGES:
        started = time.monotonic()
        session.log(f"stage {stage}")
        code = subprocess.call([sys.executable, "-m", "nox", "-s", stage])
        results.append((stage, "passed" if code == 0 else f"FAILED ({code})", time.monotonic() - started))
        if code != 0:
            failed = stage
            break
    for stage in CI_STAGES[len(results) :]:
        results.append((stage, "not run", 0.0))
    table = Table(title="nox -s ci")
    for column in ("stage", "result", "seconds"):
        table.add_column(column)
    for stage, result, seconds in results:
        style = "green" if result == "passed" else ("dim" if result == "not run" else "bold red")
        table.add_row(stage, f"[{style}]{result}[/]", f"{seconds:.1f}")
    Console().print(table)
    if failed:
        session.error(f"stage {failed} failed")
