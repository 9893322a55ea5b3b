"""Back up, verify, restore and prune the named volumes of a stack's hosts.

Each archive streams from the host (tar | zstd run there) over SSH straight into the snapshot
directory on this machine, hashed on the way: nothing is staged on the host. A snapshot is
written as `<id>.partial/` and renamed to `<id>/` only after every archive and its manifest are
on disk, so an interrupted or failed backup never looks complete. This module never prints.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from ops import __version__
from ops.config import Environment, HostSpec
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Reporter
from ops.deploy.health import project_health
from ops.errors import BackupError, OpsError
from ops.host.labels import BACKUP_POST_LABEL as POST_LABEL
from ops.host.labels import BACKUP_PRE_LABEL as PRE_LABEL
from ops.host.labels import BACKUP_RECIPE_LABEL as RECIPE_LABEL
from ops.host.labels import BACKUP_STOP_LABEL as STOP_LABEL
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL, VOLUME_LABEL
from ops.host.lock import held
from ops.transport import Fleet, Host, openssh_argv

RECIPES = ("files", "redis", "postgres", "prometheus")
MANIFEST = "manifest.json"
INFO = "BACKUP_INFO.md"
PARTIAL = ".partial"
FORMAT = 1
CHUNK = 1 << 20
EXTENSIONS = {"zstd": ".zst", "gzip": ".gz"}
# zstd -1: on a 2-core host compression is the bottleneck of a backup; -1 is the fastest level that
# still entropy-codes what it cannot match (benchmarks/backup.py). BACKUP_LEVEL raises it, or
# lowers it below zero to zstd's --fast levels (matches only: faster, larger archives).
DEFAULT_LEVEL = 1
LEVELS = {"zstd": (-10, 19), "gzip": (1, 9)}


# --- facts: what a host has --------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeFact:
    name: str  # the engine's name, e.g. demo_redis-data
    key: str  # the compose name, e.g. redis-data
    mountpoint: str


@dataclass(frozen=True)
class ContainerFact:
    id: str
    name: str
    service: str
    image: str
    running: bool
    labels: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # volume name -> path in the container


def parse_volumes(inspect_json: str) -> list[VolumeFact]:
    """`docker volume inspect ...` output -> facts."""
    items = json.loads(inspect_json or "[]") or []
    return [
        VolumeFact(item["Name"], (item.get("Labels") or {}).get(VOLUME_LABEL) or item["Name"], item["Mountpoint"])
        for item in items
    ]


def parse_containers(inspect_json: str) -> list[ContainerFact]:
    """`docker inspect CONTAINER...` output -> facts."""
    facts = []
    for item in json.loads(inspect_json or "[]") or []:
        labels = (item.get("Config") or {}).get("Labels") or {}
        mounts = {m["Name"]: m.get("Destination", "") for m in item.get("Mounts") or [] if m.get("Type") == "volume"}
        facts.append(
            ContainerFact(
                id=item["Id"][:12],
                name=item.get("Name", "").lstrip("/"),
                service=labels.get(SERVICE_LABEL, ""),
                image=(item.get("Config") or {}).get("Image", ""),
                running=bool((item.get("State") or {}).get("Running")),
                labels=dict(labels),
                mounts=mounts,
            )
        )
    return facts


def read_facts(host: Host, project: str) -> tuple[list[VolumeFact], list[ContainerFact]]:
    label = shlex.quote(f"label={PROJECT_LABEL}={project}")
    names = host.run(f"docker volume ls -q --filter {label}").stdout.split()
    volumes = (
        parse_volumes(host.run(f"docker volume inspect {' '.join(map(shlex.quote, names))}").stdout) if names else []
    )
    ids = host.run(f"docker ps -aq --filter {label}").stdout.split()
    containers = parse_containers(host.run(f"docker inspect {' '.join(ids)}").stdout) if ids else []
    return volumes, containers


# --- the plan: what to run for one volume ------------------------------------------------------


@dataclass(frozen=True)
class VolumePlan:
    """How one volume is archived: recipe, hooks, containers to stop, and the archive command."""

    volume: VolumeFact
    services: tuple[str, ...]
    recipe: str  # files | redis | postgres | prometheus
    recipe_container: str = ""  # container the recipe talks to
    pre: tuple[tuple[str, str], ...] = ()  # (container, command)
    post: tuple[tuple[str, str], ...] = ()
    stop: tuple[str, ...] = ()  # containers stopped while archiving (always started again)
    compression: str = "zstd"

    @property
    def archive_name(self) -> str:
        suffix = ".sql" if self.recipe == "postgres" else ".tar"
        return f"{self.volume.key}{suffix}{EXTENSIONS[self.compression]}"


def detect_recipe(container: ContainerFact) -> str:
    """A label wins; else the image's or service's name (redis, postgres, prometheus)."""
    labelled = container.labels.get(RECIPE_LABEL, "").strip().lower()
    if labelled:
        if labelled not in RECIPES:
            raise BackupError(
                f"{RECIPE_LABEL}={labelled!r} is not a recipe",
                where=container.service or container.name,
                hint=f"use one of: {', '.join(RECIPES)}",
            )
        return labelled
    words = f"{container.image.split(':')[0].rsplit('/', 1)[-1]} {container.service}".lower()
    for recipe in ("postgres", "redis", "prometheus"):
        if recipe in words and "alertmanager" not in words:
            return recipe
    return "files"


def plan_volume(volume: VolumeFact, containers: Sequence[ContainerFact], compression: str = "zstd") -> VolumePlan:
    users = [c for c in containers if volume.name in c.mounts]
    stop = tuple(c.name for c in users if c.running and c.labels.get(STOP_LABEL, "").lower() == "true")
    recipe, recipe_container = "files", ""
    for container in users:
        found = detect_recipe(container)
        if found != "files" and container.running and container.name not in stop:
            recipe, recipe_container = found, container.name
            break
    return VolumePlan(
        volume=volume,
        services=tuple(sorted({c.service for c in users if c.service})),
        recipe=recipe,
        recipe_container=recipe_container,
        pre=tuple((c.name, c.labels[PRE_LABEL]) for c in users if c.running and c.labels.get(PRE_LABEL)),
        post=tuple((c.name, c.labels[POST_LABEL]) for c in users if c.running and c.labels.get(POST_LABEL)),
        stop=stop,
        compression=compression,
    )


def select_volumes(volumes: Iterable[VolumeFact], include: Sequence[str], exclude: Sequence[str]) -> list[VolumeFact]:
    """Include (default all) minus exclude; names match the compose name or the engine's name."""

    def named(volume: VolumeFact, names: Sequence[str]) -> bool:
        return volume.key in names or volume.name in names

    chosen = [v for v in volumes if (not include or named(v, include)) and not named(v, exclude)]
    return sorted(chosen, key=lambda v: v.key)


