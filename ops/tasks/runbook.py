"""`inv runbook.*`: list, show and run the runbooks (ops/oncall/runbooks/, the stack's runbooks/ and
the repository's runbooks/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, failed, load_env, project_root

if TYPE_CHECKING:
    from invoke.context import Context


def _stack_dir(c: Context, env: str | None) -> Path | None:
    """The environment's stack directory, whose runbooks/ joins the shipped ones; None when no
    environment is chosen or can be (listing needs none)."""
    from ops.errors import ConfigError

    try:
        return load_env(c, env).stack_dir
    except ConfigError:
        if env:
            raise
        return None


def list_(c: Context, env: str | None = None, json: bool = False) -> None:
    """The runbooks: name, the alerts they answer, where they come from."""
    from rich.table import Table

    from ops.console import console, print_json
    from ops.oncall.runbook import load_all

    runbooks = load_all(project_root(), _stack_dir(c, env))
    if json:
        print_json(
            [
                {"name": r.name, "title": r.title, "alerts": list(r.alerts), "source": r.source}
                for r in runbooks.values()
            ]
        )
        return
    table = Table(title="runbooks")
    for column in ("name", "title", "alerts", "source"):
        table.add_column(column)
    for runbook in runbooks.values():
        table.add_row(runbook.name, runbook.title, ", ".join(runbook.alerts) or "-", runbook.source)
    console().print(table)
    console().print(f"{len(runbooks)} runbooks; run one with: inv runbook.run NAME [--fix]")


def show(c: Context, name: str, env: str | None = None, json: bool = False) -> None:
    """One runbook: symptoms, diagnosis steps with their healthy answer, recovery, RTO/RPO."""
    from rich.markup import escape

    from ops.console import console, print_json
    from ops.oncall.runbook import find

    runbook = find(project_root(), name, _stack_dir(c, env))
    if json:
        print_json(runbook.as_dict())
        return
    out = console()
    out.print(f"[bold]{runbook.name}[/]: {escape(runbook.title)}  ({runbook.source})")
    out.print(
        f"alerts: {', '.join(runbook.alerts) or '-'}   RTO: {runbook.rto or '-'}   RPO: {escape(runbook.rpo or '-')}"
    )
    out.print("[bold]symptoms[/]")
    for symptom in runbook.symptoms:
        out.print(f"  - {escape(symptom)}")
    out.print("[bold]diagnosis[/]")
    for index, step in enumerate(runbook.steps, 1):
        out.print(f"  {index}. {escape(step.title)} ({_place(step.kind, step.service, step.role)})")
        out.print(f"     $ {escape(' '.join(step.command.split()))}", highlight=False)
        healthy = _describe_expect(step.expect)
        out.print(f"     healthy: {escape(healthy)}; otherwise: {escape(step.cause)}")
    out.print("[bold]recovery[/] (inv runbook.run NAME --fix)")
    if not runbook.actions:
        out.print("  none automatic: follow the causes the diagnosis names")
    for index, action in enumerate(runbook.actions, 1):
        place = _place(action.kind, action.service, action.role)
        when = f" when {', '.join(action.when)} failed" if action.when else ""
        out.print(f"  {index}. {escape(action.title)} ({place}{when})")
        out.print(f"     $ {escape(' '.join(action.command.split()))}", highlight=False)


def _place(kind: str, service: str, role: str) -> str:
    if kind == "doctor":
        return "doctor check"
    if role:
        where = "on each host" if kind == "host" else "in each container"
        return f"{where}, for every {role} service; not applicable without one"
    return "on each host" if kind == "host" else f"in each {service} container"


def _describe_expect(expect: object) -> str:
    from ops.oncall.runbook import Expect

    assert isinstance(expect, Expect)
    parts = []
    if expect.exit_code is not None:
        parts.append(f"exit {expect.exit_code}")
    if expect.match:
        parts.append(f"output matches /{expect.match}/")
    if expect.no_match:
        parts.append(f"output never matches /{expect.no_match}/")
    if expect.max is not None:
        parts.append(f"value <= {expect.max:g}")
    if expect.min is not None:
        parts.append(f"value >= {expect.min:g}")
    return ", ".join(parts) or "anything"


def run(
    c: Context, name: str, env: str | None = None, fix: bool = False, yes: bool = False, json: bool = False
) -> None:
    """Run a runbook's diagnosis and name the cause; --fix runs its recovery after you confirm."""
    from ops.console import ConsoleReporter, RecordingReporter, confirm, console, print_json
    from ops.oncall.doctor import probe
    from ops.oncall.runbook import find, run_runbook

    runbook = find(project_root(), name, _stack_dir(c, env))
    environment = load_env(c, env)

    def ask(question: str) -> bool:
        return confirm(question, yes=yes, refusing="run a recovery")

    if not json:
        console().print(f"runbook [bold]{runbook.name}[/] on {environment.name}: {runbook.title}")
    with RecordingReporter() if json else ConsoleReporter() as reporter:
        result = run_runbook(environment, runbook, reporter, fix=fix, confirm=ask, doctor_probe=probe)
    if json:
        print_json(result.as_dict())
    else:
        out = console()
        if result.healthy:
            out.print(f"[green]conclusion:[/] {result.conclusion}")
        else:
            out.print("[red]conclusion:[/] " + "; ".join(result.causes))
        if result.fixed is True:
            out.print("[green]fixed:[/] every check answers healthy again")
        elif result.fixed is False:
            out.print("[red]not fixed:[/] " + "; ".join(s.cause for s in result.after_fix if not s.ok))
        elif fix and not result.healthy and not result.actions:
            out.print("no recovery was run")
        elif not result.healthy and runbook.actions:
            out.print(f"to fix: inv runbook.run {runbook.name} --env {environment.name} --fix")
    if result.fixed is False or (result.fixed is None and not result.healthy):
        raise failed()


def collection() -> Collection:
    return Collection(
        "runbook",
        command(list_, name="list"),
        command(show, help={"name": "the runbook (inv runbook.list)"}),
        command(
            run,
            help={
                "name": "the runbook (inv runbook.list)",
                "fix": "run the recovery actions after the diagnosis (asks first)",
                "yes": "do not ask before the recovery",
            },
        ),
    )
