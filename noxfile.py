"""The local pipeline, the same as CI: `nox -s ci` runs every stage in order.

Sessions run in the project's .venv (made by ./scripts/bootstrap) instead of building a
virtualenv each: the tools are pinned by pyproject.toml's dev extra, and a stage costs seconds.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

# nox logs at debug level; the Docker SDK's HTTP requests would drown the sessions' output.
for _noisy in ("urllib3", "docker"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

CI_STAGES = ["lint", "typecheck", "tests", "scan", "build", "integration"]
ROOT = Path(__file__).resolve().parent


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
    session.run("pytest", "tests/unit", "-q", "--timeout=120", *session.posargs)


@nox.session
def scan(session: nox.Session) -> None:
    """Security and config scans: bandit, pip-audit, shellcheck, detect-secrets, compose, promtool/amtool."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ops.console import ConsoleReporter
    from ops.pipeline.scan import scan_repository

    reporter = ConsoleReporter()
    result = scan_repository(ROOT, reporter, python=sys.executable)
    reporter.close()
    console = Console()
    table = Table(title="nox -s scan")
    for column in ("scanner", "checked", "result", "seconds"):
        table.add_column(column)
    for item in result.results:
        verdict = "[green]passed[/]" if item.ok else f"[bold red]{'ERROR' if item.error else 'FAILED'}[/]"
        table.add_row(item.scanner, str(item.checked), verdict, f"{item.seconds:.1f}")
    console.print(table)
    for item in result.results:
        for note in item.notes:
            console.print(f"[dim]{item.scanner}: {escape(note)}[/]", highlight=False)
        if item.error:
            console.print(f"[bold red]{item.scanner}: could not scan: {escape(item.error)}[/]", highlight=False)
        for finding in item.findings:
            console.print(f"[red]{item.scanner}: {escape(str(finding))}[/]", highlight=False)
    failed = [item.scanner for item in result.results if not item.ok]
    if failed:
        session.error(f"scan failed: {', '.join(failed)}")


@nox.session
def build(session: nox.Session) -> None:
    """Wheel and sdist into dist/ (python -m build, twine check), and the demo stack's images."""
    from ops.console import ConsoleReporter
    from ops.errors import OpsError
    from ops.pipeline.images import build_stack_images

    shutil.rmtree(ROOT / "dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist", silent=True)
    artifacts = sorted(str(path) for path in (ROOT / "dist").iterdir())
    session.log(f"built {', '.join(Path(name).name for name in artifacts)}")
    session.run("twine", "check", "--strict", *artifacts)
    reporter = ConsoleReporter()
    try:
        refs = build_stack_images(ROOT, ROOT / "stacks" / "demo", reporter)
    except OpsError as error:
        session.error(error.one_line())
    finally:
        reporter.close()
    session.log(f"demo images: {', '.join(sorted(refs.values()))}")


@nox.session
def integration(session: nox.Session) -> None:
    """Integration tests against the local lab: real sshd, real Docker, real Compose; two processes,
    each with its own labs (tests/integration/conftest.py splits them)."""
    session.run(
        "pytest", "tests/integration", "-m", "integration", "-q", "-n", "2",
        "--durations=15", "--timeout=900", *session.posargs,
    )  # fmt: skip


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
