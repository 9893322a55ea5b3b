"""Where a snapshot's archives are written and read back: LocalStore (a directory on this machine,
archives streamed over SSH and hashed on the way) and HostStore (a directory on each host, the
archive never leaves it). Stores move and hash bytes; what goes into an archive is a recipe's."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from ops.backup.age import AgeSink, age_identity, plaintext
from ops.backup.catalogue import PARTIAL
from ops.backup.commands import as_root
from ops.backup.model import ArchiveRecord, Snapshot
from ops.config import Environment
from ops.console import Reporter
from ops.errors import BackupError, OpsError
from ops.transport import CommandResult, Host
from ops.transport.shell import last_line
from ops.transport.streams import CHUNK, Sink


def stream_failed(host: Host, result: CommandResult, what: str) -> BackupError:
    """A streamed command's non-zero exit, told as ssh's own failure (255) or the command's."""
    output = result.stderr or result.stdout
    if result.exit_code == 255:
        return BackupError(f"ssh failed during {what}: {last_line(output)}", where=host.name)
    return BackupError(f"{what} exited {result.exit_code}: {last_line(output)}", where=host.name)


class _Hashing:
    """A sink that hashes and counts what passes through it on its way to the real sink."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes, /) -> int:
        self.sink.write(data)
        self.digest.update(data)
        self.bytes += len(data)
        return len(data)


def stream_from_host(host: Host, command: str, sink: Sink, on_bytes: Callable[[int], None]) -> tuple[int, str, str]:
    """Run command on the host and write its stdout to sink; (bytes, sha256, stderr)."""
    hashing = _Hashing(sink)
    result = host.stream_out(command, hashing, on_bytes)
    if not result.ok:
        raise stream_failed(host, result, "archive command")
    return hashing.bytes, hashing.digest.hexdigest(), result.stderr


def stream_to_host(host: Host, command: str, source: Path | IO[bytes], on_bytes: Callable[[int], None]) -> str:
    """Feed a local file (or stream) to a command's stdin on the host; raises on a non-zero exit."""
    with source.open("rb") if isinstance(source, Path) else contextlib.nullcontext(source) as handle:
        result = host.stream_in(command, handle, on_bytes)
    if not result.ok:
        raise stream_failed(host, result, f"`{command[:60]}...`")
    return result.stdout


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


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
                age = AgeSink(path, self.encrypt_to)
                try:
                    stream_from_host(host, command, age, progress)
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
                f"cannot create {directory}: {last_line(made.stderr or made.stdout)}",
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
        with size_watch(host, path, progress) as reported:
            result = host.run(as_root(script, host.spec.user), check=False, timeout=None)
        lines = result.stdout.split()
        if not result.ok or len(lines) < 3:
            host.run(as_root(f"rm -f {path}", host.spec.user), check=False)
            output = result.stderr or result.stdout
            if "no space left" in output.lower():
                raise disk_full(relative.rsplit("/", 1)[-1], f"{host.name}:{self.base}", "BACKUP_HOST_DIR")
            raise BackupError(f"archive command exited {result.exit_code}: {last_line(output)}", where=host.name)
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
            raise BackupError(f"{what} exited {result.exit_code}: {last_line(result.stderr or result.stdout)}")
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
def size_watch(host: Host, path: str, progress: Callable[[int], None], every: float = 1.0) -> Iterator[list[int]]:
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
