"""The files recipe, the default: the volume's directory as a compressed tar, unpacked back into
an emptied volume; a drill counts the files restored. It never talks to the service using the
volume (redis and prometheus do)."""

from __future__ import annotations

import shlex

from ops.backup.commands import as_root, decompressor, tar_command
from ops.backup.model import ArchiveRecord, ContainerFact, VolumeFact
from ops.backup.recipes.recipe import ArchiveJob, Archiving, Restoring
from ops.errors import BackupError
from ops.transport import Host
from ops.transport.shell import last_line


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

    def archive(self, job: ArchiveJob) -> Archiving:
        return Archiving(tar_command(job.volume.mountpoint, job.compression, job.host.spec.user, job.level))

    def test_extract_command(self, compression: str, mountpoint: str, user: str) -> str:
        return as_root(f"{decompressor(compression)} | tar -C {shlex.quote(mountpoint)} --numeric-owner -xf -", user)

    def tested(self, archive: str, entries: str) -> str:
        return f"{archive}: {entries} entries"

    def restore(self, job: Restoring) -> str:
        record = job.record
        job.into_volume(lambda mountpoint: restore_command(record, mountpoint, job.host.spec.user))
        return f"{record.volume} from {job.snapshot.id} ({', '.join(job.services) or 'no service'})"

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        counted = host.run(as_root(f"find {shlex.quote(mountpoint)} -type f | wc -l", host.spec.user), check=False)
        if not counted.ok or not counted.stdout.strip().isdigit():
            raise BackupError(
                f"cannot count the files in {mountpoint}: {last_line(counted.stderr or counted.stdout)}",
                where=host.name,
            )
        return f"{int(counted.stdout)} files"
