"""The Recipe protocol every backup recipe implements, and the two values it shares with take.py and
restore.py (and drill.py). Types and two small rules only: no recipe lives here."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ops.backup.commands import as_root, decompressor
from ops.backup.model import ArchiveRecord, ContainerFact, Snapshot, VolumeFact
from ops.console import Reporter
from ops.errors import BackupError
from ops.transport import Host


def running_container(container: str, what: str) -> str:
    """The container a check talks to; a BackupError when the copy has none running."""
    if not container:
        raise BackupError(f"no running container of the copy mounts the volume ({what} needs one)")
    return container


def called(container: ContainerFact, word: str) -> bool:
    """Whether the container's image (its last path part) or service is named after word. An
    alertmanager is never taken for the prometheus (or anything) its name may mention."""
    words = f"{container.image.split(':')[0].rsplit('/', 1)[-1]} {container.service}".lower()
    return word in words and "alertmanager" not in words


def in_container(container: str, script: str, *, stdin: bool = False) -> str:
    """A sh script run in the container: variables in it (passwords) expand there, never here."""
    return f"docker exec {'-i ' if stdin else ''}{shlex.quote(container)} sh -c {shlex.quote(script)}"


class RecipeUnusable(BackupError):
    """The recipe fits the volume but cannot run in its container (its dump tool is missing).
    take.py then stops the container for a plain archive when that is allowed, else refuses the
    volume; stop_is_safe says the recipe itself allows the stop (a SQLite app without sqlite3)."""

    def __init__(self, message: str, *, where: str | None = None, stop_is_safe: bool = False) -> None:
        super().__init__(message, where=where)
        self.stop_is_safe = stop_is_safe


def find_tool(host: Host, container: str, *tools: str) -> str:
    """The first of tools on the container's PATH; RecipeUnusable when there is none."""
    probe = "; ".join(f"command -v {tool} >/dev/null 2>&1 && {{ echo {tool}; exit 0; }}" for tool in tools)
    found = host.run(in_container(container, f"{probe}; exit 1"), check=False).stdout.strip()
    if found not in tools:
        raise RecipeUnusable(f"the container has no {' or '.join(tools)}", where=f"{host.name} {container}")
    return found


@dataclass(frozen=True)
class ArchiveJob:
    """One volume about to be archived, as take.py hands it to a recipe."""

    host: Host
    volume: VolumeFact
    container: str  # the running container the recipe talks to
    compression: str
    level: int
    timeout: float  # seconds a save, dump or snapshot may take
    reporter: Reporter


@dataclass(frozen=True)
class Archiving:
    """What a recipe archives: the command whose stdout is the archive, and a directory on the host
    to remove (as root) once the archive is stored or has failed ("" for none)."""

    command: str
    cleanup: str = ""


class Restoring(Protocol):
    """One archive on its way back into its volume, as restore.py hands it to a recipe."""

    host: Host
    snapshot: Snapshot
    record: ArchiveRecord
    users: list[ContainerFact]  # the containers that mount the volume now
    services: list[str]  # the services that used it when archived and now

    def feed(self, command: str) -> None:
        """Run command on the host with the archive's plaintext on its stdin."""

    def into_volume(self, command: Callable[[str], str]) -> None:
        """Stop the volume's containers, create the volume if it is gone, feed command(mountpoint),
        then start them again (and the services that had no container), whatever happened."""


class DumpRecipe:
    """What the dump recipes (postgres, mysql, mongodb) share: an archive that is one dump stream,
    checked by decompressing it, and loaded back into the service's running container."""

    service_kind = ""  # names the database in messages: "a PostgreSQL dump"
    restore_hint: str | None = None

    def test_extract_command(self, compression: str, mountpoint: str, user: str) -> str:
        # A dump is only decompressed: its check is zstd's (or gzip's) own.
        return as_root(f"{decompressor(compression)} > /dev/null", user)

    def tested(self, archive: str, entries: str) -> str:
        return f"{archive}: dump ok"

    def load(self, job: Restoring, command: Callable[[str, str], str], loaded: str = "dump") -> str:
        """Feed the archive to command(container, compression) in the first running user's container."""
        live = [c for c in job.users if c.running]
        if not live:
            raise BackupError(
                f"restoring {self.service_kind} needs its service running ({', '.join(job.services)})",
                where=job.host.name,
                hint=self.restore_hint,
            )
        job.feed(command(live[0].name, job.record.compression))
        return f"{job.record.volume}: {loaded} loaded into {live[0].service}"


class Recipe(Protocol):
    name: str  # as written in the label, the manifest and BACKUP_INFO.md
    suffix: str  # of the archive, before the compression's: ".tar", ".sql"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        """Whether this recipe fits the container (used only when no label names a recipe)."""

    def archive(self, job: ArchiveJob) -> Archiving:
        """Prepare the volume (through container, the running one the recipe talks to) and say
        which command streams its archive."""

    def test_extract_command(self, compression: str, mountpoint: str, user: str) -> str:
        """The command that checks an archive fed on its stdin, unpacking it into mountpoint (a
        scratch volume) when it holds files."""

    def tested(self, archive: str, entries: str) -> str:
        """What a successful test extraction reports (entries: files found in the scratch volume)."""

    def restore(self, job: Restoring) -> str:
        """Put the archive back; returns what the restore step reports."""

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        """After a restore into a throwaway copy of the stack, prove the data is usable (through
        container, the copy's running container that mounts the volume, "" when none does, and
        mountpoint, the copy's volume on the host); a one-line summary; BackupError when it is not."""
