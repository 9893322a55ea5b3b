"""`inv backup.all`, `backup.list`, `backup.verify`, `backup.restore`, `backup.drill`, `backup.prune`,
`backup.schedule`, `backup.offsite`, `backup.fetch`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.collection import Collection

from ops.tasks.base import command, failed, load_env
from ops.tasks.notice import notifying

if TYPE_CHECKING:
    from invoke.context import Context

    from ops.backup import BackupResult, DrillResult, RestoreResult


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def all_(
    c: Context,
    env: str | None = None,
    host: str | None = None,
    volume: list[str] | None = None,
    gzip: bool = False,
    target: str | None = None,
    lock_wait: float = 0,
    json: bool = False,
) -> None:
    """Back up every named volume of the stack on every host into a new snapshot (BACKUP_TARGET)."""
    from ops.backup import BackupOptions, backup_all
    from ops.console import ConsoleReporter
    from ops.notify import backup_message

    environment = load_env(c, env)
    options = BackupOptions(
        hosts=[host] if host else None,
        volumes=list(volume or []) or None,
        compression="gzip" if gzip else None,
        target=target or None,
        lock_wait=lock_wait,
    )
    with notifying(environment, "backup", "backup") as note:
        with ConsoleReporter(quiet=json) as reporter:
            result = backup_all(environment, reporter, options)
        note(backup_message(environment, result))
        _show_backup(result, json)


def _show_backup(result: BackupResult, json: bool) -> None:
    from ops.console import console, print_error, print_json

    if json:
        print_json(
            {
                "ok": result.ok,
                "errors": result.errors,
                "seconds": round(result.seconds, 2),
                "snapshot": result.snapshot.as_dict() if result.snapshot else None,
            }
        )
    elif result.snapshot is not None:
        snapshot = result.snapshot
        where = f"{snapshot.host_dir}/{snapshot.id} on each host" if snapshot.host_dir else str(snapshot.path)
        console().print(
            f"backup: snapshot {snapshot.id} complete, {len(snapshot.archives)} volumes, "
            f"{_mb(snapshot.bytes)} in {result.seconds:.1f} s -> {where}",
            markup=False,
        )
    if not result.ok:
        for error in result.errors:
            print_error(error)
        if not json and result.snapshot is None:
            print_error("backup failed: no snapshot was marked complete (earlier snapshots are untouched)")
        elif not json:
            print_error(f"backup incomplete: {len(result.errors)} volumes not archived (the snapshot holds the others)")
        raise failed()


def list_(c: Context, env: str | None = None, offsite: bool = False, json: bool = False) -> None:
    """The snapshots of the environment, oldest first (incomplete ones are marked); --offsite: those
    at BACKUP_OFFSITE."""
    from rich.table import Table

    from ops.backup import list_snapshots, offsite_snapshots, target_dir
    from ops.console import console, print_json

    environment = load_env(c, env)
    if offsite:
        where, snapshots = offsite_snapshots(environment)
    else:
        where, snapshots = str(target_dir(environment)), list_snapshots(target_dir(environment))
    if json:
        print_json([snapshot.as_dict() for snapshot in snapshots])
        return
    table = Table(title=f"snapshots of {environment.name} in {where}")
    for column in ("snapshot", "state", "created", "hosts", "volumes", "size", "archives in"):
        table.add_column(column)
    for snapshot in snapshots:
        state = "[green]complete[/]" if snapshot.complete else "[yellow]incomplete[/]"
        volumes = ", ".join(sorted({record.volume for record in snapshot.archives}))
        place = "offsite" if offsite else f"hosts:{snapshot.host_dir}" if snapshot.host_dir else "here"
        table.add_row(
            snapshot.id, state, snapshot.created, str(len(snapshot.hosts)), volumes, _mb(snapshot.bytes), place
        )
    console().print(table)
    complete = sum(1 for snapshot in snapshots if snapshot.complete)
    console().print(f"{complete} complete, {len(snapshots) - complete} incomplete", markup=False)


def verify(
    c: Context, snapshot: str = "", env: str | None = None, no_extract: bool = False, json: bool = False
) -> None:
    """Check a snapshot (default: the newest): checksums, then a test extraction on each host."""
    from ops.backup import verify as run_verify
    from ops.console import ConsoleReporter, console, print_error, print_json

    environment = load_env(c, env)
    with ConsoleReporter(quiet=json) as reporter:
        result = run_verify(environment, reporter, snapshot or None, extract=not no_extract)
    if json:
        print_json({"snapshot": result.snapshot.id, "ok": result.ok, "checked": result.checked, "bad": result.bad})
    else:
        console().print(
            f"verify: snapshot {result.snapshot.id}: {len(result.checked) - len(result.bad)}/{len(result.checked)} "
            f"archives {'ok' if result.ok else 'NOT ok'}"
        )
    if not result.ok:
        for bad in result.bad:
            print_error(f"{result.snapshot.id}/{bad}")
        raise failed()


def _confirm(what: str, yes: bool) -> None:
    """A restore replaces data: it runs only after the person types 'restore' (or passes --yes)."""
    from ops.console import confirm
    from ops.errors import BackupError

    if not confirm(f"{what}: the volumes' current contents are replaced.", yes=yes, refusing=what, word="restore"):
        raise BackupError("restore cancelled", hint="nothing was changed")


def restore(
    c: Context,
    snapshot: str,
    env: str | None = None,
    volume: str | None = None,
    host: str | None = None,
    yes: bool = False,
    json: bool = False,
) -> None:
    """Restore volumes from a snapshot: stop their services, replace the data, start, health-gate."""
    from ops.backup import find_snapshot, restore_selection, target_dir
    from ops.backup import restore as run_restore
    from ops.console import ConsoleReporter
    from ops.notify import restore_message

    environment = load_env(c, env)
    # Every check that needs no host runs before the question, so bad input changes nothing.
    chosen = find_snapshot(target_dir(environment), snapshot)
    records = restore_selection(chosen, volume, host)
    listing = ", ".join(f"{record.volume} on {record.host}" for record in records)
    _confirm(f"restore {listing} from {chosen.id}", yes)
    with notifying(environment, "restore", f"restore from {chosen.id}") as note:
        with ConsoleReporter(quiet=json) as reporter:
            result = run_restore(environment, reporter, chosen.id, volume=volume, host=host)
        note(restore_message(environment, result))
        _show_restore(result, json)


def _show_restore(result: RestoreResult, json: bool) -> None:
    from ops.console import console, print_error, print_json

    chosen = result.snapshot
    if json:
        print_json({"snapshot": chosen.id, "ok": result.ok, "restored": result.restored, "errors": result.errors})
    else:
        console().print(
            f"restore: {len(result.restored)} volumes from {chosen.id} {'ok' if result.ok else 'NOT ok'} "
            f"({result.seconds:.1f} s)"
        )
    if not result.ok:
        for error in result.errors:
            print_error(error)
        raise failed()


def drill(c: Context, snapshot: str = "", host: str | None = None, env: str | None = None, json: bool = False) -> None:
    """Restore a snapshot (default: the newest) into a throwaway copy of the stack on one host,
    check every volume's data there, and remove the copy; the stack itself is never touched."""
    from ops.backup import drill as run_drill
    from ops.console import ConsoleReporter
    from ops.notify import drill_message

    environment = load_env(c, env)
    with notifying(environment, "drill", f"restore drill of {snapshot or 'the newest snapshot'}") as note:
        with ConsoleReporter(quiet=json) as reporter:
            result = run_drill(environment, reporter, snapshot or None, host=host)
        note(drill_message(environment, result))
        _show_drill(result, json)