def compressor(compression: str, level: int = DEFAULT_LEVEL) -> str:
    if compression == "gzip":
        # pigz compresses on every core when the host has it.
        return f"{{ if command -v pigz >/dev/null; then pigz -c -{min(level, 9)}; else gzip -c -{min(level, 9)}; fi; }}"
    return f"zstd -q -c -T0 --fast={-level}" if level < 0 else f"zstd -q -c -T0 -{level}"


def compression_level(env: Environment, compression: str) -> int:
    """BACKUP_LEVEL checked against the compressor: zstd 1..19 or -1..-10 (--fast), gzip 1..9."""
    level = env.backup.level
    low, high = LEVELS[compression]
    if level == 0 or not low <= level <= high:
        allowed = "1 to 19, or -1 to -10 for zstd --fast" if compression == "zstd" else "1 to 9"
        raise BackupError(
            f"BACKUP_LEVEL={level} is not a {compression} level",
            where=str(env.file.name),
            hint=f"set BACKUP_LEVEL to {allowed}",
        )
    return level


def decompressor(compression: str) -> str:
    return "gzip -dc" if compression == "gzip" else "zstd -q -dc"


def as_root(script: str, user: str) -> str:
    """A bash script (pipefail on) run as root: directly when we are root, else `sudo -n`."""
    wrapped = f"bash -c {shlex.quote('set -o pipefail; ' + script)}"
    return wrapped if user == "root" else f"sudo -n {wrapped}"


def tar_command(directory: str, compression: str, user: str, level: int = DEFAULT_LEVEL) -> str:
    """Stream a directory's contents as a compressed tar on stdout (owners kept as numbers)."""
    return as_root(f"tar -C {shlex.quote(directory)} --numeric-owner -cf - . | {compressor(compression, level)}", user)


def pg_dump_command(container: str, compression: str, level: int = DEFAULT_LEVEL) -> str:
    """Every database of a PostgreSQL container as one SQL stream (pg_dumpall: roles and all dbs)."""
    dump = 'pg_dumpall -U "${POSTGRES_USER:-postgres}" --clean --if-exists'
    return f"bash -c {shlex.quote(f'set -o pipefail; docker exec {shlex.quote(container)} sh -c {shlex.quote(dump)} | ' + compressor(compression, level))}"


def redis_cli(container: str, args: str) -> str:
    cli = f'redis-cli ${{REDIS_PASSWORD:+-a "$REDIS_PASSWORD" --no-auth-warning}} {args}'
    return f"docker exec {shlex.quote(container)} sh -c {shlex.quote(cli)}"


PROMETHEUS_SNAPSHOT = """url=http://127.0.0.1:9090/api/v1/admin/tsdb/snapshot
if command -v curl >/dev/null 2>&1; then curl -fsS -XPOST "$url"
elif command -v wget >/dev/null 2>&1; then wget -qO- --post-data= "$url"
else
  exec 3<>/dev/tcp/127.0.0.1/9090
  printf 'POST /api/v1/admin/tsdb/snapshot HTTP/1.0\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\n\\r\\n' >&3
  cat <&3
fi
"""


def prometheus_snapshot_command(container: str) -> str:
    """The admin API's snapshot, called inside the container (the API is never published)."""
    shell = "if command -v bash >/dev/null 2>&1; then exec bash -s; else exec sh -s; fi"
    return f"docker exec -i {shlex.quote(container)} sh -c {shlex.quote(shell)}"


def snapshot_name(response: str) -> str:
    match = re.search(r'"name"\s*:\s*"([A-Za-z0-9_.-]+)"', response)
    if not match or '"success"' not in response:
        raise BackupError(f"prometheus snapshot failed: {response.strip()[-200:] or 'no answer'}")
    return match.group(1)


# --- results -----------------------------------------------------------------------------------


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


# --- the snapshot store on this machine --------------------------------------------------------


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
    return Snapshot(
        id=snapshot_id,
        path=path,
        complete=bool(data.get("complete")) and not path.name.endswith(PARTIAL),
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
    complete = [snapshot for snapshot in list_snapshots(directory) if snapshot.complete]
    if not complete:
        raise BackupError(f"no complete snapshot in {directory}", hint="run inv backup.all first")
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
    raise BackupError(f"no complete snapshot {wanted!r} in {directory}", hint=f"newest: {known}; see inv backup.list")


# --- streaming ---------------------------------------------------------------------------------


def _channel(host: Host, command: str) -> Any:
    transport = host.runner.ssh_client().get_transport()
    if transport is None:
        raise BackupError("SSH connection lost", where=host.name)
    channel = transport.open_session(window_size=1 << 25, max_packet_size=1 << 15)
    channel.exec_command(command)
    return channel


def _ssh_failed(host: Host, code: int, stderr: str, what: str) -> BackupError:
    if code == 255:
        return BackupError(f"ssh failed during {what}: {_last_line(stderr)}", where=host.name)
    return BackupError(f"{what} exited {code}: {_last_line(stderr)}", where=host.name)


def stream_from_host(
    host: Host, command: str, sink: IO[bytes], on_bytes: Callable[[int], None]
) -> tuple[int, str, str]:
    """Run command on the host and write its stdout to sink; (bytes, sha256, stderr)."""
    argv = openssh_argv(host)
    if argv is None:
        return _stream_from_paramiko(host, command, sink, on_bytes)
    import subprocess
    import tempfile

    digest = hashlib.sha256()
    total = 0
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([*argv, command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            fd = process.stdout.fileno()
            while data := os.read(fd, CHUNK):
                sink.write(data)
                digest.update(data)
                total += len(data)
                on_bytes(len(data))
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        errors.seek(0)
        stderr = errors.read(65536).decode(errors="replace")
    if code != 0:
        raise _ssh_failed(host, code, stderr, "archive command")
    return total, digest.hexdigest(), stderr


def _stream_from_paramiko(
    host: Host, command: str, sink: IO[bytes], on_bytes: Callable[[int], None]
) -> tuple[int, str, str]:
    digest = hashlib.sha256()
    total = 0
    stderr = bytearray()
    channel = _channel(host, command)
    try:
        while True:
            data = channel.recv(CHUNK)
            if not data:
                break
            sink.write(data)
            digest.update(data)
            total += len(data)
            on_bytes(len(data))
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)[:4096]
        while channel.recv_stderr_ready() or not channel.exit_status_ready():
            if channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)[:4096]
            else:
                channel.status_event.wait(0.05)
        code = channel.recv_exit_status()
    finally:
        channel.close()
    if code != 0:
        raise _ssh_failed(host, code, stderr.decode(errors="replace"), "archive command")
    return total, digest.hexdigest(), stderr.decode(errors="replace")


def _reader(source: Path | IO[bytes]) -> contextlib.AbstractContextManager[IO[bytes]]:
    return source.open("rb") if isinstance(source, Path) else contextlib.nullcontext(source)


@contextlib.contextmanager
def plaintext(path: Path, record: ArchiveRecord, identity: Path | None) -> Iterator[IO[bytes]]:
    """The archive's bytes as the host needs them: decrypted here (age) when it was encrypted."""
    import subprocess
    import tempfile

    if not record.encrypted:
        with path.open("rb") as handle:
            yield handle
        return
    if identity is None:
        raise BackupError(
            f"{record.archive} is encrypted and BACKUP_AGE_IDENTITY is not set",
            hint="point it at the age identity file",
        )
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [_age_binary(), "-d", "-i", str(identity), str(path)], stdout=subprocess.PIPE, stderr=errors
        )
        assert process.stdout is not None
        try:
            yield process.stdout
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        if process.wait() != 0:
            errors.seek(0)
            raise BackupError(f"age could not decrypt {record.archive}: {_last_line(errors.read(4096).decode())}")


