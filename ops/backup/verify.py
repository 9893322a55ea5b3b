"""Verifying a snapshot: every archive's size and sha256 where it is stored, then a test extraction
of each into a scratch volume on its host (its recipe says how). Verify never touches a live
volume."""

from __future__ import annotations

import secrets
import shlex

from ops.backup.age import age_identity
from ops.backup.catalogue import find_snapshot, target_dir
from ops.backup.commands import as_root
from ops.backup.model import ArchiveRecord, Snapshot, VerifyResult, by_host
from ops.backup.recipes import recipe_named
from ops.backup.stores import ArchiveStore, snapshot_store
from ops.config import Environment
from ops.console import FAILED, OK, SKIPPED, Reporter
from ops.errors import OpsError
from ops.transport import Fleet, Host


def test_extract_command(compression: str, recipe: str, mountpoint: str, user: str) -> str:
    """Decompress and unpack into a scratch volume (a dump is only decompressed: its check is zstd's)."""
    return recipe_named(recipe).test_extract_command(compression, mountpoint, user)


def verify(
    env: Environment, reporter: Reporter, snapshot_id: str | None = None, *, extract: bool = True
) -> VerifyResult:
    """Checksums of every archive, then a test extraction of each into a scratch volume on its host."""
    snapshot = find_snapshot(target_dir(env), snapshot_id)
    store = snapshot_store(env, snapshot)
    result = VerifyResult(snapshot)
    good: list[ArchiveRecord] = []

    def check(host: Host | None, record: ArchiveRecord) -> None:
        found = store.checksum(host, snapshot, record, reporter)
        if found is None:
            result.bad.append(f"{record.archive}: missing")
            reporter.step(record.host, "checksum", FAILED, f"{record.archive} is missing")
        elif found != (record.bytes, record.sha256):
            result.bad.append(f"{record.archive}: checksum mismatch (corrupted)")
            reporter.step(record.host, "checksum", FAILED, f"{record.archive} does not match its sha256")
        else:
            reporter.step(record.host, "checksum", OK, record.archive)
            good.append(record)

    if snapshot.host_dir:  # each host hashes its own archives
        records_on = by_host(snapshot.archives)

        def check_host(host: Host) -> None:
            for record in records_on[host.name]:
                check(host, record)

        with Fleet.connect(env, only=sorted(records_on)) as fleet:
            hashed = fleet.map(check_host)
        result.bad.extend(f"{item.host}: {item.error.one_line()}" for item in hashed.outcomes if item.error)
    else:
        for record in snapshot.archives:
            check(None, record)
    if extract and good:
        good_on = by_host(good)
        identity = age_identity(env)

        def one(host: Host) -> list[str]:
            bad = []
            for record in good_on.get(host.name, []):
                if record.encrypted and identity is None:
                    reporter.step(host.name, "test extract", SKIPPED, f"{record.archive}: encrypted, no identity")
                    continue
                try:
                    _test_extract(host, snapshot, store, record, reporter)
                except OpsError as error:
                    bad.append(f"{record.archive}: test extraction failed ({error.message})")
                    reporter.step(host.name, "test extract", FAILED, f"{record.archive}: {error.message}")
            return bad

        with Fleet.connect(env, only=sorted(good_on)) as fleet:
            outcome = fleet.map(one)
        for item in outcome.outcomes:
            result.bad.extend(item.value or [])
            if item.error is not None:
                result.bad.append(f"{item.host}: {item.error.one_line()}")
    result.checked = [record.archive for record in snapshot.archives]
    return result


def _test_extract(
    host: Host, snapshot: Snapshot, store: ArchiveStore, record: ArchiveRecord, reporter: Reporter
) -> None:
    scratch = f"opskit-verify-{secrets.token_hex(4)}"
    host.run(f"docker volume create --label opskit.scratch=verify {scratch} >/dev/null")
    try:
        mountpoint = host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {scratch}").stdout.strip()
        command = test_extract_command(record.compression, record.recipe, mountpoint, host.spec.user)
        store.feed(host, command, snapshot, record, reporter, "test extract")
        files = host.run(as_root(f"find {shlex.quote(mountpoint)} -mindepth 1 | wc -l", host.spec.user)).stdout.strip()
        reporter.step(host.name, "test extract", OK, recipe_named(record.recipe).tested(record.archive, files))
    finally:
        host.run(f"docker volume rm -f {scratch} >/dev/null", check=False)
