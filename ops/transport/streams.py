"""Bulk bytes to and from a command on a host: through ssh(1) when it is installed (C moves the
data), else through a paramiko channel of the runner's connection. A chunk at a time, never a
whole stream in memory; nothing here knows what the bytes are (archives, files, dumps).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ops.config import HostSpec
from ops.errors import ConnectionLost

CHUNK = 1 << 20


class Sink(Protocol):
    """Where a command's stdout goes: a file opened "wb", or anything with write(bytes)."""

    def write(self, data: bytes, /) -> int: ...


class Source(Protocol):
    """What feeds a command's stdin: a file opened "rb", a pipe, anything with read(n)."""

    def read(self, size: int = -1, /) -> bytes: ...


def ssh_argv(
    spec: HostSpec, *, known_hosts: Path, identity_file: Path | None, connect_timeout: float
) -> list[str] | None:
    """The OpenSSH client for bulk data, with the same pinned host keys and identity as the runner.

    paramiko moves data in Python (tens of MB/s on a busy machine); ssh(1) does it in C. Host keys
    are checked against the environment's known_hosts only (StrictHostKeyChecking=yes, no global
    file, no user config), as for every other connection. None when ssh(1) is not installed (or
    OPS_BACKUP_PARAMIKO is set): paramiko is used then.
    """
    if shutil.which("ssh") is None or os.environ.get("OPS_BACKUP_PARAMIKO"):
        return None
    argv = ["ssh", "-F", "/dev/null", "-T", "-x", "-a", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", f"ConnectTimeout={int(connect_timeout)}", "-o", "LogLevel=ERROR"]
    argv += ["-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com"]
    argv += ["-o", "ServerAliveInterval=15", "-p", str(spec.port), "-l", spec.user]
    if identity_file:
        argv += ["-i", str(identity_file), "-o", "IdentitiesOnly=yes"]
    return [*argv, "--", spec.address]


def open_channel(client: Any, command: str, where: str) -> Any:
    """A paramiko session running command, with a window wide enough for bulk data."""
    transport = client.get_transport()
    if transport is None:
        raise ConnectionLost("the SSH connection to the host is closed", where=where)
    try:
        channel = transport.open_session(window_size=1 << 25, max_packet_size=1 << 15)
        channel.exec_command(command)
    except Exception:  # paramiko's SSHException on a dead transport, socket errors
        raise ConnectionLost("the SSH connection to the host dropped", where=where) from None
    return channel


def openssh_out(argv: list[str], command: str, sink: Sink, on_bytes: Callable[[int], None]) -> tuple[int, str]:
    """ssh(1) runs command, its stdout into sink; (exit code, the start of its stderr)."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([*argv, command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            fd = process.stdout.fileno()
            while data := os.read(fd, CHUNK):
                sink.write(data)
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
    return code, stderr


def channel_out(channel: Any, sink: Sink, on_bytes: Callable[[int], None]) -> tuple[int, str]:
    """The same over a paramiko channel already running the command."""
    stderr = bytearray()
    try:
        while True:
            data = channel.recv(CHUNK)
            if not data:
                break
            sink.write(data)
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
    return code, stderr.decode(errors="replace")


def openssh_in(argv: list[str], command: str, source: Source, on_bytes: Callable[[int], None]) -> tuple[int, str]:
    """ssh(1) runs command with source on its stdin; (exit code, the start of its output and errors
    interleaved as they came)."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen([*argv, command], stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT)
        assert process.stdin is not None
        try:
            while chunk := source.read(CHUNK):
                process.stdin.write(chunk)
                on_bytes(len(chunk))
            process.stdin.close()
        except BrokenPipeError:
            pass  # the remote command ended early: its exit code and output say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()  # once more after a broken pipe: the descriptor is still open
        code = process.wait()
        output.seek(0)
        text = output.read(65536).decode(errors="replace")
    return code, text


def channel_in(channel: Any, source: Source, on_bytes: Callable[[int], None], where: str) -> tuple[int, str]:
    """The same over a paramiko channel already running the command."""
    output = bytearray()
    try:
        while chunk := source.read(CHUNK):
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
    except Exception:  # the remote end died mid-stream (socket errors, paramiko's SSHException)
        raise ConnectionLost("the connection to the host dropped mid-stream", where=where) from None
    finally:
        channel.close()
    return code, output.decode(errors="replace")
