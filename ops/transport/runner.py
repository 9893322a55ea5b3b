"""Runners: how commands and files reach one server. SSHRunner is the real one (fabric/paramiko,
host keys verified against the environment's known_hosts, never auto-added); unit tests pass a
fake runner (tests/fakes.py) with the same verbs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ops.config import Environment, HostSpec
from ops.errors import AuthenticationError, ConnectionLost, HostError, HostKeyError
from ops.transport.shell import short
from ops.transport.streams import Sink, Source, channel_in, channel_out, open_channel, openssh_in, openssh_out, ssh_argv

# paramiko's transport thread logs a traceback when a host dies mid-connection; with no handler,
# Python's last-resort handler would print it on stderr. The error reaches the user as one line
# (HostError, naming the host) instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    import paramiko


@dataclass(frozen=True)
class CommandResult:
    """What a command on a host did."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Runner(Protocol):
    """How a Host reaches its server. SSHRunner in real use; a fake one in unit tests."""

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult: ...

    def put(self, local: Path | IO[bytes], remote: str) -> None: ...

    def get(self, remote: str, local: Path | IO[bytes]) -> None: ...

    def stream_out(self, command: str, sink: Sink, on_bytes: Callable[[int], None]) -> CommandResult:
        """Run command with its stdout written to sink as it comes (on_bytes told each chunk's
        size); the result's stdout is empty, its stderr the start of the command's."""
        ...

    def stream_in(self, command: str, source: Source, on_bytes: Callable[[int], None]) -> CommandResult:
        """Run command with source read to its end into its stdin; the result's stdout is the start
        of the command's output and errors, interleaved."""
        ...

    def ssh_client(self) -> paramiko.SSHClient: ...

    def follow(self, command: str, on_line: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
        """Feed on_line each line of command's stdout as it arrives, until it ends or stop is set."""
        ...

    def close(self) -> None: ...


def trust_hint(env_name: str) -> str:
    return f"if you expect this key, check it and run: inv hosts.trust --env {env_name}"


class SSHRunner:
    """A Runner over one paramiko connection opened through fabric, host key pinned."""

    def __init__(
        self,
        spec: HostSpec,
        *,
        known_hosts: Path,
        identity_file: Path | None = None,
        connect_timeout: float = 10,
        env_name: str = "",
    ):
        self.spec = spec
        self.known_hosts = known_hosts
        self.identity_file = identity_file
        self.connect_timeout = connect_timeout
        self.env_name = env_name
        self._connection: Any = None

    @classmethod
    def for_environment(cls, spec: HostSpec, env: Environment) -> SSHRunner:
        """A runner to spec with the environment's pinned host keys, identity and timeout."""
        return cls(
            spec,
            known_hosts=env.known_hosts,
            identity_file=env.identity_file,
            connect_timeout=env.connect_timeout,
            env_name=env.name,
        )

    def _open(self) -> Any:
        if self._connection is not None and self._connection.is_connected:
            return self._connection
        import paramiko
        from fabric import Config, Connection

        connect_kwargs: dict[str, Any] = {"allow_agent": False, "look_for_keys": False}
        if self.identity_file:
            connect_kwargs["key_filename"] = str(self.identity_file)
        else:
            connect_kwargs.update(allow_agent=True, look_for_keys=True)
        connection = Connection(
            host=self.spec.address,
            user=self.spec.user,
            port=self.spec.port,
            connect_timeout=int(self.connect_timeout),
            connect_kwargs=connect_kwargs,
            config=Config(overrides={"load_ssh_configs": False}),
        )
        # Fabric installs AutoAddPolicy and never reads known_hosts (fabric #1804, #2071):
        # pin the environment's keys and refuse anything else.
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if self.known_hosts.exists():
            connection.client.get_host_keys().load(str(self.known_hosts))
        where = self.spec.name
        try:
            connection.open()
        except paramiko.BadHostKeyException as error:
            raise HostKeyError(
                f"host key CHANGED (got {error.key.get_name()} {error.key.fingerprint}); refusing to connect",
                where=where,
                hint=f"a changed key may mean the server was rebuilt or an attack; {trust_hint(self.env_name)}",
            ) from None
        except paramiko.AuthenticationException as error:
            raise AuthenticationError(
                f"authentication as {self.spec.user} failed ({error})",
                where=where,
                hint="check SSH_IDENTITY_FILE and the user in HOSTS",
            ) from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" in str(error):
                raise HostKeyError(
                    f"unknown host key (not in {self.known_hosts.name}); refusing to connect",
                    where=where,
                    hint=trust_hint(self.env_name),
                ) from None
            raise HostError(f"SSH failed: {error}", where=where) from None
        except (TimeoutError, OSError) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "connection refused"
            raise ConnectionLost(
                f"unreachable: {reason}", where=where, hint="is the host up and the port right?", unreachable=True
            ) from None
        self._connection = connection
        return connection

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        connection = self._open()
        if stdin is not None:
            # invoke feeds stdin a byte at a time with a sleep in between: far too slow for files.
            return self._run_with_stdin(connection, command, stdin, timeout)
        try:
            result = connection.run(command, hide=True, warn=True, pty=False, timeout=timeout, in_stream=False)
        except Exception as error:  # invoke's CommandTimedOut, paramiko errors mid-command
            if type(error).__name__ == "CommandTimedOut":
                raise HostError(f"command timed out after {timeout}s: {short(command)}", where=self.spec.name) from None
            raise ConnectionLost(
                f"the connection to the host dropped while running `{short(command)}`", where=self.spec.name
            ) from None
        return CommandResult(command, result.exited, result.stdout, result.stderr)

    def _run_with_stdin(
        self, connection: Any, command: str, stdin: str | bytes, timeout: float | None
    ) -> CommandResult:
        try:
            channel = connection.client.get_transport().open_session()
            channel.settimeout(timeout)
            # Running a shell command on the host is this method's job; callers quote every value
            # they put in it with shlex.quote (ops.images.delivery, ops.provision, ops.deploy.releases).
            channel.exec_command(command)  # nosec B601
            channel.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            channel.shutdown_write()
            stdout, stderr = bytearray(), bytearray()
            while True:
                if channel.recv_ready():
                    stdout += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                elif channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                else:
                    channel.status_event.wait(0.05)
            code = channel.recv_exit_status()
            channel.close()
        except Exception:  # socket errors, EOF, paramiko's SSHException ("SSH session not active")
            raise ConnectionLost(
                f"the connection to the host dropped while running `{short(command)}`", where=self.spec.name
            ) from None
        return CommandResult(command, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        self._open().put(str(local) if isinstance(local, Path) else local, remote)

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        self._open().get(remote, str(local) if isinstance(local, Path) else local)

    def openssh_argv(self) -> list[str] | None:
        """ssh(1) to this host for bulk data, pinned like this runner; None without ssh(1)."""
        return ssh_argv(
            self.spec,
            known_hosts=self.known_hosts,
            identity_file=self.identity_file,
            connect_timeout=self.connect_timeout,
        )

    def stream_out(self, command: str, sink: Sink, on_bytes: Callable[[int], None]) -> CommandResult:
        argv = self.openssh_argv()
        if argv is not None:
            code, stderr = openssh_out(argv, command, sink, on_bytes)
        else:
            code, stderr = channel_out(open_channel(self.ssh_client(), command, self.spec.name), sink, on_bytes)
        return CommandResult(command, code, "", stderr)

    def stream_in(self, command: str, source: Source, on_bytes: Callable[[int], None]) -> CommandResult:
        argv = self.openssh_argv()
        if argv is not None:
            code, output = openssh_in(argv, command, source, on_bytes)
        else:
            channel = open_channel(self.ssh_client(), command, self.spec.name)
            code, output = channel_in(channel, source, on_bytes, self.spec.name)
        return CommandResult(command, code, output, "")

    def ssh_client(self) -> paramiko.SSHClient:
        client: paramiko.SSHClient = self._open().client
        return client

    def follow(self, command: str, on_line: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
        """Run command on its own channel of the connection and feed on_line each line of its stdout
        as it arrives, until the command ends or stop is set (closing the channel then ends it)."""
        transport = self._open().client.get_transport()
        if transport is None:
            return
        channel = transport.open_session()
        try:
            # A short timeout so that stop is seen within half a second when no line comes.
            channel.settimeout(0.5)
            # Running a shell command on the host is this method's job; callers quote every value
            # they put in it with shlex.quote (ops.oncall.services).
            channel.exec_command(command)  # nosec B601
            buffer = b""
            while stop is None or not stop.is_set():
                try:
                    chunk = channel.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
            if buffer:
                on_line(buffer.decode(errors="replace"))
        finally:
            channel.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