def age_identity(env: Environment) -> Path | None:
    text = env.backup.age_identity
    if not text:
        return None
    path = Path(text).expanduser()
    path = path if path.is_absolute() else env.root / path
    if not path.is_file():
        raise BackupError(f"BACKUP_AGE_IDENTITY: {text} does not exist", where=str(env.file.name))
    return path


def stream_to_host(host: Host, command: str, source: Path | IO[bytes], on_bytes: Callable[[int], None]) -> str:
    """Feed a local file (or stream) to a command's stdin on the host; raises on a non-zero exit."""
    argv = openssh_argv(host)
    if argv is None:
        return _stream_to_paramiko(host, command, source, on_bytes)
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as output, _reader(source) as handle:
        process = subprocess.Popen([*argv, command], stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT)
        assert process.stdin is not None
        try:
            while chunk := handle.read(CHUNK):
                process.stdin.write(chunk)
                on_bytes(len(chunk))
            process.stdin.close()
        except BrokenPipeError:
            pass  # the remote command ended early: its exit code and output say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        code = process.wait()
        output.seek(0)
        text = output.read(65536).decode(errors="replace")
    if code != 0:
        raise _ssh_failed(host, code, text, f"`{command[:60]}...`")
    return text


def _stream_to_paramiko(host: Host, command: str, source: Path | IO[bytes], on_bytes: Callable[[int], None]) -> str:
    channel = _channel(host, command)
    output = bytearray()
    try:
        with _reader(source) as handle:
            while chunk := handle.read(CHUNK):
                channel.sendall(chunk)
                on_bytes(len(chunk))
                while channel.recv_ready():
                    output += channel.recv(65536)[:4096]
                while channel.recv_stderr_ready():
                    output += channel.recv_stderr(65536)[:4096]
        channel.shutdown_write()
        while not channel.exit_status_ready() or channel.recv_ready() or channel.recv_stderr_ready():
            if channel.recv_ready():
                output += channel.recv(65536)[:4096]
            elif channel.recv_stderr_ready():
                output += channel.recv_stderr(65536)[:4096]
            else:
                channel.status_event.wait(0.05)
        code = channel.recv_exit_status()
    except OSError as error:  # the remote end died mid-stream
        raise BackupError(f"stream to host broke: {error}", where=host.name) from None
    finally:
        channel.close()
    text = output.decode(errors="replace")
    if code != 0:
        raise _ssh_failed(host, code, text, f"`{command[:60]}...`")
    return text


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


# --- targets: where archives are written and read back from ---------------------------------------


def disk_full(name: str, where: str, setting: str) -> BackupError:
    return BackupError(
        f"target disk full while writing {name}; the partial archive was removed",
        where=where,
        hint=f"free space or set {setting} elsewhere; earlier snapshots are untouched",
    )


class ArchiveStore:
    """Where a snapshot's archives live. Paths are `<snapshot id>/<host dir>/<archive>`; during a
    backup the snapshot directory is `<id>.partial`. The manifest and BACKUP_INFO.md are always
    written on this machine too (the catalogue list and prune read)."""

    def begin(self, host: Host, snapshot_id: str, relative_dir: str) -> None:
        """Make the host's directory in the partial snapshot."""

    def write(
        self, host: Host, command: str, snapshot_id: str, relative: str, progress: Callable[[int], None]
    ) -> tuple[int, str]:
        """Run command on the host and store its stdout as the archive; (bytes, sha256)."""
        raise NotImplementedError

    def checksum(
        self, host: Host | None, snapshot: Snapshot, record: ArchiveRecord, reporter: Reporter
    ) -> tuple[int, str] | None:
        """(bytes, sha256) of a stored archive; None when it is missing."""
        raise NotImplementedError

    def feed(
        self, host: Host, command: str, snapshot: Snapshot, record: ArchiveRecord, reporter: Reporter, what: str
    ) -> None:
        """Run command on the host with the archive's (plaintext) bytes on its stdin."""
        raise NotImplementedError

    def finish(self, hosts: Sequence[Host], snapshot_id: str, files: dict[str, str]) -> None:
        """Mark the snapshot complete wherever its archives are (before the catalogue is)."""

    def discard(self, hosts: Sequence[Host], snapshot_id: str, *, partial: bool) -> None:
        """Remove a snapshot's archives (a failed backup's partial one, or a pruned one)."""


class LocalStore(ArchiveStore):
    """A directory on this machine (BACKUP_DIR): archives stream from the host over SSH."""

    def __init__(self, base: Path, identity: Path | None = None, encrypt_to: list[str] | None = None):
        self.base = base
        self.identity = identity
        self.encrypt_to = encrypt_to

    def write(
        self, host: Host, command: str, snapshot_id: str, relative: str, progress: Callable[[int], None]
    ) -> tuple[int, str]:
        path = self.base / f"{snapshot_id}{PARTIAL}" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.encrypt_to:
                age = _AgeSink(path, self.encrypt_to)
                try:
                    stream_from_host(host, command, age, progress)  # type: ignore[arg-type]
                except BaseException:
                    age.abort()
                    raise
                age.close()
                return path.stat().st_size, sha256_file(path)
            with path.open("wb") as sink:
                size, digest, _ = stream_from_host(host, command, sink, progress)
                sink.flush()
                os.fsync(sink.fileno())
            return size, digest
        except OSError as error:
            path.unlink(missing_ok=True)
            if error.errno == errno.ENOSPC:
                raise disk_full(path.name, str(self.base), "BACKUP_DIR") from None
            raise BackupError(f"cannot write {path}: {error.strerror or error}", where=host.name) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def checksum(
        self, host: Host | None, snapshot: Snapshot, record: ArchiveRecord, reporter: Reporter
    ) -> tuple[int, str] | None:
        path = snapshot.path / record.archive
        if not path.is_file():
            return None
        size = path.stat().st_size
        return size, sha256_file(path, reporter.transfer("local", f"sha256 {record.archive}", size))

    def feed(
        self, host: Host, command: str, snapshot: Snapshot, record: ArchiveRecord, reporter: Reporter, what: str
    ) -> None:
        path = snapshot.path / record.archive
        progress = reporter.transfer(host.name, f"{what} {record.volume}", path.stat().st_size)
        with plaintext(path, record, self.identity) as reader:
            stream_to_host(host, command, reader, progress)


