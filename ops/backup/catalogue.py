"""The snapshot catalogue on this machine: snapshot ids, manifest.json and BACKUP_INFO.md written
and read, snapshots listed and found, and each snapshot's last restore drill (drill.json). A
snapshot is `<id>.partial/` until its manifest says complete and it is renamed; nothing here talks
to a host."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ops import __version__
from ops.backup.model import ArchiveRecord, DrillResult, Snapshot
from ops.config import Environment
from ops.errors import BackupError
from ops.host.layout import ProjectLayout

MANIFEST = "manifest.json"
INFO = "BACKUP_INFO.md"
DRILL = "drill.json"
PARTIAL = ".partial"
FORMAT = 1


def target_dir(env: Environment) -> Path:
    configured = env.backup.dir
    path = Path(configured).expanduser() if configured else Path("backups") / env.name
    return path if path.is_absolute() else env.root / path


def new_snapshot_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def read_snapshot(path: Path) -> Snapshot:
    """A snapshot directory; complete only when its name is final and its manifest says so."""
    snapshot_id = path.name.removesuffix(PARTIAL)
    manifest = path / MANIFEST
    if not manifest.is_file():
        return Snapshot(snapshot_id, path, complete=False)
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return Snapshot(snapshot_id, path, complete=False)
    return snapshot_from_manifest(data, snapshot_id, path, final=not path.name.endswith(PARTIAL))


def snapshot_from_manifest(data: object, snapshot_id: str, path: Path, *, final: bool = True) -> Snapshot:
    """The snapshot a manifest.json (parsed) describes; complete when final and the manifest says so."""
    if not isinstance(data, dict):
        return Snapshot(snapshot_id, path, complete=False)
    return Snapshot(
        id=snapshot_id,
        path=path,
        complete=bool(data.get("complete")) and final,
        created=str(data.get("created", "")),
        environment=str(data.get("environment", "")),
        project=str(data.get("project", "")),
        archives=[ArchiveRecord.from_dict(item) for item in data.get("archives", [])],
        hosts=dict(data.get("hosts", {})),
        host_dir=str(data.get("host_dir", "")),
    )


def list_snapshots(directory: Path) -> list[Snapshot]:
    """Every snapshot in the directory, oldest first (incomplete ones included, marked)."""
    if not directory.is_dir():
        return []
    found = [read_snapshot(path) for path in directory.iterdir() if path.is_dir() and not path.name.startswith(".")]
    return sorted(found, key=lambda snapshot: snapshot.id)


def find_snapshot(directory: Path, wanted: str | None) -> Snapshot:
    """The named complete snapshot (id or unique prefix; 'latest' or None: the newest)."""
    return choose_snapshot(list_snapshots(directory), wanted, str(directory))


def choose_snapshot(snapshots: list[Snapshot], wanted: str | None, where: str) -> Snapshot:
    """The named complete snapshot among snapshots (oldest first) kept at where (for the errors)."""
    complete = [snapshot for snapshot in snapshots if snapshot.complete]
    if not complete:
        raise BackupError(f"no complete snapshot in {where}", hint="run inv backup.all first")
    if not wanted or wanted == "latest":
        return complete[-1]
    matches = [snapshot for snapshot in complete if snapshot.id == wanted or snapshot.id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    exact = [snapshot for snapshot in matches if snapshot.id == wanted]
    if exact:
        return exact[0]
    known = ", ".join(snapshot.id for snapshot in complete[-5:])
    if matches:
        raise BackupError(f"snapshot {wanted!r} is ambiguous", hint=f"matches: {', '.join(s.id for s in matches)}")
    raise BackupError(f"no complete snapshot {wanted!r} in {where}", hint=f"newest: {known}; see inv backup.list")


def write_drill(snapshot: Snapshot, result: DrillResult) -> Path:
    """Record a drill beside the snapshot's manifest (replacing the last one), renamed into place."""
    path = snapshot.path / DRILL
    partial = path.with_name(f".{DRILL}.tmp")
    with partial.open("w") as handle:
        handle.write(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path


def last_drill(snapshot: Snapshot) -> DrillResult | None:
    """The snapshot's last restore drill (passed or failed); None when it was never drilled."""
    try:
        data = json.loads((snapshot.path / DRILL).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return DrillResult.from_dict(data) if isinstance(data, dict) else None


def host_dirname(host: str) -> str:
    """A host's directory in a snapshot (its name with anything unsafe in a path replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_text(snapshot: Snapshot, env: Environment) -> str:
    """manifest.json of the snapshot: complete with its archives, or (a host-target backup under
    way) incomplete, saying which hosts hold its `.partial` directories and where."""
    data = {
        "format": FORMAT,
        "complete": snapshot.complete,
        "id": snapshot.id,
        "environment": env.name,
        "project": env.project,
        "created": snapshot.created,
        "opskit": __version__,
        "hosts": snapshot.hosts,
        "target": "host" if snapshot.host_dir else "local",
        "host_dir": snapshot.host_dir,
        "archives": [record.as_dict() for record in snapshot.archives],
    }
    if snapshot.complete:
        data["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_manifest(snapshot: Snapshot, directory: Path, env: Environment) -> dict[str, str]:
    """Write manifest.json (complete) and BACKUP_INFO.md into directory; returns both texts by name."""
    info = backup_info(snapshot, env)
    text = manifest_text(replace(snapshot, complete=True), env)
    (directory / INFO).write_text(info)
    manifest = directory / MANIFEST
    with manifest.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return {MANIFEST: text, INFO: info}


def backup_info(snapshot: Snapshot, env: Environment) -> str:
    """BACKUP_INFO.md: what is in the snapshot and how to restore it, with and without opskit."""
    lines = [
        f"# Backup {snapshot.id} of {env.project} ({env.name})",
        "",
        f"Taken {snapshot.created} by opskit {__version__}. Checksums and versions: manifest.json.",
        "",
        "| host | volume | services | recipe | archive | bytes | sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in snapshot.archives:
        lines.append(
            f"| {r.host} | {r.volume} | {', '.join(r.services)} | {r.recipe} | {r.archive} | {r.bytes} | {r.sha256[:16]}… |"
        )
    lines += [
        "",
        "## Restore with opskit",
        "",
        "```sh",
        f"inv backup.verify --env {env.name} {snapshot.id}",
        f"inv backup.restore --env {env.name} {snapshot.id} [--volume VOLUME] [--host HOST] --yes",
        "```",
        "It stops the services using each volume, replaces the volume's contents, starts them again",
        "and waits until the stack is healthy.",
        "",
        "## Restore by hand (on the host, as root)",
        "",
        "```sh",
        "sha256sum ARCHIVE                     # compare with manifest.json",
        f"cd {ProjectLayout(env.project).current}",
        "docker compose stop SERVICE           # the services listed for the volume",
        "docker volume create VOLUME_NAME      # if it is gone (volume_name in manifest.json)",
        'dir=$(docker volume inspect -f "{{.Mountpoint}}" VOLUME_NAME)',
        'find "$dir" -mindepth 1 -delete',
        'zstd -dc ARCHIVE.tar.zst | tar -C "$dir" --numeric-owner -xpf -     # gzip -dc for .tar.gz',
        "docker compose start SERVICE",
        "```",
        "A `prometheus` archive holds a TSDB snapshot: restore it as the whole data directory.",
        "A `postgres` archive is `pg_dumpall` SQL: `zstd -dc ARCHIVE | docker compose exec -T SERVICE psql -U postgres`.",
        "",
    ]
    return "\n".join(lines)
