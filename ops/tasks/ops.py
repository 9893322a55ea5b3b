"""`inv ops.*`: what on-call people look at first."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection

from ops.tasks.base import command, failed, load_env
from ops.tasks.notice import notifying

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
    from ops.oncall.status import environment_status

    started = time.monotonic()
    environment = load_env(c, env)
    statuses = environment_status(environment, only=[host] if host else None)
    unreachable = [s for s in statuses if not s.reachable]
    swarm, swarm_error = None, ""
    if environment.orchestrator.swarm:
        from ops.errors import OpsError
        from ops.swarm import swarm_state

        try:
            swarm = swarm_state(environment)
        except OpsError as error:
            swarm_error = error.one_line()
    if json:
        data: dict[str, object] = {"environment": environment.name, "hosts": [s.as_dict() for s in statuses]}
        if environment.orchestrator.swarm:
            data["swarm"] = swarm.as_dict() if swarm else {"error": swarm_error}
        print_json(data)
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
        _print_stack(statuses)
        if swarm is not None:
            from ops.tasks.swarm import print_swarm

            print_swarm(swarm)
        elif swarm_error:
            from rich.markup import escape

            console().print(f"[bold red]swarm:[/] {escape(swarm_error)}")
        console().print(
            f"{len(statuses)} hosts: {len(statuses) - len(unreachable)} reachable, "
            f"{len(unreachable)} unreachable ({time.monotonic() - started:.1f} s)"
        )
    if unreachable or swarm_error:
        raise failed()


def _uptime(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 60}m{seconds % 60}s"


def _print_stack(statuses: list[Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ops.console import console

    for s in statuses:
        if not s.reachable or not (s.containers or s.release or s.lock):
            continue
        title = f"{s.host}: release {s.release or 'none'}, " + (
            f"[yellow]lock {escape(s.lock)}[/]" if s.lock else "unlocked"
        )
        table = Table(title=title)
        for column in ("service", "container", "image", "health", "restarts", "uptime", "CPU", "memory / limit"):
            table.add_column(column)
        for item in s.containers:
            health = item.health or item.state
            color = "green" if health in ("healthy", "running") else "yellow" if health == "starting" else "red"
            if item.state != "running":
                health, color = item.state, "red"
            memory = (
                f"{_size(item.memory_bytes)} / {_size(item.memory_limit_bytes) if item.memory_limit_bytes else '-'}"
            )
            if item.memory_percent:
                mcolor = "red" if item.memory_percent >= 85 else ""
                memory += f" ([{mcolor}]{item.memory_percent:.0f}%[/])" if mcolor else f" ({item.memory_percent:.0f}%)"
            table.add_row(
                item.service,
                item.name,
                item.image,
                f"[{color}]{health}[/]",
                f"[red]{item.restarts}[/]" if item.restarts >= 3 else str(item.restarts),
                _uptime(item.uptime_seconds) if item.state == "running" else "-",
                f"{item.cpu_percent:.1f}%",
                memory,
            )
        console().print(table)


def doctor(
    c: Context, env: str | None = None, host: str | None = None, notify: bool = False, json: bool = False
) -> None:
    """Checks with pass / warn / fail and the fix to try: SSH, engine, disks, memory, containers, lock, backups."""
    from rich.markup import escape

    from ops.console import console, print_json
    from ops.notify import doctor_message
    from ops.oncall.doctor import doctor as run_doctor

    started = time.monotonic()
    environment = load_env(c, env)
    with notifying(environment, "doctor", "doctor", enabled=notify) as note:
        report = run_doctor(environment, only=[host] if host else None)
        note(doctor_message(environment, report))
    if json:
        print_json(report.as_dict())
    else:
        out = console()
        marks = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "skipped": "[dim]skip[/]"}
        for check in report.checks:
            line = f"  {marks[check.status]}  {escape(check.host):<18} {check.name:<17} {escape(check.detail)}"
            if check.fix and check.status != "pass":
                line += f"\n        [dim]fix: {escape(check.fix)}[/]"
            out.print(line, highlight=False)
        out.print(
            f"{len(report.checks)} checks: {report.count('pass')} pass, {report.count('warn')} warn, "
            f"{report.count('fail')} fail ({time.monotonic() - started:.1f} s)"
        )
    if not report.ok:
        raise failed()


def logs(
    c: Context,
    service: str,
    env: str | None = None,
    since: str | None = None,
    tail: int = 100,
    follow: bool = False,
    grep: str | None = None,
) -> None:
    """A service's logs from every host, each line prefixed with host and container."""
    from rich.markup import escape

    from ops.console import console, redact
    from ops.oncall.services import service_logs

    environment = load_env(c, env)
    out = console()

    def line(host: str, container: str, text: str) -> None:
        out.print(f"[cyan]{escape(host)}[/] [magenta]{escape(container)}[/] | {escape(redact(text))}", highlight=False)

    try:
        count = service_logs(environment, service, line, since=since, tail=tail, follow=follow, grep=grep)
    except KeyboardInterrupt:
        if not follow:
            raise
        return  # Ctrl-C is how a --follow ends
    if not follow:
        out.print(f"[dim]{count} lines of {service}[/]")


def restart(c: Context, service: str, env: str | None = None) -> None:
    """Restart a service's containers on every host and wait until it is healthy."""
    from ops.console import ConsoleReporter, console
    from ops.oncall.services import restart_service

    environment = load_env(c, env)
    with ConsoleReporter() as reporter:
        result = restart_service(environment, service, reporter)
    console().print(
        f"{service}: {len(result.restarted)} container(s) restarted and healthy, {len(result.failed)} failed"
    )
    if not result.ok:
        raise failed()


def exec_(c: Context, service: str, env: str | None = None) -> None:
    """Run a command in each running container of a service: inv ops.exec SERVICE -- CMD [ARGS]."""
    from rich.markup import escape

    from ops.console import console, redact
    from ops.oncall.services import exec_in_service

    argv = sys.argv
    words = argv[argv.index("--") + 1 :] if "--" in argv else []
    environment = load_env(c, env)
    out = console()

    def show(result: Any) -> None:
        for text in result.output.splitlines() or [""]:
            out.print(
                f"[cyan]{escape(result.host)}[/] [magenta]{escape(result.container)}[/] | {escape(redact(text))}",
                highlight=False,
            )

    results = exec_in_service(environment, service, words, on_result=show)
    nonzero = [r for r in results if r.exit_code != 0]
    out.print(f"[dim]{len(results)} container(s), {len(nonzero)} exited non-zero[/]")
    if nonzero:
        raise failed()


def collection() -> Collection:
    return Collection(
        "ops",
        command(status, help={"host": "only this host (host:port)"}),
        command(
            doctor,
            help={"host": "only this host (host:port)", "notify": "post the failing checks to NOTIFY_URL (for cron)"},
        ),
        command(
            logs,
            help={
                "service": "the stack's service",
                "since": "only lines since (e.g. 10m, 2h, 2026-01-01T00:00:00)",
                "tail": "lines per container (default 100)",
                "follow": "keep streaming new lines (Ctrl-C ends)",
                "grep": "only lines matching this regex",
            },
        ),
        command(restart, help={"service": "the stack's service"}),
        command(exec_, name="exec", help={"service": "the stack's service"}),
    )