class HostStore(ArchiveStore):
    """A directory on each host (BACKUP_TARGET=host, BACKUP_HOST_DIR): tar | zstd | sha256 run on
    the host and the archive never leaves it; verify and restore read it there."""

    def __init__(self, base: str):
        self.base = base.rstrip("/") or "/"

    def path(self, snapshot_id: str, relative: str = "", *, partial: bool = False) -> str:
        directory = f"{self.base}/{snapshot_id}{PARTIAL if partial else ''}"
        return f"{directory}/{relative}" if relative else directory

    def begin(self, host: Host, snapshot_id: str, relative_dir: str) -> None:
        directory = self.path(snapshot_id, relative_dir, partial=True)
        made = host.run(as_root(f"mkdir -p {shlex.quote(directory)}", host.spec.user), check=False)
        if not made.ok:
            raise BackupError(
                f"cannot create {directory}: {_last_line(made.stderr or made.stdout)}",
                where=host.name,
                hint="check BACKUP_HOST_DIR",
            )

    def write(
        self, host: Host, command: str, snapshot_id: str, relative: str, progress: Callable[[int], None]
    ) -> tuple[int, str]:
        path = shlex.quote(self.path(snapshot_id, relative, partial=True))
        # Written, then hashed from the file (still in the page cache): nothing comes back but the
        # sum, and the sum is of what landed on disk. `| tee | sha256sum` in one pass was slower:
        # tee moves 8 KiB at a time, and on a 2-core host every extra copy competes with zstd.
        script = f"{command} > {path} && sha256sum < {path} && stat -c %s {path}"
        with _size_watch(host, path, progress) as reported:
            result = host.run(as_root(script, host.spec.user), check=False, timeout=None)
        lines = result.stdout.split()
        if not result.ok or len(lines) < 3:
            host.run(as_root(f"rm -f {path}", host.spec.user), check=False)
            output = result.stderr or result.stdout
            if "no space left" in output.lower():
                raise disk_full(relative.rsplit("/", 1)[-1], f"{host.name}:{self.base}", "BACKUP_HOST_DIR")
            raise BackupError(f"archive command exited {result.exit_code}: {_last_line(output)}", where=host.name)
        size = int(lines[-1])
        progress(size - reported[0])
        return size, lines[0]

    def checksum(
        self, host: Host | None, snapshot: Snapshot, record: ArchiveRecord, reporter: Reporter
    ) -> tuple[int, str] | None:
        assert host is not None
        path = shlex.quote(self.path(snapshot.id, record.archive))
        result = host.run(as_root(f"stat -c %s {path} && sha256sum < {path}", host.spec.user), check=False)
        lines = result.stdout.split()
        if not result.ok or len(lines) < 2:
            return None
        return int(lines[0]), lines[1]

    def feed(
        self, host: Host, command: str, snapshot: Snapshot, record: ArchiveRecord, reporter: Reporter, what: str
    ) -> None:
        path = shlex.quote(self.path(snapshot.id, record.archive))
        result = host.run(as_root(f"{command} < {path}", host.spec.user), check=False, timeout=None)
        if not result.ok:
            raise BackupError(f"{what} exited {result.exit_code}: {_last_line(result.stderr or result.stdout)}")
        reporter.transfer(host.name, f"{what} {record.volume}", record.bytes)(record.bytes)

    def finish(self, hosts: Sequence[Host], snapshot_id: str, files: dict[str, str]) -> None:
        partial, final = self.path(snapshot_id, partial=True), self.path(snapshot_id)
        for host in hosts:
            for name, text in files.items():
                host.run(as_root(f"cat > {shlex.quote(f'{partial}/{name}')}", host.spec.user), stdin=text)
            host.run(as_root(f"sync && mv -T {shlex.quote(partial)} {shlex.quote(final)}", host.spec.user))

    def discard(self, hosts: Sequence[Host], snapshot_id: str, *, partial: bool) -> None:
        path = shlex.quote(self.path(snapshot_id, partial=partial))
        failed = []
        for host in hosts:
            try:
                removed = host.run(as_root(f"rm -rf {path}", host.spec.user), check=False).ok
            except OpsError:
                removed = False
            if not removed:
                failed.append(host.name)
        if failed:
            raise BackupError(
                f"could not remove {path} on {', '.join(failed)}", hint="backup.prune removes it when the host is back"
            )


@contextlib.contextmanager
def _size_watch(host: Host, path: str, progress: Callable[[int], None], every: float = 1.0) -> Iterator[list[int]]:
    """While the body writes path on the host, advance progress by the file's growth, checked with
    `stat` every `every` seconds over the same SSH connection; yields [bytes reported so far]."""
    reported = [0]
    done = threading.Event()
    user = host.spec.user

    def watch() -> None:
        while not done.wait(every):
            try:
                answer = host.run(as_root(f"stat -c %s {path} 2>/dev/null", user), check=False).stdout.strip()
            except OpsError:
                return  # the write itself reports a lost connection
            if answer.isdigit() and int(answer) > reported[0] and not done.is_set():
                progress(int(answer) - reported[0])
                reported[0] = int(answer)

    watcher = threading.Thread(target=watch, name=f"size-watch {host.name}", daemon=True)
    watcher.start()
    try:
        yield reported
    finally:
        done.set()
        watcher.join()


def snapshot_store(env: Environment, snapshot: Snapshot) -> ArchiveStore:
    """Where a snapshot's archives are read back from (its manifest says)."""
    if snapshot.host_dir:
        return HostStore(snapshot.host_dir)
    return LocalStore(snapshot.path.parent, identity=age_identity(env))


def host_store(env: Environment, target: str | None = None) -> HostStore | None:
    """The host target when BACKUP_TARGET (or --target) says host; None for the local directory."""
    chosen = (target or env.backup.target).lower()
    if chosen not in ("local", "host"):
        raise BackupError(f"unknown backup target {chosen!r}", hint="local (BACKUP_DIR) or host (BACKUP_HOST_DIR)")
    if chosen == "local":
        return None
    base = env.backup.host_dir or f"/var/backups/opskit/{env.name}"
    if not base.startswith("/") or base.rstrip("/") in ("", "/"):
        raise BackupError(f"BACKUP_HOST_DIR {base!r} is not an absolute directory", where=str(env.file.name))
    return HostStore(base)


# --- backup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupOptions:
    hosts: list[str] | None = None
    volumes: list[str] | None = None  # limit to these (compose or engine names)
    compression: str | None = None  # default from BACKUP_COMPRESSION
    target: str | None = None  # local | host; default from BACKUP_TARGET
    lock_wait: float = 0  # seconds to wait for a deploy, rollback or restore holding the lock


