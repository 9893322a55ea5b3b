"""Retention: which snapshots a policy keeps (a pure function, restic forget's rules, never the last
copy of a volume), and prune, which removes the others and stale incomplete ones, here, on the
hosts of a host-target snapshot, and offsite (the same policy over the copies there)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ops.backup.catalogue import list_snapshots, target_dir
from ops.backup.model import PruneResult, Snapshot
from ops.backup.offsite import offsite_lock, offsite_store
from ops.backup.stores import HostStore
from ops.config import Environment
from ops.console import CHANGED, OK, WOULD_CHANGE, Reporter
from ops.errors import BackupError
from ops.transport import Fleet


@dataclass(frozen=True)
class RetentionPolicy:
    """restic forget's rules: keep the newest `last`, and the newest of each of the last N days,
    ISO weeks and months that have a snapshot."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)

    @classmethod
    def from_env(cls, env: Environment) -> RetentionPolicy:
        settings = env.backup
        return cls(settings.keep_last, settings.keep_daily, settings.keep_weekly, settings.keep_monthly)


def retention(snapshots: Sequence[Snapshot], policy: RetentionPolicy) -> dict[str, list[str]]:
    """Which complete snapshots to keep and why (id -> reasons); the others may go.

    Whatever the policy, the newest copy of each (host, volume) is kept: prune never removes the
    last complete copy of a volume.
    """
    complete = sorted((s for s in snapshots if s.complete), key=lambda s: s.created_at, reverse=True)
    keep: dict[str, list[str]] = {}
    buckets = (
        ("daily", policy.daily, lambda t: t.strftime("%Y-%m-%d")),
        ("weekly", policy.weekly, lambda t: f"{t.isocalendar()[0]:04d}-W{t.isocalendar()[1]:02d}"),
        ("monthly", policy.monthly, lambda t: t.strftime("%Y-%m")),
    )
    for index, snapshot in enumerate(complete):
        if index < policy.last:
            keep.setdefault(snapshot.id, []).append("last")
    for name, count, key in buckets:
        seen: list[str] = []
        for snapshot in complete:
            bucket = key(snapshot.created_at)
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(bucket)
            keep.setdefault(snapshot.id, []).append(name)
    for snapshot in complete:
        for copy in sorted(snapshot.copies()):
            if not any(copy in s.copies() for s in complete if s.id in keep):
                keep.setdefault(snapshot.id, []).append(f"last copy of {copy[1]} on {copy[0]}")
    return keep


def prune(
    env: Environment,
    reporter: Reporter,
    policy: RetentionPolicy | None = None,
    *,
    dry_run: bool = False,
    stale_after: timedelta = timedelta(hours=6),
    offsite: bool = True,
) -> PruneResult:
    """Remove the snapshots the policy does not keep, and incomplete ones older than stale_after;
    with BACKUP_OFFSITE set (and offsite), the same offsite."""
    policy = policy or RetentionPolicy.from_env(env)
    if policy.empty:
        raise BackupError(
            "no retention policy: every BACKUP_KEEP_* is 0", hint="set BACKUP_KEEP_LAST (or daily/weekly/monthly)"
        )
    target = target_dir(env)
    snapshots = list_snapshots(target)
    kept = retention(snapshots, policy)
    result = PruneResult(kept=kept, dry_run=dry_run)
    now = time.time()
    for snapshot in snapshots:
        if snapshot.complete and snapshot.id in kept:
            reporter.step("local", "keep", OK, f"{snapshot.id} ({', '.join(kept[snapshot.id])})")
            continue
        if not snapshot.complete:
            if now - snapshot.path.stat().st_mtime < stale_after.total_seconds():
                reporter.step("local", "keep", OK, f"{snapshot.path.name} (incomplete, may still be running)")
                continue
            result.incomplete_removed.append(snapshot.path.name)
        else:
            result.removed.append(snapshot.id)
        if not dry_run:
            if snapshot.host_dir:
                discard_on_hosts(env, snapshot, partial=not snapshot.complete)
            shutil.rmtree(snapshot.path)
        reporter.step("local", "remove", WOULD_CHANGE if dry_run else CHANGED, snapshot.path.name)
    if env.backup.offsite and offsite:
        prune_offsite(env, reporter, policy, result, dry_run=dry_run, stale_after=stale_after)
    return result


def prune_offsite(
    env: Environment,
    reporter: Reporter,
    policy: RetentionPolicy,
    result: PruneResult,
    *,
    dry_run: bool = False,
    stale_after: timedelta = timedelta(hours=6),
) -> None:
    """The policy applied to the offsite copies on their own (the last copy of a volume there is
    kept whatever is here), and interrupted copies older than stale_after removed; into result."""
    store = offsite_store(env)
    with offsite_lock(env), contextlib.closing(store):
        snapshots = store.snapshots()
        kept = retention(snapshots, policy)
        result.offsite_kept = kept
        now = datetime.now(UTC)
        for snapshot in snapshots:
            if snapshot.complete and snapshot.id in kept:
                reporter.step(store.where, "keep", OK, f"{snapshot.id} ({', '.join(kept[snapshot.id])})")
                continue
            if not snapshot.complete:
                if now - snapshot.created_at < stale_after:
                    reporter.step(store.where, "keep", OK, f"{snapshot.id} (incomplete, may still be copying)")
                    continue
                result.offsite_incomplete_removed.append(snapshot.id)
            else:
                result.offsite_removed.append(snapshot.id)
            if not dry_run:
                store.remove(snapshot)
            reporter.step(store.where, "remove", WOULD_CHANGE if dry_run else CHANGED, snapshot.id)


def discard_on_hosts(env: Environment, snapshot: Snapshot, *, partial: bool = False) -> None:
    """Remove a host-target snapshot's directory (`<id>.partial` for an incomplete one) on every host
    of the environment that holds one."""
    names = sorted(set(snapshot.hosts) & {spec.name for spec in env.hosts})
    if names:
        with Fleet.connect(env, only=names) as fleet:
            HostStore(snapshot.host_dir).discard(fleet.hosts, snapshot.id, partial=partial)
