"""Offsite copies on an SSH server (BACKUP_OFFSITE=[user@]host[:port]:/path, host key pinned like
every other host): a snapshot is written as `<id>.partial/` and renamed only once every archive's
sha256 matched on the far side."""

from __future__ import annotations

import contextlib
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

from ops.backup.catalogue import MANIFEST, PARTIAL, snapshot_from_manifest
from ops.backup.model import Snapshot
from ops.backup.offsite.store import CheckedFile, local_files, upload_order
from ops.backup.stores import stream_from_host, stream_to_host
from ops.config import Environment, HostSpec, parse_host
from ops.console import Reporter
from ops.errors import BackupError, OpsError
from ops.transport import Host, SSHRunner

HEADER = "=== opskit-offsite "


def ssh_target(env: Environment) -> tuple[HostSpec, str]:
    """BACKUP_OFFSITE, `[user@]host[:port]:/absolute/path`, parsed."""
    text = env.backup.offsite
    address, sep, path = text.partition(":/")
    try:
        spec = parse_host(address, env.deploy_user)
    except ValueError as error:
        raise BackupError(f"BACKUP_OFFSITE: {error}", where=str(env.file.name)) from None
    if not sep:
        raise BackupError(
            f"BACKUP_OFFSITE: {text!r} has no :/path", where=str(env.file.name), hint="or s3://BUCKET/PREFIX"
        )
    return spec, "/" + path.rstrip("/")


class SSHOffsite:
    """A directory on an SSH server, reached with the environment's identity and pinned host keys."""

    def __init__(self, env: Environment, host: Host | None = None):
        self.spec, self.base = ssh_target(env)
        self.where = f"{self.spec.target}:{self.base}"
        self.host = host or Host(self.spec, SSHRunner.for_environment(self.spec, env))

    def _path(self, name: str) -> str:
        return shlex.quote(f"{self.base}/{name}")

    def snapshots(self) -> list[Snapshot]:
        script = (
            f"cd {shlex.quote(self.base)} 2>/dev/null || exit 0; for d in */; do d=${{d%/}}; "
            f'[ -d "$d" ] || continue; printf \'{HEADER}%s %s\\n\' "$d" "$(stat -c %Y "$d")"; '
            f'cat "$d/{MANIFEST}" 2>/dev/null; echo; done'
        )
        found: list[Snapshot] = []
        for block in self.host.run(script).stdout.split(HEADER)[1:]:
            head, _, text = block.partition("\n")
            name, _, mtime = head.rpartition(" ")
            snapshot_id = name.removesuffix(PARTIAL)
            try:
                data = json.loads(text) if text.strip() else None
            except json.JSONDecodeError:
                data = None
            snapshot = snapshot_from_manifest(data, snapshot_id, Path(self.base) / name, final=name == snapshot_id)
            if not snapshot.complete and mtime.isdigit():
                snapshot.created = datetime.fromtimestamp(int(mtime), UTC).isoformat(timespec="seconds")
            found.append(snapshot)
        return sorted(found, key=lambda snapshot: snapshot.id)

    def send(self, snapshot: Snapshot, reporter: Reporter) -> int:
        final = f"{self.base}/{snapshot.id}"
        partial = f"{final}{PARTIAL}"
        files = upload_order(snapshot)
        directories = sorted({str(Path(name).parent) for name in files})
        try:
            self.host.run(
                f"rm -rf {shlex.quote(partial)} && mkdir -p "
                + " ".join(shlex.quote(f"{partial}/{directory}") for directory in directories)
            )
            sent = 0
            for name in files:
                path = snapshot.path / name
                size = path.stat().st_size
                progress = reporter.transfer(self.spec.name, f"offsite {name}", size)
                stream_to_host(self.host, f"cat > {shlex.quote(f'{partial}/{name}')}", path, progress)
                sent += size
            sums = self.host.run(
                f"cd {shlex.quote(partial)} && sha256sum "
                + " ".join(shlex.quote(record.archive) for record in snapshot.archives)
            ).stdout
            found = {line.split(None, 1)[1].strip(): line.split(None, 1)[0] for line in sums.splitlines() if line}
            wrong = [record.archive for record in snapshot.archives if found.get(record.archive) != record.sha256]
            if wrong:
                raise BackupError(f"offsite copy of {', '.join(wrong)} does not match its sha256", where=self.where)
            self.host.run(f"rm -rf {shlex.quote(final)} && mv -T {shlex.quote(partial)} {shlex.quote(final)}")
        except BaseException:
            with contextlib.suppress(OpsError):
                self.host.run(f"rm -rf {shlex.quote(partial)}", check=False)
            raise
        return sent

    def fetch(self, snapshot: Snapshot, into: Path, reporter: Reporter) -> None:
        for name, record in local_files(snapshot):
            sink = CheckedFile(
                into / name, reporter.transfer(self.spec.name, f"fetch {name}", record.bytes if record else None)
            )
            try:
                stream_from_host(self.host, f"cat {self._path(f'{snapshot.id}/{name}')}", sink, lambda count: None)
            except BaseException:
                sink.abort()
                raise
            sink.close(record, self.where)

    def remove(self, snapshot: Snapshot) -> None:
        directory = self._path(snapshot.path.name)
        self.host.run(f"rm -f {directory}/{MANIFEST} && rm -rf {directory}")

    def close(self) -> None:
        self.host.close()