def _wait_redis_save(host: Host, container: str, timeout: float) -> None:
    """BGSAVE, then wait until LASTSAVE moves past its value from before."""
    before = host.run(redis_cli(container, "LASTSAVE")).stdout.strip()
    now = host.run(redis_cli(container, "TIME")).stdout.split()
    if now and before and now[0].strip() == before:
        time.sleep(1.1)  # LASTSAVE has one-second resolution: a save this second would not show
    started = host.run(redis_cli(container, "BGSAVE")).stdout.strip()
    if "ERR" in started and "in progress" not in started:
        raise BackupError(f"redis BGSAVE failed: {started}", where=f"{host.name} {container}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(redis_cli(container, "LASTSAVE")).stdout.strip() != before:
            status = host.run(redis_cli(container, "INFO persistence")).stdout
            if "rdb_last_bgsave_status:ok" not in status:
                raise BackupError("redis BGSAVE reported an error", where=f"{host.name} {container}")
            return
        time.sleep(0.2)
    raise BackupError(f"redis BGSAVE did not finish in {timeout:.0f} s", where=f"{host.name} {container}")


def _run_hooks(host: Host, hooks: Iterable[tuple[str, str]], what: str, reporter: Reporter) -> None:
    for container, hook in hooks:
        result = host.run(f"docker exec {shlex.quote(container)} sh -c {shlex.quote(hook)}", check=False, timeout=600)
        if not result.ok:
            raise BackupError(
                f"{what} hook of {container} exited {result.exit_code}: {_last_line(result.stderr or result.stdout)}",
                where=host.name,
            )
        reporter.step(host.name, f"{what} hook", OK, container)


def age_recipient_args(recipient: str, root: Path) -> list[str]:
    """`-r KEY` for a public key, `-R FILE` for a recipients file (relative to the repository)."""
    if recipient.startswith(("age1", "ssh-")):
        return ["-r", recipient]
    path = Path(recipient).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise BackupError(
            f"BACKUP_AGE_RECIPIENT: {recipient} is neither an age public key nor a file",
            hint="age1... or a recipients file",
        )
    return ["-R", str(path)]


def _age_binary() -> str:
    found = shutil.which("age")
    if found is None:
        raise BackupError("encryption needs the age tool on this machine", hint="apt-get install age")
    return found


class _AgeSink:
    """A file-like sink that encrypts through `age` into path; close() raises on failure."""

    def __init__(self, path: Path, recipient_args: list[str]):
        import subprocess
        import tempfile

        self.path = path
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close, abort or _fail)
        self._process = subprocess.Popen(
            [_age_binary(), "-e", *recipient_args, "-o", str(path)], stdin=subprocess.PIPE, stderr=self._errors
        )

    def write(self, data: bytes) -> int:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except BrokenPipeError:
            self._fail()
        return len(data)

    def _fail(self) -> None:
        self._process.wait()
        self._errors.seek(0)
        message = self._errors.read(4096).decode(errors="replace")
        self._errors.close()
        if "no space left" in message.lower():
            raise OSError(errno.ENOSPC, "No space left on device")
        raise BackupError(f"age failed: {_last_line(message)}")

    def close(self) -> None:
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        if self._process.wait() != 0:
            self._fail()
        self._errors.close()

    def abort(self) -> None:
        self._process.kill()
        self._process.wait()
        self._errors.close()


def archive_volume(
    host: Host,
    plan: VolumePlan,
    store: ArchiveStore,
    snapshot_id: str,
    reporter: Reporter,
    *,
    level: int = DEFAULT_LEVEL,
    timeout: float = 300,
    release: str = "",
    encrypted: bool = False,
) -> ArchiveRecord:
    """Archive one volume into the store (recipes and hooks around it); the partial file goes on failure."""
    started = time.monotonic()
    user = host.spec.user
    source = plan.volume.mountpoint
    cleanup = ""
    stopped: list[str] = []
    relative = f"{_host_dirname(host.name)}/{plan.archive_name}{'.age' if encrypted else ''}"
    try:
        _run_hooks(host, plan.pre, "pre", reporter)
        for container in plan.stop:
            host.run(f"docker stop {shlex.quote(container)} >/dev/null", timeout=timeout)
            stopped.append(container)
            reporter.step(host.name, "stop", CHANGED, f"{container} while {plan.volume.key} is archived")
        if plan.recipe == "redis":
            _wait_redis_save(host, plan.recipe_container, timeout)
            reporter.step(host.name, "redis BGSAVE", OK, plan.recipe_container)
        command = tar_command(source, plan.compression, user, level)
        if plan.recipe == "prometheus":
            answer = host.run(prometheus_snapshot_command(plan.recipe_container), stdin=PROMETHEUS_SNAPSHOT).stdout
            name = snapshot_name(answer)
            source = f"{plan.volume.mountpoint}/snapshots/{name}"
            cleanup = source
            command = tar_command(source, plan.compression, user, level)
            reporter.step(host.name, "prometheus snapshot", OK, name)
        elif plan.recipe == "postgres":
            command = pg_dump_command(plan.recipe_container, plan.compression, level)
        progress = reporter.transfer(host.name, plan.volume.key)
        size, digest = store.write(host, command, snapshot_id, relative, progress)
    finally:
        if cleanup:
            host.run(as_root(f"rm -rf {shlex.quote(cleanup)}", user), check=False)
        for container in stopped:
            # Always started again, whatever happened while it was stopped.
            host.run(f"docker start {shlex.quote(container)} >/dev/null", check=False, timeout=timeout)
        if plan.post:
            try:
                _run_hooks(host, plan.post, "post", reporter)
            except OpsError as error:
                reporter.step(host.name, "post hook", FAILED, error.one_line())
    seconds = time.monotonic() - started
    reporter.step(
        host.name,
        "archive",
        CHANGED,
        f"{plan.volume.key} ({plan.recipe}) {size / 1e6:.1f} MB in {seconds:.1f} s",
    )
    return ArchiveRecord(
        host=host.name,
        volume=plan.volume.key,
        volume_name=plan.volume.name,
        services=plan.services,
        recipe=plan.recipe,
        archive=relative,
        compression=plan.compression,
        bytes=size,
        sha256=digest,
        seconds=round(seconds, 2),
        release=release,
        encrypted="age" if encrypted else "",
    )


def _host_versions(host: Host, project: str) -> dict[str, str]:
    from ops.deploy.releases import ReleaseStore

    result = host.run(
        "docker version --format '{{.Server.Version}}' 2>/dev/null; zstd --version 2>/dev/null | head -1; "
        "tar --version 2>/dev/null | head -1",
        check=False,
    ).stdout.splitlines()
    store = ReleaseStore(host, project)
    current = store.current_id() or ""
    release = store.get(current) if current else None
    return {
        "release": current,
        "version": release.version if release else "",
        "docker": result[0].strip() if result else "",
        "zstd": result[1].strip() if len(result) > 1 else "",
        "tar": result[2].strip() if len(result) > 2 else "",
    }


def _host_dirname(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host)


