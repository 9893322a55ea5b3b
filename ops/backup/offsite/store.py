"""What an offsite copy asks of the place it goes (an SSH server's directory, an S3 bucket): list
the snapshots there, send one so that it looks complete only once every archive is checked there
and its manifest arrived last, bring one back checked, remove one. Each kind is one module."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from ops.backup.catalogue import INFO, MANIFEST
from ops.backup.model import ArchiveRecord, Snapshot
from ops.console import Reporter
from ops.errors import BackupError


class OffsiteStore(Protocol):
    """One offsite place. Snapshots there are listed like the local catalogue: oldest first,
    incomplete ones (an interrupted copy) included and marked, their `created` then the time of
    their newest file."""

    where: str  # for people: s3://bucket/prefix, user@host:/path

    def snapshots(self) -> list[Snapshot]: ...

    def send(self, snapshot: Snapshot, reporter: Reporter) -> int:
        """Copy a complete local snapshot (bytes sent); complete there only once all of it is checked."""
        ...

    def fetch(self, snapshot: Snapshot, into: Path, reporter: Reporter) -> None:
        """Write the offsite snapshot's archives (each checked against its sha256), BACKUP_INFO.md and,
        last, manifest.json into the directory `into`."""
        ...

    def remove(self, snapshot: Snapshot) -> None:
        """Remove a snapshot there, its manifest first (a half-removed one never looks complete)."""
        ...

    def close(self) -> None: ...


def upload_order(snapshot: Snapshot) -> list[str]:
    """The snapshot's files, relative to it: archives, the rest, and manifest.json last."""
    files = sorted(str(path.relative_to(snapshot.path)) for path in snapshot.path.rglob("*") if path.is_file())
    return [name for name in files if name != MANIFEST] + [MANIFEST]


class CheckedFile:
    """A local file written from an offsite copy: hashed on the way, fsynced, removed when it fails."""

    def __init__(self, path: Path, progress: Callable[[int], None]):
        self.path = path
        self.progress = progress
        self.digest = hashlib.sha256()
        self.bytes = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle: IO[bytes] = path.open("wb")

    def write(self, data: bytes, /) -> int:
        self.handle.write(data)
        self.digest.update(data)
        self.bytes += len(data)
        self.progress(len(data))
        return len(data)

    def close(self, record: ArchiveRecord | None, where: str) -> None:
        """Flush and close; for an archive, its size and sha256 must be the manifest's."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        if record is not None and (self.bytes, self.digest.hexdigest()) != (record.bytes, record.sha256):
            self.path.unlink(missing_ok=True)
            raise BackupError(
                f"offsite copy of {record.archive} does not match its sha256 in the manifest",
                where=where,
                hint="the offsite copy is damaged; fetch another snapshot",
            )

    def abort(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


def local_files(snapshot: Snapshot) -> list[tuple[str, ArchiveRecord | None]]:
    """What a fetch writes, in order: each archive with its record, BACKUP_INFO.md, then the manifest."""
    return [*((record.archive, record) for record in snapshot.archives), (INFO, None), (MANIFEST, None)]
