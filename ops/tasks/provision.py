"""`inv provision.<env>`: make fresh servers into Docker hosts, idempotently."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import env_collection, environment_names, failed, load_env

if TYPE_CHECKING:
    from invoke.context import Context


def provision(
    c: Context, env: str | None = None, host: str | None = None, dry_run: bool = False, json: bool = False
) -> None:
    """Provision the hosts: Docker and Compose, deploy user, SSH hardening, firewall, upgrades."""
    from rich.markup import escape
    from rich.table import Table

    from ops.console import ConsoleReporter, console, print_json
    from ops.provision import provision as run_provision

    environment = load_env(c, env)
    with ConsoleReporter(quiet=json) as reporter:
        result = run_provision(environment, reporter, only_hosts=[host] if host else None, dry_run=dry_run)
    if json:
        print_json({"environment": environment.name, "dry_run": dry_run, "hosts": [r.to_dict() for r in result.hosts]})
    else:
        out = console()
        title = f"provision {environment.name}" + (" (dry run: nothing changed)" if dry_run else "")
        table = Table(title=title)
        for column in ("host", "login", "OS", "ok", "changed", "would change", "failed", "seconds"):
            table.add_column(column)
        for report in result.hosts:
            counts = report.counts
            table.add_row(
                report.host,
                report.user,
                report.os,
                str(counts["ok"]),
                str(counts["changed"]),
                str(counts["would change"]),
                f"[bold red]{counts['failed']}[/]" if counts["failed"] or report.error else "0",
                f"{report.seconds:.1f}",
            )
        out.print(table)
        for report in result.failed:
            step = f" at step {report.failed_step}" if report.failed_step else ""
            out.print(f"[bold red]{escape(report.host)} failed{escape(step)}:[/] {escape(str(report.error))}")
            if report.output:
                out.print(escape(report.output[-2000:]), markup=False)
        verb = "would change" if dry_run else "changed"
        total = result.count("would change") if dry_run else result.changed
        out.print(
            f"{len(result.hosts)} hosts: {len(result.hosts) - len(result.failed)} ok, {len(result.failed)} failed; "
            f"{total} steps {verb} ({result.seconds:.1f} s)"
        )
    if not result.ok:
        raise failed()


def collections() -> list[Collection]:
    helps = {"host": "only this host (host:port)", "dry_run": "print what would change, change nothing"}
    return [env_collection("provision", provision, environment_names(), help=helps)]
