"""The files recipe, the default: the volume's directory as a compressed tar, unpacked back into
an emptied volume. It never talks to the service using the volume (redis and prometheus do)."""

from __future__ import annotations

import shlex

from ops.backup.commands import as_root, decompressor, tar_command
from ops.backup.model import ArchiveRecord, ContainerFact, VolumeFact
from ops.backup.recipes.recipe import Archiving, Restoring
from ops.console import Reporter
from ops.transport import Host


def restore_command(record: ArchiveRecord, mountpoint: str, user: str) -> str:
    """Empty the volume, then unpack the archive into it (owners and modes as archived)."""
    directory = shlex.quote(mountpoint)
    return as_root(
        f"find {directory} -mindepth 1 -delete && "
        f"{decompressor(record.compression)} | tar -C {directory} --numeric-owner -xpf -",
        user,
    )


class Files:
    name = "files"
    suffix = ".tar"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        return False  # the fallback: never detected, chosen when nothing else is

    def archive(
        self,
        host: Host,
        volume: VolumeFact,
        container: str,
        compression: str,
        level: int,
        timeout: float,
        reporter: Reporter,
    ) -> Archiving:
        return Archiving(tar_command(volume.mountpoint, compression, host.spec.user, level))

    def test_extract_command(self, compression: str, mountpoint: str, user: str) -> str:
        return as_root(f"{decompressor(compression)} | tar -C {shlex.quote(mountpoint)} --numeric-owner -xf -", user)

    def tested(self, archive: str, entries: str) -> str:
        return f"{archive}: {entries} entries"

    def restore(self, job: Restoring) -> str:
        record = job.record
        job.into_volume(lambda mountpoint: restore_command(record, mountpoint, job.host.spec.user))
        return f"{record.volume} from {job.snapshot.id} ({', '.join(job.services) or 'no service'})"
