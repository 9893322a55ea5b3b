"""Offsite copies of local snapshots, wherever BACKUP_OFFSITE says: an S3 bucket
(s3://BUCKET/PREFIX) or a directory on an SSH server ([user@]host[:port]:/path). copy, list, fetch
back (checked, so a new machine with only the offsite copy can restore); retention.prune removes
what the policy does not keep there. The local snapshot is only read by a copy."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager

from ops.backup.catalogue import PARTIAL, choose_snapshot, find_snapshot, fsync_dir, read_snapshot, target_dir
from ops.backup.model import OffsiteResult, Snapshot
from ops.backup.offsite.s3 import S3Offsite
from ops.backup.offsite.ssh import SSHOffsite, ssh_target
from ops.backup.offsite.store import OffsiteStore
from ops.config import Environment
from ops.console import CHANGED, OK, Reporter
from ops.errors import BackupError
from ops.transport.docker import machine_lock

# Each kind of offsite place by the form of BACKUP_OFFSITE; a new one is a module and a line here.
OFFSITE_STORES: dict[str, Callable[[Environment], OffsiteStore]] = {
    "s3://": S3Offsite,
    "": SSHOffsite,  # [user@]host[:port]:/path
}


def offsite_store(env: Environment) -> OffsiteStore:
    """The environment's offsite place; BackupError when BACKUP_OFFSITE is not set."""
    text = env.backup.offsite
    if not text:
        raise BackupError(
            "BACKUP_OFFSITE is not set",
            where=str(env.file.name),
            hint="s3://BUCKET/PREFIX or [user@]host[:port]:/path",
        )
    scheme = next(prefix for prefix in OFFSITE_STORES if text.startswith(prefix))
    return OFFSITE_STORES[scheme](env)


def offsite_lock(env: Environment) -> AbstractContextManager[None]:
    """This machine's lock on the environment's offsite place (copies and prunes take it)."""
    return machine_lock("offsite-" + hashlib.sha256(env.backup.offsite.encode()).hexdigest()[:16])


def copy_offsite(env: Environment, reporter: Reporter, snapshot_id: str | None = None) -> OffsiteResult:
    """Copy a complete local snapshot offsite; it counts there only once every archive is checked."""
    snapshot = find_snapshot(target_dir(env), snapshot_id)
    if snapshot.host_dir:
        raise BackupError(
            f"snapshot {snapshot.id} is on the hosts ({snapshot.host_dir}), not here: offsite copies local snapshots",
            hint="use BACKUP_TARGET=local for snapshots that go offsite",
        )
    store = offsite_store(env)
    # Two copies to one place from this machine (the schedule's and a person's) wait for each other:
    # the second finds the snapshot there, instead of aborting the first one's uploads.
    with offsite_lock(env), contextlib.closing(store):
        there = {item.id: item for item in store.snapshots()}
        if snapshot.id in there and there[snapshot.id].complete:
            reporter.step(store.where, "offsite", OK, f"{snapshot.id} is there already")
            return OffsiteResult(snapshot, store.where, copied=False)
        sent = store.send(snapshot, reporter)
    reporter.step(store.where, "offsite", CHANGED, f"{snapshot.id} ({sent / 1e6:.1f} MB, checksums match)")
    return OffsiteResult(snapshot, store.where, copied=True, bytes=sent)


def offsite_snapshots(env: Environment) -> tuple[str, list[Snapshot]]:
    """(where, the snapshots there, oldest first, incomplete ones marked)."""
    store = offsite_store(env)
    try:
        return store.where, store.snapshots()
    finally:
        store.close()


def fetch_snapshot(env: Environment, reporter: Reporter, wanted: str | None) -> Snapshot:
    """Bring an offsite snapshot (id, prefix or latest) into BACKUP_DIR, every archive checked
    against its sha256; written as `<id>.partial` and renamed when whole, like a backup."""
    target = target_dir(env)
    store = offsite_store(env)
    try:
        snapshot = choose_snapshot(store.snapshots(), wanted, store.where)
        final = target / snapshot.id
        if read_snapshot(final).complete:
            reporter.step("local", "fetch", OK, f"{snapshot.id} is here already ({final})")
            return read_snapshot(final)
        partial = target / f"{snapshot.id}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            store.fetch(snapshot, partial, reporter)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover of the same id
            os.rename(partial, final)
            fsync_dir(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        store.close()
    reporter.step(
        "local",
        "fetch",
        CHANGED,
        f"{snapshot.id} from {store.where}: {len(snapshot.archives)} archives, checksums match",
    )
    return read_snapshot(final)


__all__ = [
    "OFFSITE_STORES",
    "OffsiteStore",
    "S3Offsite",
    "SSHOffsite",
    "copy_offsite",
    "fetch_snapshot",
    "offsite_snapshots",
    "offsite_store",
    "ssh_target",
]