def backup_all(env: Environment, reporter: Reporter, options: BackupOptions | None = None) -> BackupResult:
    """Back up every selected volume of the stack on every host into a new snapshot."""
    options = options or BackupOptions()
    started = time.monotonic()
    compression = options.compression or env.backup.compression
    if compression not in EXTENSIONS:
        raise BackupError(f"unknown compression {compression!r}", hint="zstd or gzip")
    level = compression_level(env, compression)
    timeout = env.backup.timeout
    include = list(options.volumes or env.backup.include)
    exclude = list(env.backup.exclude)
    recipient = env.backup.age_recipient
    encrypt_to = age_recipient_args(recipient, env.root) if recipient else None
    on_host = host_store(env, options.target)
    if encrypt_to and on_host:
        raise BackupError(
            "BACKUP_AGE_RECIPIENT encrypts on this machine: it needs the local target",
            where=str(env.file.name),
            hint="unset BACKUP_AGE_RECIPIENT or use BACKUP_TARGET=local",
        )
    if encrypt_to:
        _age_binary()
    target = target_dir(env)
    store: ArchiveStore = on_host or LocalStore(target, encrypt_to=encrypt_to)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot create {target}: {error.strerror}", hint="check BACKUP_DIR") from None
    snapshot_id = new_snapshot_id()
    while (target / snapshot_id).exists() or (target / f"{snapshot_id}{PARTIAL}").exists():
        time.sleep(1)
        snapshot_id = new_snapshot_id()
    partial = target / f"{snapshot_id}{PARTIAL}"
    partial.mkdir()
    snapshot = Snapshot(
        snapshot_id,
        partial,
        complete=False,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=env.name,
        project=env.project,
        host_dir=on_host.base if on_host else "",
    )
    if on_host:
        # Says where the hosts' `<id>.partial` directories are, should this run be killed before
        # it can clean up: backup.prune removes them with this one once it is stale.
        snapshot.hosts = {spec.name: {} for spec in env.hosts if not options.hosts or spec.name in options.hosts}
        (partial / MANIFEST).write_text(_manifest_text(snapshot, env))
    reporter.info(f"snapshot {snapshot_id} -> {f'{on_host.base} on each host' if on_host else target}")
    hosts_info: dict[str, dict[str, str]] = {}

    def one(host: Host) -> list[ArchiveRecord]:
        volumes, containers = read_facts(host, env.project)
        chosen = select_volumes(volumes, include, exclude)
        if options.volumes:
            missing = sorted(set(options.volumes) - {v.key for v in chosen} - {v.name for v in chosen})
            if missing and not chosen:
                raise BackupError(
                    f"no volume {', '.join(missing)} of project {env.project}",
                    where=host.name,
                    hint=f"volumes: {', '.join(v.key for v in volumes) or 'none'}",
                )
        info = _host_versions(host, env.project)
        hosts_info[host.name] = info
        if not chosen:
            reporter.step(host.name, "volumes", OK, "nothing to back up")
            return []
        (partial / _host_dirname(host.name)).mkdir(exist_ok=True)
        store.begin(host, snapshot_id, _host_dirname(host.name))
        records = []
        for volume in chosen:
            plan = plan_volume(volume, containers, compression)
            records.append(
                archive_volume(
                    host,
                    plan,
                    store,
                    snapshot_id,
                    reporter,
                    level=level,
                    timeout=timeout,
                    release=info["release"],
                    encrypted=bool(encrypt_to),
                )
            )
        return records

    errors: list[str] = []
    try:
        fleet = Fleet.connect(env, only=options.hosts)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

    def abandon() -> None:
        """Remove the partial snapshot. While a host's part could not be removed (host gone), the
        catalogue here stays incomplete, so that backup.prune removes that part later."""
        try:
            store.discard(fleet.hosts, snapshot_id, partial=True)
        except Exception:  # the original error is what the operator must see; prune cleans up later
            return
        shutil.rmtree(partial, ignore_errors=True)

    with fleet:
        try:
            # No deploy, rollback or restore changes the volumes under the archive (a backup of a
            # half-restored volume would look complete).
            with held(fleet, env.project, f"backup {snapshot_id}", reporter, wait=options.lock_wait):
                outcome = fleet.map(one)
            for item in outcome.outcomes:
                if item.error is not None:
                    errors.append(item.error.one_line())
                    reporter.step(item.host, "backup", FAILED, item.error.one_line())
                snapshot.archives.extend(item.value or [])
            if not errors and not snapshot.archives:
                errors.append("no volume to back up on any host (check BACKUP_INCLUDE / BACKUP_EXCLUDE)")
            if errors:
                abandon()
                return BackupResult(None, errors, time.monotonic() - started)
            snapshot.hosts = hosts_info
            files = _write_manifest(snapshot, partial, env)
            # The archives' own copies are complete first; the catalogue here is the last step.
            store.finish([h for h in fleet.hosts if h.name in hosts_info], snapshot_id, files)
            final = target / snapshot_id
            os.rename(partial, final)
            _fsync_dir(target)
        except BaseException:
            abandon()
            raise
    snapshot.path = final
    snapshot.complete = True
    return BackupResult(snapshot, [], time.monotonic() - started)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest_text(snapshot: Snapshot, env: Environment) -> str:
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


def _write_manifest(snapshot: Snapshot, directory: Path, env: Environment) -> dict[str, str]:
    """Write manifest.json (complete) and BACKUP_INFO.md into directory; returns both texts by name."""
    info = backup_info(snapshot, env)
    text = _manifest_text(replace(snapshot, complete=True), env)
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
        f"cd /opt/{env.project}/current",
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


# --- verify ------------------------------------------------------------------------------------


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


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def test_extract_command(compression: str, recipe: str, mountpoint: str, user: str) -> str:
    """Decompress and unpack into a scratch volume (a dump is only decompressed: its check is zstd's)."""
    if recipe == "postgres":
        return as_root(f"{decompressor(compression)} > /dev/null", user)
    return as_root(f"{decompressor(compression)} | tar -C {shlex.quote(mountpoint)} --numeric-owner -xf -", user)


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
        detail = f"{record.archive}: {files} entries" if record.recipe != "postgres" else f"{record.archive}: dump ok"
        reporter.step(host.name, "test extract", OK, detail)
    finally:
        host.run(f"docker volume rm -f {scratch} >/dev/null", check=False)


# --- restore -----------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    snapshot: Snapshot
    restored: list[str] = field(default_factory=list)  # "host volume"
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.restored)


def restore_selection(snapshot: Snapshot, volume: str | None, host: str | None) -> list[ArchiveRecord]:
    """The archives to restore; unknown volume or host names are errors listing what exists."""
    records = snapshot.archives
    if host:
        records = [r for r in records if r.host == host or r.host.split(":")[0] == host]
        if not records:
            hosts = sorted({r.host for r in snapshot.archives})
            raise BackupError(f"snapshot {snapshot.id} has no host {host!r}", hint=f"hosts: {', '.join(hosts)}")
    if volume:
        records = [r for r in records if volume in (r.volume, r.volume_name)]
        if not records:
            volumes = sorted({r.volume for r in snapshot.archives})
            raise BackupError(f"snapshot {snapshot.id} has no volume {volume!r}", hint=f"volumes: {', '.join(volumes)}")
    return records