def _show_drill(result: DrillResult, json: bool) -> None:
    from rich.table import Table

    from ops.console import console, print_error, print_json

    if json:
        print_json(result.as_dict())
    else:
        if result.volumes:
            table = Table(title=f"drill of {result.snapshot} on {result.host} ({result.project})")
            for column in ("volume", "recipe", "check", "seconds"):
                table.add_column(column)
            for volume in result.volumes:
                table.add_row(volume.volume, volume.recipe, volume.summary, f"{volume.seconds:.1f}")
            console().print(table)
        state = f"ok, {len(result.volumes)} volumes usable" if result.ok else "FAILED"
        gone = f"copy left: {result.left}" if result.left else "copy removed"
        console().print(
            f"drill: snapshot {result.snapshot} on {result.host} {state} in {result.seconds:.1f} s ({gone})",
            markup=False,
        )
    if not result.ok:
        print_error(f"drill of {result.snapshot} failed: {result.error}")
        raise failed()


def prune(
    c: Context,
    env: str | None = None,
    keep_last: int = -1,
    keep_daily: int = -1,
    keep_weekly: int = -1,
    keep_monthly: int = -1,
    dry_run: bool = False,
    json: bool = False,
) -> None:
    """Remove snapshots the retention policy does not keep (BACKUP_KEEP_*; flags override)."""
    from ops.backup import RetentionPolicy
    from ops.backup import prune as run_prune
    from ops.console import ConsoleReporter, console, print_json

    environment = load_env(c, env)
    base = RetentionPolicy.from_env(environment)
    policy = RetentionPolicy(
        keep_last if keep_last >= 0 else base.last,
        keep_daily if keep_daily >= 0 else base.daily,
        keep_weekly if keep_weekly >= 0 else base.weekly,
        keep_monthly if keep_monthly >= 0 else base.monthly,
    )
    with ConsoleReporter(quiet=json) as reporter:
        result = run_prune(environment, reporter, policy, dry_run=dry_run)
    if json:
        print_json(
            {
                "kept": result.kept,
                "removed": result.removed,
                "incomplete_removed": result.incomplete_removed,
                **(
                    {
                        "offsite": {
                            "kept": result.offsite_kept,
                            "removed": result.offsite_removed,
                            "incomplete_removed": result.offsite_incomplete_removed,
                        }
                    }
                    if environment.backup.offsite
                    else {}
                ),
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    console().print(
        f"prune: kept {len(result.kept)}, {verb} {len(result.removed)} snapshots"
        + (f" and {len(result.incomplete_removed)} incomplete" if result.incomplete_removed else "")
    )
    if environment.backup.offsite:
        console().print(
            f"prune offsite: kept {len(result.offsite_kept)}, {verb} {len(result.offsite_removed)} snapshots"
            + (f" and {len(result.offsite_incomplete_removed)} incomplete" if result.offsite_incomplete_removed else "")
        )


def schedule(
    c: Context, env: str | None = None, cron: str = "17 3 * * *", drill: str = "", remove: bool = False
) -> None:
    """Install the recurring backup (backup.all, verify, prune) and, with --drill, a restore drill in
    this machine's crontab, or --remove them."""
    from ops.backup import schedule as run_schedule
    from ops.console import console

    environment = load_env(c, env)
    lines = run_schedule(environment, cron, drill=drill, remove=remove)
    if remove:
        console().print(f"schedule: removed the backup of {environment.name} from the crontab")
    else:
        console().print(f"schedule: backup of {environment.name} at '{cron}':", lines, markup=False)
        if drill:
            console().print(f"schedule: restore drill at '{drill}'", markup=False)


def offsite(c: Context, env: str | None = None, snapshot: str = "", json: bool = False) -> None:
    """Copy a snapshot (default: the newest) to BACKUP_OFFSITE (S3 or SSH), checked before it counts."""
    from ops.backup import copy_offsite
    from ops.console import ConsoleReporter, console, print_json

    environment = load_env(c, env)
    # Only a failure is told: the backup that made the snapshot already said it is there.
    subject = f"offsite copy of {snapshot or 'the newest snapshot'}"
    with notifying(environment, "offsite", subject), ConsoleReporter(quiet=json) as reporter:
        result = copy_offsite(environment, reporter, snapshot or None)
    if json:
        print_json({"snapshot": result.snapshot.id, "target": result.target, "copied": result.copied})
    else:
        verb = f"copied ({_mb(result.bytes)})" if result.copied else "already there"
        console().print(f"offsite: snapshot {result.snapshot.id} {verb} at {result.target}", markup=False)


def fetch(c: Context, snapshot: str = "latest", env: str | None = None, json: bool = False) -> None:
    """Bring a snapshot from BACKUP_OFFSITE back into BACKUP_DIR, every archive checked (then restore it)."""
    from ops.backup import fetch_snapshot
    from ops.console import ConsoleReporter, console, print_json

    environment = load_env(c, env)
    with ConsoleReporter(quiet=json) as reporter:
        fetched = fetch_snapshot(environment, reporter, snapshot or None)
    if json:
        print_json(fetched.as_dict())
    else:
        console().print(
            f"fetch: snapshot {fetched.id} complete in {fetched.path}, {len(fetched.archives)} archives, "
            f"{_mb(fetched.bytes)}, checksums match; restore: inv backup.restore {fetched.id}",
            markup=False,
        )


def collection() -> Collection:
    namespace = Collection("backup")
    namespace.add_task(
        command(
            all_,
            name="all",
            iterable=["volume"],
            help={
                "host": "only this host",
                "volume": "only this volume (repeatable; compose name, e.g. redis-data)",
                "gzip": "gzip instead of zstd",
                "target": "local (BACKUP_DIR on this machine) or host (BACKUP_HOST_DIR on each host)",
                "lock_wait": "seconds to wait while a deploy, rollback or restore holds the lock (default: fail)",
            },
        )
    )
    namespace.add_task(command(list_, name="list", help={"offsite": "list the snapshots at BACKUP_OFFSITE"}))
    namespace.add_task(
        command(
            verify,
            help={"snapshot": "snapshot id or prefix (default: the newest)", "no_extract": "checksums only"},
        )
    )
    namespace.add_task(
        command(
            restore,
            positional=["snapshot"],
            help={
                "snapshot": "snapshot id, prefix or 'latest'",
                "volume": "only this volume",
                "host": "only this host",
                "yes": "do not ask (required without a terminal)",
            },
        )
    )
    namespace.add_task(
        command(
            prune,
            help={
                "keep_last": "keep the newest N",
                "keep_daily": "newest of each of the last N days",
                "keep_weekly": "newest of each of the last N weeks",
                "keep_monthly": "newest of each of the last N months",
                "dry_run": "show what would go",
            },
        )
    )
    namespace.add_task(
        command(
            drill,
            help={
                "snapshot": "snapshot id or prefix (default: the newest complete one)",
                "host": "drill this host's archives (default: the first host)",
            },
        )
    )
    namespace.add_task(command(offsite, help={"snapshot": "snapshot id or prefix (default: the newest)"}))
    namespace.add_task(
        command(fetch, positional=["snapshot"], help={"snapshot": "snapshot id, prefix or 'latest' (the default)"})
    )
    namespace.add_task(
        command(
            schedule,
            help={
                "cron": "cron schedule (default '17 3 * * *': 03:17 daily)",
                "drill": "also a restore drill of the newest snapshot on this schedule, e.g. '47 4 * * 0' (Sundays)",
                "remove": "remove the entries",
            },
        )
    )
    return namespace
