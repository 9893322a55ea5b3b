"""The values that cross the backup package's layers: what a host has (facts), what an archive
is (records, snapshots) and what each command did (results). Values only: no I/O here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class VolumeFact:
    name: str  # the engine's name, e.g. demo_redis-data
    key: str  # the compose name, e.g. redis-data
    mountpoint: str
    # What the volume holds that says which program wrote it, as paths relative to the mountpoint:
    # database markers (PG_VERSION, ibdata1, mysql/, WiredTiger, dump.rdb, appendonlydir) and
    # SQLite files ("sqlite:" + the path of a file with SQLite's header). See facts.py.
    contents: tuple[str, ...] = ()

    def holds(self, *markers: str) -> bool:
        """Whether a marker (a file or directory name, "mysql/" for a directory) is in the volume."""
        names = {entry.rstrip("/").rsplit("/", 1)[-1] + ("/" if entry.endswith("/") else "") for entry in self.contents}
        return any(marker in names for marker in markers)

    @property
    def sqlite_files(self) -> tuple[str, ...]:
        return tuple(entry.removeprefix("sqlite:") for entry in self.contents if entry.startswith("sqlite:"))


@dataclass(frozen=True)
class ContainerFact:
    id: str
    name: str
    service: str
    image: str
    running: bool
    labels: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # volume name -> path in the container
    command: tuple[str, ...] = ()  # the image's entrypoint then command, as configured

    def runs(self, *programs: str) -> bool:
        """Whether the container's entrypoint or command starts one of programs (by file name)."""
        words = " ".join(self.command).split()  # a `sh -c "exec mysqld ..."` command counts too
        return any(word.rsplit("/", 1)[-1] in programs for word in words if not word.startswith("-"))


@dataclass(frozen=True)
class ArchiveRecord:
    """One archived volume, as written in manifest.json."""

    host: str
    volume: str  # the compose name
    volume_name: str  # the engine's name
    services: tuple[str, ...]
    recipe: str
    archive: str  # path relative to the snapshot directory
    compression: str
    bytes: int
    sha256: str
    seconds: float
    release: str = ""
    encrypted: str = ""  # "age" when the archive is encrypted to BACKUP_AGE_RECIPIENT

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["services"] = list(self.services)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchiveRecord:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["services"] = tuple(values.get("services", ()))
        return cls(**values)


@dataclass
class Snapshot:
    """A snapshot directory on this machine: manifest, archives, BACKUP_INFO.md."""

    id: str
    path: Path
    complete: bool
    created: str = ""
    environment: str = ""
    project: str = ""
    archives: list[ArchiveRecord] = field(default_factory=list)
    hosts: dict[str, dict[str, str]] = field(default_factory=dict)
    host_dir: str = ""  # BACKUP_TARGET=host: the archives are in <host_dir>/<id>/ on each host, not here

    @property
    def created_at(self) -> datetime:
        try:
            return datetime.fromisoformat(self.created)
        except ValueError:
            return datetime.fromtimestamp(self.path.stat().st_mtime, UTC)

    @property
    def bytes(self) -> int:
        return sum(record.bytes for record in self.archives)

    def copies(self) -> set[tuple[str, str]]:
        return {(record.host, record.volume) for record in self.archives}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "complete": self.complete,
            "created": self.created,
            "environment": self.environment,
            "project": self.project,
            "bytes": self.bytes,
            "hosts": self.hosts,
            "target": "host" if self.host_dir else "local",
            "host_dir": self.host_dir,
            "archives": [record.as_dict() for record in self.archives],
        }


@dataclass
class BackupResult:
    snapshot: Snapshot | None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.snapshot is not None and self.snapshot.complete and not self.errors


def by_host(records: Iterable[ArchiveRecord]) -> dict[str, list[ArchiveRecord]]:
    """The records grouped by the host that holds (or held) their volume, in their order."""
    grouped: dict[str, list[ArchiveRecord]] = {}
    for record in records:
        grouped.setdefault(record.host, []).append(record)
    return grouped


@dataclass
class VerifyResult:
    snapshot: Snapshot
    checked: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # "archive: why"

    @property
    def ok(self) -> bool:
        return not self.bad


@dataclass
class RestoreResult:
    snapshot: Snapshot
    restored: list[str] = field(default_factory=list)  # "host volume"
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.restored)


@dataclass
class PruneResult:
    kept: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    incomplete_removed: list[str] = field(default_factory=list)
    dry_run: bool = False
    offsite_kept: dict[str, list[str]] = field(default_factory=dict)
    offsite_removed: list[str] = field(default_factory=list)
    offsite_incomplete_removed: list[str] = field(default_factory=list)


@dataclass
class OffsiteResult:
    snapshot: Snapshot
    target: str
    copied: bool  # False: it was there already
    bytes: int = 0


@dataclass(frozen=True)
class DrilledVolume:
    """One volume of a drill: restored into the copy and checked by its recipe."""

    host: str
    volume: str
    recipe: str
    summary: str  # the recipe check's one line
    seconds: float  # restore and check


@dataclass
class DrillResult:
    """A restore drill of a snapshot, as recorded in the snapshot's drill.json."""

    snapshot: str
    host: str
    project: str  # the throwaway copy's compose project
    when: str  # ISO time the drill started
    volumes: list[DrilledVolume] = field(default_factory=list)
    error: str = ""  # one line naming the volume (or the copy) and the cause; "" when it passed
    seconds: float = 0.0
    left: str = ""  # what of the copy could not be removed from the host ("" when nothing is left)

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.volumes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "host": self.host,
            "project": self.project,
            "when": self.when,
            "ok": self.ok,
            "error": self.error,
            "seconds": round(self.seconds, 2),
            "left": self.left,
            "volumes": [asdict(volume) for volume in self.volumes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrillResult:
        known = set(DrilledVolume.__dataclass_fields__)
        return cls(
            snapshot=str(data.get("snapshot", "")),
            host=str(data.get("host", "")),
            project=str(data.get("project", "")),
            when=str(data.get("when", "")),
            volumes=[
                DrilledVolume(**{k: v for k, v in item.items() if k in known}) for item in data.get("volumes", [])
            ],
            error=str(data.get("error", "")) or ("" if data.get("ok") else "recorded as failed"),
            seconds=float(data.get("seconds", 0.0)),
            left=str(data.get("left", "")),
        )
