"""Archives encrypted on this machine with age(1): the recipients and identity settings, a sink
that encrypts what it is written, and the plaintext of an encrypted archive read back. The
plaintext never touches this machine's disk."""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ops.backup.model import ArchiveRecord
from ops.config import Environment
from ops.errors import BackupError
from ops.transport.shell import last_line


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


def age_binary() -> str:
    found = shutil.which("age")
    if found is None:
        raise BackupError("encryption needs the age tool on this machine", hint="apt-get install age")
    return found


class AgeSink:
    """A file-like sink that encrypts through `age` into path; close() raises on failure."""

    def __init__(self, path: Path, recipient_args: list[str]):
        self.path = path
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close, abort or _fail)
        self._process = subprocess.Popen(
            [age_binary(), "-e", *recipient_args, "-o", str(path)], stdin=subprocess.PIPE, stderr=self._errors
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
        raise BackupError(f"age failed: {last_line(message)}")

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


@contextlib.contextmanager
def plaintext(path: Path, record: ArchiveRecord, identity: Path | None) -> Iterator[IO[bytes]]:
    """The archive's bytes as the host needs them: decrypted here (age) when it was encrypted."""
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
            [age_binary(), "-d", "-i", str(identity), str(path)], stdout=subprocess.PIPE, stderr=errors
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
            raise BackupError(f"age could not decrypt {record.archive}: {last_line(errors.read(4096).decode())}")


def age_identity(env: Environment) -> Path | None:
    text = env.backup.age_identity
    if not text:
        return None
    path = Path(text).expanduser()
    path = path if path.is_absolute() else env.root / path
    if not path.is_file():
        raise BackupError(f"BACKUP_AGE_IDENTITY: {text} does not exist", where=str(env.file.name))
    return path