def restore_command(record: ArchiveRecord, mountpoint: str, user: str) -> str:
    """Empty the volume, then unpack the archive into it (owners and modes as archived)."""
    directory = shlex.quote(mountpoint)
    return as_root(
        f"find {directory} -mindepth 1 -delete && "
        f"{decompressor(record.compression)} | tar -C {directory} --numeric-owner -xpf -",
        user,
    )


def psql_restore_command(container: str, compression: str) -> str:
    run = 'psql -v ON_ERROR_STOP=1 -q -U "${POSTGRES_USER:-postgres}" -d postgres'
    return f"bash -c {shlex.quote(f'set -o pipefail; {decompressor(compression)} | docker exec -i {shlex.quote(container)} sh -c {shlex.quote(run)} >/dev/null')}"


def restore(
    env: Environment,
    reporter: Reporter,
    snapshot_id: str,
    *,
    volume: str | None = None,
    host: str | None = None,
) -> RestoreResult:
    """Put archived volumes back: stop their services, replace the contents, start, health-gate."""

    started = time.monotonic()
    snapshot = find_snapshot(target_dir(env), snapshot_id)
    if snapshot.project and snapshot.project != env.project:
        raise BackupError(
            f"snapshot {snapshot.id} is of project {snapshot.project}, not {env.project}", where=str(snapshot.path)
        )
    records = restore_selection(snapshot, volume, host)
    if any(record.encrypted for record in records) and age_identity(env) is None:
        raise BackupError("the archives are encrypted and BACKUP_AGE_IDENTITY is not set", hint="nothing was changed")
    store = snapshot_store(env, snapshot)
    for record in records:
        if not snapshot.host_dir and not (snapshot.path / record.archive).is_file():
            raise BackupError(f"archive {record.archive} is missing from {snapshot.path}", hint="inv backup.verify")
    result = RestoreResult(snapshot)
    records_on = by_host(records)
    timeout = env.deploy.health_timeout

    def one(target: Host) -> list[str]:
        done = []
        for record in records_on[target.name]:
            _restore_volume(target, env, snapshot, store, record, reporter)
            done.append(f"{target.name} {record.volume}")
        _gate_project(target, env.project, timeout)
        reporter.step(target.name, "health gate", OK, "every service healthy")
        return done

    with (
        Fleet.connect(env, only=sorted(records_on)) as fleet,
        held(fleet, env.project, f"restore {snapshot.id}", reporter),
    ):
        outcome = fleet.map(one)
    for item in outcome.outcomes:
        result.restored.extend(item.value or [])
        if item.error is not None:
            result.errors.append(item.error.one_line())
            reporter.step(item.host, "restore", FAILED, item.error.one_line())
    result.seconds = time.monotonic() - started
    return result


def _restore_volume(
    host: Host, env: Environment, snapshot: Snapshot, store: ArchiveStore, record: ArchiveRecord, reporter: Reporter
) -> None:
    from ops.deploy.releases import ReleaseStore

    volumes, containers = read_facts(host, env.project)
    users = [c for c in containers if record.volume_name in c.mounts]
    services = sorted(set(record.services) | {c.service for c in users if c.service})
    if snapshot.host_dir and store.checksum(host, snapshot, record, reporter) != (record.bytes, record.sha256):
        raise BackupError(
            f"archive {record.archive} on the host is missing or does not match its sha256; nothing was changed",
            where=f"{host.name}:{snapshot.host_dir}/{snapshot.id}",
            hint="inv backup.verify",
        )
    if record.recipe == "postgres":
        live = [c for c in users if c.running]
        if not live:
            raise BackupError(
                f"restoring a PostgreSQL dump needs its service running ({', '.join(services)})", where=host.name
            )
        store.feed(host, psql_restore_command(live[0].name, record.compression), snapshot, record, reporter, "restore")
        reporter.step(host.name, "restore", CHANGED, f"{record.volume}: dump loaded into {live[0].service}")
        return
    running = [c.name for c in users if c.running]
    if running:
        host.run(f"docker stop {' '.join(map(shlex.quote, running))} >/dev/null", timeout=300)
        reporter.step(host.name, "stop", CHANGED, ", ".join(running))
    existing = {v.name: v for v in volumes}
    if record.volume_name not in existing:
        labels = (
            f"--label {PROJECT_LABEL}={shlex.quote(env.project)} --label {VOLUME_LABEL}={shlex.quote(record.volume)}"
        )
        host.run(f"docker volume create {labels} {shlex.quote(record.volume_name)} >/dev/null")
        reporter.step(host.name, "volume", CHANGED, f"created {record.volume_name}")
    mountpoint = host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {shlex.quote(record.volume_name)}").stdout
    try:
        store.feed(
            host, restore_command(record, mountpoint.strip(), host.spec.user), snapshot, record, reporter, "restore"
        )
    finally:
        # Services come back whether or not the archive went in: a failed restore must not leave them down.
        if running:
            host.run(f"docker start {' '.join(map(shlex.quote, running))} >/dev/null", check=False, timeout=300)
        missing = sorted(set(services) - {c.service for c in users})
        releases = ReleaseStore(host, env.project)
        current = releases.get(releases.current_id() or "")
        if missing and current is not None:
            # Without --no-deps: under it Compose hashes a service without its depends_on, and the
            # next plain `up` (a deploy) would recreate it.
            host.run(
                releases.compose_command(current, f"up -d --no-build {' '.join(map(shlex.quote, missing))}"),
                check=False,
                timeout=600,
            )
    reporter.step(
        host.name, "restore", CHANGED, f"{record.volume} from {snapshot.id} ({', '.join(services) or 'no service'})"
    )


def _gate_project(host: Host, project: str, timeout: float) -> None:
    """Every service of the project healthy again (dependants may turn unhealthy while a volume's
    service was down; they get the whole timeout to recover instead of failing at once)."""
    from ops.deploy.health import gate_error

    containers = host.docker().containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    services = sorted({c.labels.get(SERVICE_LABEL, "") for c in containers} - {""})
    deadline = time.monotonic() + timeout
    while True:
        report = project_health(host, project, services)
        if all(service.ok for service in report):
            return
        if time.monotonic() >= deadline:
            bad = next(service for service in report if not service.ok)
            raise gate_error(host, bad, f"not healthy {timeout:.0f} s after the restore ({bad.state})")
        time.sleep(1)


