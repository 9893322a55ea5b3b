"""`inv deploy.<env>`, `inv rollback.<env>`, `inv releases.<env>`, `inv audit.<env>`, `inv lock.*`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, env_collection, environment_names, failed, load_env
from ops.tasks.notice import notifying

if TYPE_CHECKING:
    from invoke.context import Context

    from ops.config import Environment
    from ops.deploy import DeployResult


def _confirm(environment: Environment, action: str, yes: bool) -> None:
    """prod is changed only after the person types its name (or passes --yes)."""
    from ops.console import confirm
    from ops.errors import OpsError

    if environment.name != "prod":
        return
    question = f"{action} environment prod ({len(environment.hosts)} hosts)?"
    if not confirm(question, yes=yes, refusing=f"{action} prod", word="prod"):
        raise OpsError(f"{action} of prod cancelled", hint="nothing was changed")


def _render(result: DeployResult, as_json: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ops.console import console, print_json
    from ops.deploy import SUCCEEDED

    if as_json:
        print_json(result.as_dict())
    else:
        out = console()
        table = Table(title=f"{result.action} {result.version} to {result.environment}")
        for column in ("host", "result", "release", "previous", "seconds"):
            table.add_column(column)
        styles = {"deployed": "green", "unchanged": "green", "planned": "cyan", "skipped": "dim"}
        for report in result.hosts:
            style = styles.get(report.result, "bold red")
            table.add_row(
                report.host, f"[{style}]{report.result}[/]", report.release, report.previous, f"{report.seconds:.1f}"
            )
        out.print(table)
        for report in result.hosts:
            if report.error:
                out.print(f"[bold red]{escape(report.host)}:[/] {escape(report.error)}")
            if report.failing and report.failing.logs:
                out.print(f"[dim]last log lines of {report.failing.service}:[/]")
                out.print(escape(report.failing.logs), markup=False)
        done = sum(1 for report in result.hosts if report.result in SUCCEEDED)
        out.print(
            f"{result.action}: {done}/{len(result.hosts)} hosts {'ok' if result.ok else 'NOT ok'} "
            f"({result.seconds:.1f} s)"
        )
    if not result.ok:
        raise failed()


def deploy(
    c: Context,
    env: str | None = None,
    version: str = "v1",
    host: str | None = None,
    batch: int = 0,
    dry_run: bool = False,
    yes: bool = False,
    lock_wait: float = 0.0,
    reason: str = "",
    json: bool = False,
) -> None:
    """Deploy the stack as a new release: validate, lock, images, release, up, health gate, audit."""
    from ops.console import ConsoleReporter
    from ops.deploy import DeployOptions
    from ops.deploy import deploy as run_deploy
    from ops.notify import deploy_message

    environment = load_env(c, env)
    if not dry_run:
        _confirm(environment, "deploy to", yes)
    options = DeployOptions(
        version=version,
        hosts=[host] if host else None,
        batch=batch,
        dry_run=dry_run,
        lock_wait=lock_wait,
        reason=reason,
    )
    with notifying(environment, "deploy", f"deploy {version}", enabled=not dry_run) as note:
        with ConsoleReporter(quiet=json) as reporter:
            result = run_deploy(environment, reporter, options)
        note(deploy_message(result))
        _render(result, json)


def rollback(
    c: Context,
    env: str | None = None,
    to: str | None = None,
    host: str | None = None,
    yes: bool = False,
    lock_wait: float = 0.0,
    json: bool = False,
) -> None:
    """Go back to the previous (or --to) release: its compose files, env and pinned images."""
    from ops.console import ConsoleReporter
    from ops.deploy import rollback as run_rollback
    from ops.notify import deploy_message

    environment = load_env(c, env)
    _confirm(environment, "roll back", yes)
    with notifying(environment, "rollback", f"rollback to {to or 'previous'}") as note:
        with ConsoleReporter(quiet=json) as reporter:
            result = run_rollback(environment, reporter, to=to, hosts=[host] if host else None, lock_wait=lock_wait)
        note(deploy_message(result))
        _render(result, json)


def releases(c: Context, env: str | None = None, json: bool = False) -> None:
    """List the kept releases on every host; the current one is marked."""
    from rich.table import Table

    from ops.console import console, print_json
    from ops.deploy.releases import ReleaseStore
    from ops.transport import Fleet, Host

    environment = load_env(c, env)

    def listing(host: Host) -> tuple[str | None, list[dict[str, object]]]:
        store = ReleaseStore(host, environment.project)
        return store.current_id(), [release.__dict__ for release in store.list()]

    with Fleet.connect(environment) as fleet:
        result = fleet.map(listing)
    if json:
        print_json(
            {
                o.host: {"current": o.value[0], "releases": o.value[1]} if o.value else {"error": str(o.error)}
                for o in result.outcomes
            }
        )
    else:
        table = Table(title=f"releases of {environment.project} in {environment.name}")
        for column in ("host", "", "release", "version", "status", "git", "who"):
            table.add_column(column)
        for outcome in result.outcomes:
            if outcome.value is None:
                table.add_row(outcome.host, "", f"[red]{outcome.error}[/]", "", "", "", "")
                continue
            current, items = outcome.value
            for item in reversed(items):
                mark = "[green]*[/]" if item["id"] == current else ""
                # release.json says "active" once a release has passed its gate; only one is current
                status = (
                    "current" if item["id"] == current else "passed" if item["status"] == "active" else item["status"]
                )
                table.add_row(
                    outcome.host,
                    mark,
                    str(item["id"]),
                    str(item["version"]),
                    str(status),
                    str(item["git_commit"]),
                    str(item["who"]),
                )
        console().print(table)
        console().print("* current release")
    if not result.ok:
        raise failed()


def audit(c: Context, env: str | None = None, tail: int = 20, json: bool = False) -> None:
    """The audit lines of every host, merged by time."""
    from rich.table import Table

    from ops.console import console, print_json
    from ops.host import audit as audit_log
    from ops.transport import Fleet

    environment = load_env(c, env)
    with Fleet.connect(environment) as fleet:
        result = fleet.map(lambda host: audit_log.read(host, environment.project, tail=tail))
    records = sorted(
        (record for outcome in result.outcomes for record in outcome.value or []), key=lambda r: str(r.get("time"))
    )[-tail:]
    if json:
        print_json(records)
    else:
        table = Table(title=f"audit of {environment.name} (last {tail})")
        for column in ("time", "host", "action", "version", "release", "result", "who", "s"):
            table.add_column(column)
        for record in records:
            table.add_row(
                *(str(record.get(k, "")) for k in ("time", "host", "action", "version", "release", "result", "who")),
                str(record.get("duration_s", "")),
            )
        console().print(table)
        console().print(f"{len(records)} records from {len(result.outcomes)} hosts")
    for outcome in result.failed:
        from ops.console import print_error

        print_error(outcome.error.one_line() if outcome.error else outcome.host)
    if not result.ok:
        raise failed()


def lock_status(c: Context, env: str | None = None, json: bool = False) -> None:
    """Who holds the deploy lock on each host; a lock older than an hour is reported stale."""
    from ops.console import console, print_json
    from ops.host.lock import DEFAULT_TTL, read_lock
    from ops.transport import Fleet

    environment = load_env(c, env)
    with Fleet.connect(environment) as fleet:
        result = fleet.map(lambda host: read_lock(host, environment.project))
    rows: dict[str, dict[str, object]] = {}
    for outcome in result.outcomes:
        info = outcome.value
        if outcome.error:
            rows[outcome.host] = {"error": outcome.error.one_line()}
        elif info is None:
            rows[outcome.host] = {"locked": False}
        else:
            rows[outcome.host] = {"locked": True, **info.__dict__, "stale": info.age_seconds() > DEFAULT_TTL}
    if json:
        print_json(rows)
    else:
        for name, row in rows.items():
            if "error" in row:
                text = f"[red]{row['error']}[/]"
            elif row["locked"]:
                stale = " [bold red](STALE)[/]" if row["stale"] else ""
                text = f"locked by {row['holder']} since {row['since']}: {row['reason']}{stale}"
            else:
                text = "[green]free[/]"
            console().print(f"{name}: {text}")
    if not result.ok:
        raise failed()


def lock_acquire(c: Context, env: str | None = None, reason: str = "maintenance", wait: float = 0.0) -> None:
    """Take the deploy lock on every host (for maintenance); release it with lock.release."""
    from ops.console import console
    from ops.host.lock import DeployLock
    from ops.transport import Fleet

    environment = load_env(c, env)
    with Fleet.connect(environment) as fleet:
        lock = DeployLock(fleet.hosts, environment.project, reason, wait_seconds=wait, until_released=True)
        lock.acquire()
    console().print(f"locked {len(lock.held)} hosts: {lock.info.describe()}")


def lock_release(c: Context, env: str | None = None, force: bool = False) -> None:
    """Release the deploy lock on every host (--force: whoever holds it)."""
    from ops.console import console
    from ops.host.lock import operator, read_lock, release
    from ops.transport import Fleet

    environment = load_env(c, env)
    me = operator()
    released = 0
    with Fleet.connect(environment) as fleet:
        for host in fleet.hosts:
            info = read_lock(host, environment.project)
            if info is None:
                continue
            if info.holder != me and not force:
                from ops.errors import LockError

                raise LockError(
                    info.describe(), where=host.name, hint="held by someone else: use --force if it is stale"
                )
            release(host, environment.project, None)
            released += 1
    console().print(f"released the lock on {released} hosts")


def collections() -> list[Collection]:
    names = environment_names()
    helps = {
        "version": "version to deploy (APP_VERSION), default v1",
        "host": "only this host (host:port)",
        "batch": "hosts per batch (default: all at once); a failing batch stops the rollout",
        "dry_run": "print the plan, change nothing",
        "yes": "do not ask for confirmation (prod)",
        "lock_wait": "seconds to wait for the deploy lock",
        "reason": "why (kept in the lock and the audit log)",
        "to": "release id, id prefix or version to go back to",
        "tail": "number of records",
    }
    swap_helps = {
        **helps,
        "service": "the compose service to swap (no container_name, no published ports)",
        "version": "version to swap to (builds and sends its image like deploy)",
        "image": "an image reference already on the hosts",
        "timeout": "seconds the new containers get to become healthy (default HEALTH_TIMEOUT)",
        "drain": "seconds the old containers drain after leaving rotation (default SWAP_DRAIN)",
    }
    lock = Collection("lock")
    lock.add_task(command(lock_status, name="status", help=helps))
    lock.add_task(command(lock_acquire, name="acquire", help={"wait": "seconds to wait", **helps}))
    lock.add_task(command(lock_release, name="release", help={"force": "release a lock held by someone else"}))
    return [
        env_collection("deploy", deploy, names, help=helps),
        env_collection("rollback", rollback, names, help=helps),
        env_collection("releases", releases, names, help=helps),
        env_collection("audit", audit, names, help=helps),
        env_collection("swap", swap, names, help=swap_helps, positional=["service"]),
        lock,
    ]


def swap(
    c: Context,
    service: str,
    env: str | None = None,
    version: str | None = None,
    image: str | None = None,
    timeout: float = 0.0,
    drain: float = -1.0,
    host: str | None = None,
    batch: int = 0,
    yes: bool = False,
    lock_wait: float = 0.0,
    json: bool = False,
) -> None:
    """Swap one service blue-green: new containers beside the old, health gate, drain, retire the old."""
    from ops.console import ConsoleReporter
    from ops.deploy import swap as run_swap
    from ops.notify import deploy_message

    environment = load_env(c, env)
    _confirm(environment, f"swap {service} in", yes)
    with notifying(environment, "swap", f"swap {service} to {version or image}") as note:
        with ConsoleReporter(quiet=json) as reporter:
            result = run_swap(
                environment,
                reporter,
                service,
                version=version,
                image=image,
                timeout=timeout or None,
                drain=drain if drain >= 0 else None,
                hosts=[host] if host else None,
                batch=batch,
                lock_wait=lock_wait,
            )
        note(deploy_message(result))
        _render(result, json)
