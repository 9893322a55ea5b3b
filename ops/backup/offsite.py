"""Offsite copies: a complete local snapshot sent to BACKUP_OFFSITE over SSH (pinned host key),
written as `<id>.partial` and renamed only once every archive's sha256 matched there. The local
snapshot is only read."""

from __future__ import annotations

import contextlib
import shlex

from ops.backup.catalogue import MANIFEST, PARTIAL, find_snapshot, target_dir
from ops.backup.model import OffsiteResult
from ops.backup.stores import stream_to_host
from ops.config import Environment, HostSpec, parse_host
from ops.console import CHANGED, OK, Reporter
from ops.errors import BackupError, OpsError
from ops.transport import Host, SSHRunner


def offsite_target(env: Environment) -> tuple[HostSpec, str] | None:
    """BACKUP_OFFSITE, `[user@]host[:port]:/absolute/path`, parsed; None when not set."""
    text = env.backup.offsite
    if not text:
        return None
    address, sep, path = text.partition(":/")
    try:
        spec = parse_host(address, env.deploy_user)
    except ValueError as error:
        raise BackupError(f"BACKUP_OFFSITE: {error}", where=str(env.file.name)) from None
    if not sep:
        raise BackupError(f"BACKUP_OFFSITE: {text!r} has no :/path", where=str(env.file.name))
    return spec, "/" + path.rstrip("/")


def copy_offsite(env: Environment, reporter: Reporter, snapshot_id: str | None = None) -> OffsiteResult:
    """Copy a complete snapshot to the offsite host over SSH (pinned key), checked, then renamed.

    Like a local snapshot, the copy is written as `<id>.partial/` and renamed only after every
    archive's sha256 matched on the far side.
    """
    target = offsite_target(env)
    if target is None:
        raise BackupError("BACKUP_OFFSITE is not set", where=str(env.file.name), hint="[user@]host[:port]:/path")
    spec, base = target
    snapshot = find_snapshot(target_dir(env), snapshot_id)
    if snapshot.host_dir:
        raise BackupError(
            f"snapshot {snapshot.id} is on the hosts ({snapshot.host_dir}), not here: offsite copies local snapshots",
            hint="use BACKUP_TARGET=local for snapshots that go offsite",
        )
    host = Host(spec, SSHRunner.for_environment(spec, env))
    where = f"{spec.target}:{base}"
    final = f"{base}/{snapshot.id}"
    partial = f"{final}{PARTIAL}"
    try:
        if host.run(f"test -f {shlex.quote(final)}/{MANIFEST}", check=False).ok:
            reporter.step(spec.name, "offsite", OK, f"{snapshot.id} is there already")
            return OffsiteResult(snapshot, where, copied=False)
        files = sorted(path for path in snapshot.path.rglob("*") if path.is_file())
        directories = sorted({str(path.parent.relative_to(snapshot.path)) for path in files})
        host.run(
            f"rm -rf {shlex.quote(partial)} && mkdir -p "
            + " ".join(shlex.quote(f"{partial}/{directory}") for directory in directories)
        )
        sent = 0
        for path in files:
            relative = str(path.relative_to(snapshot.path))
            stream_to_host(
                host,
                f"cat > {shlex.quote(f'{partial}/{relative}')}",
                path,
                reporter.transfer(spec.name, f"offsite {relative}", path.stat().st_size),
            )
            sent += path.stat().st_size
        sums = host.run(
            f"cd {shlex.quote(partial)} && sha256sum "
            + " ".join(shlex.quote(record.archive) for record in snapshot.archives)
        ).stdout
        found = {line.split(None, 1)[1].strip(): line.split(None, 1)[0] for line in sums.splitlines() if line.strip()}
        wrong = [record.archive for record in snapshot.archives if found.get(record.archive) != record.sha256]
        if wrong:
            raise BackupError(f"offsite copy of {', '.join(wrong)} does not match its sha256", where=where)
        host.run(f"mv -T {shlex.quote(partial)} {shlex.quote(final)}")
    except BaseException:
        with contextlib.suppress(OpsError):
            host.run(f"rm -rf {shlex.quote(partial)}", check=False)
        raise
    finally:
        host.close()
    reporter.step(spec.name, "offsite", CHANGED, f"{snapshot.id} -> {where} ({sent / 1e6:.1f} MB, checksums match)")
    return OffsiteResult(snapshot, where, copied=True, bytes=sent)