# --- retention ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPolicy:
    """restic forget's rules: keep the newest `last`, and the newest of each of the last N days,
    ISO weeks and months that have a snapshot."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)

    @classmethod
    def from_env(cls, env: Environment) -> RetentionPolicy:
        settings = env.backup
        return cls(settings.keep_last, settings.keep_daily, settings.keep_weekly, settings.keep_monthly)


def retention(snapshots: Sequence[Snapshot], policy: RetentionPolicy) -> dict[str, list[str]]:
    """Which complete snapshots to keep and why (id -> reasons); the others may go.

    Whatever the policy, the newest copy of each (host, volume) is kept: prune never removes the
    last complete copy of a volume.
    """
    complete = sorted((s for s in snapshots if s.complete), key=lambda s: s.created_at, reverse=True)
    keep: dict[str, list[str]] = {}
    buckets = (
        ("daily", policy.daily, lambda t: t.strftime("%Y-%m-%d")),
        ("weekly", policy.weekly, lambda t: f"{t.isocalendar()[0]:04d}-W{t.isocalendar()[1]:02d}"),
        ("monthly", policy.monthly, lambda t: t.strftime("%Y-%m")),
    )
    for index, snapshot in enumerate(complete):
        if index < policy.last:
            keep.setdefault(snapshot.id, []).append("last")
    for name, count, key in buckets:
        seen: list[str] = []
        for snapshot in complete:
            bucket = key(snapshot.created_at)
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(bucket)
            keep.setdefault(snapshot.id, []).append(name)
    for snapshot in complete:
        for copy in sorted(snapshot.copies()):
            if not any(copy in s.copies() for s in complete if s.id in keep):
                keep.setdefault(snapshot.id, []).append(f"last copy of {copy[1]} on {copy[0]}")
    return keep


@dataclass
class PruneResult:
    kept: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    incomplete_removed: list[str] = field(default_factory=list)
    dry_run: bool = False


def prune(
    env: Environment,
    reporter: Reporter,
    policy: RetentionPolicy | None = None,
    *,
    dry_run: bool = False,
    stale_after: timedelta = timedelta(hours=6),
) -> PruneResult:
    """Remove the snapshots the policy does not keep, and incomplete ones older than stale_after."""
    policy = policy or RetentionPolicy.from_env(env)
    if policy.empty:
        raise BackupError(
            "no retention policy: every BACKUP_KEEP_* is 0", hint="set BACKUP_KEEP_LAST (or daily/weekly/monthly)"
        )
    target = target_dir(env)
    snapshots = list_snapshots(target)
    kept = retention(snapshots, policy)
    result = PruneResult(kept=kept, dry_run=dry_run)
    now = time.time()
    for snapshot in snapshots:
        if snapshot.complete and snapshot.id in kept:
            reporter.step("local", "keep", OK, f"{snapshot.id} ({', '.join(kept[snapshot.id])})")
            continue
        if not snapshot.complete:
            if now - snapshot.path.stat().st_mtime < stale_after.total_seconds():
                reporter.step("local", "keep", OK, f"{snapshot.path.name} (incomplete, may still be running)")
                continue
            result.incomplete_removed.append(snapshot.path.name)
        else:
            result.removed.append(snapshot.id)
        if not dry_run:
            if snapshot.host_dir:
                _discard_on_hosts(env, snapshot, partial=not snapshot.complete)
            shutil.rmtree(snapshot.path)
        reporter.step("local", "remove", WOULD_CHANGE if dry_run else CHANGED, snapshot.path.name)
    return result


def _discard_on_hosts(env: Environment, snapshot: Snapshot, *, partial: bool = False) -> None:
    """Remove a host-target snapshot's directory (`<id>.partial` for an incomplete one) on every host
    of the environment that holds one."""
    names = sorted(set(snapshot.hosts) & {spec.name for spec in env.hosts})
    if names:
        with Fleet.connect(env, only=names) as fleet:
            HostStore(snapshot.host_dir).discard(fleet.hosts, snapshot.id, partial=partial)


# --- schedule ----------------------------------------------------------------------------------

CRON_MARK = "# opskit-backup:"
CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")


def check_cron(expression: str) -> str:
    """Five cron fields or an @word; anything else is refused before the crontab changes."""
    expression = " ".join(expression.split())
    if expression in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@reboot"):
        return expression
    fields = expression.split(" ")
    if len(fields) != 5 or not all(CRON_FIELD.match(part) for part in fields):
        raise BackupError(
            f"{expression!r} is not a cron schedule", hint="five fields, e.g. '17 3 * * *' (03:17 daily), or @daily"
        )
    return expression


def cron_line(env: Environment, expression: str) -> str:
    """Back up, check the checksums, copy offsite (when set), then prune; one log per environment."""
    inv = env.root / ".venv" / "bin" / "inv"
    program = shlex.quote(str(inv)) if inv.exists() else "inv"
    log = shlex.quote(str(target_dir(env) / "cron.log"))
    name = shlex.quote(env.name)
    # A scheduled run waits up to 15 minutes for a deploy (or restore) to finish before it fails.
    tasks = [
        "all --lock-wait 900",
        "verify --no-extract",
        *(["offsite"] if env.backup.offsite else []),
        "prune",
    ]
    steps = " && ".join(f"{program} backup.{task} --env {name}" for task in tasks)
    return (
        f"{check_cron(expression)} cd {shlex.quote(str(env.root))} && mkdir -p {shlex.quote(str(target_dir(env)))} "
        f"&& {{ {steps}; }} >> {log} 2>&1 {CRON_MARK}{env.name}"
    )


def edit_crontab(current: str, env_name: str, line: str | None) -> str:
    """The crontab with this environment's entry replaced (or removed when line is None)."""
    kept = [entry for entry in current.splitlines() if not entry.endswith(f"{CRON_MARK}{env_name}")]
    if line:
        kept.append(line)
    return "".join(f"{entry}\n" for entry in kept)


def schedule(env: Environment, expression: str, *, remove: bool = False, crontab: str = "crontab") -> str:
    """Install (or remove) the recurring backup in this machine's crontab; returns the entry."""
    import subprocess

    line = None if remove else cron_line(env, expression)
    try:
        listed = subprocess.run([crontab, "-l"], capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError("crontab is not installed on this machine", hint="apt-get install cron") from None
    current = listed.stdout if listed.returncode == 0 else ""  # "no crontab for user" is an empty one
    done = subprocess.run([crontab, "-"], input=edit_crontab(current, env.name, line), capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"crontab refused the entry: {_last_line(done.stderr)}")
    return line or ""


# --- offsite -----------------------------------------------------------------------------------


def offsite_target(env: Environment) -> tuple[HostSpec, str] | None:
    """BACKUP_OFFSITE, `[user@]host[:port]:/absolute/path`, parsed; None when not set."""
    from ops.config import parse_host

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


@dataclass
class OffsiteResult:
    snapshot: Snapshot
    target: str
    copied: bool  # False: it was there already
    bytes: int = 0


def copy_offsite(env: Environment, reporter: Reporter, snapshot_id: str | None = None) -> OffsiteResult:
    """Copy a complete snapshot to the offsite host over SSH (pinned key), checked, then renamed.

    Like a local snapshot, the copy is written as `<id>.partial/` and renamed only after every
    archive's sha256 matched on the far side.
    """
    from ops.transport import SSHRunner

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
