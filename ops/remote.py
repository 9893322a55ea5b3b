"""Hosts and fleets: commands, files and the Docker engine of a server over one SSH connection.

A Host runs everything through a Runner; SSHRunner is the real one (fabric/paramiko, host keys
verified against the environment's known_hosts, never auto-added), unit tests pass a fake.
A Fleet maps work over hosts with bounded concurrency and reports per host; one failing host
never stops the others.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ops.config import Environment, HostSpec
from ops.errors import AuthenticationError, CommandError, HostError, HostKeyError, OpsError

# paramiko's transport thread logs a traceback when a host dies mid-connection; with no handler,
# Python's last-resort handler would print it on stderr. The error reaches the user as one line
# (HostError, naming the host) instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    import docker
    import paramiko

T = TypeVar("T")


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

    def ssh_client(self) -> paramiko.SSHClient: ...

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
            raise HostError(f"unreachable: {reason}", where=where, hint="is the host up and the port right?") from None
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
                raise HostError(
                    f"command timed out after {timeout}s: {_short(command)}", where=self.spec.name
                ) from None
            raise HostError(f"connection lost: {error}", where=self.spec.name) from None
        return CommandResult(command, result.exited, result.stdout, result.stderr)

    def _run_with_stdin(
        self, connection: Any, command: str, stdin: str | bytes, timeout: float | None
    ) -> CommandResult:
        try:
            channel = connection.client.get_transport().open_session()
            channel.settimeout(timeout)
            # Running a shell command on the host is this method's job; callers quote every value
            # they put in it with shlex.quote (ops.images, ops.provision, ops.releases).
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
        except (OSError, EOFError) as error:
            raise HostError(f"connection lost: {error or type(error).__name__}", where=self.spec.name) from None
        return CommandResult(command, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        self._open().put(str(local) if isinstance(local, Path) else local, remote)

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        self._open().get(remote, str(local) if isinstance(local, Path) else local)

    def ssh_client(self) -> paramiko.SSHClient:
        client: paramiko.SSHClient = self._open().client
        return client

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _docker_client(runner: Runner, where: str) -> docker.DockerClient:
    """A Docker SDK client that speaks to the host's engine through the runner's SSH connection.

    docker-py's own SSH adapter opens a second connection that trusts ~/.ssh/known_hosts only;
    reusing our verified connection keeps one pinned identity per host.
    """
    import docker
    from docker.transport.sshconn import SSHHTTPAdapter

    ssh_client = runner.ssh_client()

    class PinnedSSHAdapter(SSHHTTPAdapter):  # type: ignore[misc]
        def _create_paramiko_client(self, base_url: str) -> None:
            self.ssh_client = ssh_client
            self.ssh_params: dict[str, Any] = {}

        def _connect(self) -> None:
            # Reconnecting would bypass host-key pinning; the runner owns the connection.
            if not ssh_client.get_transport():
                runner.ssh_client()

    api = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41")
    # Each pooled HTTP connection holds an SSH channel open; sshd allows 10 per connection
    # (MaxSessions) and our commands need some too.
    adapter = PinnedSSHAdapter(f"ssh://{where}", timeout=60, pool_connections=1, max_pool_size=3)
    api._custom_adapter = adapter
    api.mount("http+docker://ssh", adapter)
    api._unmount("http://", "https://")
    api.base_url = "http+docker://ssh"
    try:
        api._version = api._retrieve_server_version()
    except docker.errors.DockerException as error:
        raise HostError(
            f"Docker engine not reachable over SSH ({str(error).splitlines()[0][:160]})",
            where=where,
            hint="is Docker installed and is the user in the docker group? run inv provision",
        ) from None
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client


class Host:
    """One server: run commands (as the login user or with sudo), move files, use its Docker."""

    def __init__(self, spec: HostSpec, runner: Runner):
        self.spec = spec
        self.runner = runner
        self._docker: docker.DockerClient | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Host({self.spec.target})"

    def run(
        self, command: str, *, check: bool = True, timeout: float | None = None, stdin: str | bytes | None = None
    ) -> CommandResult:
        """Run a shell command as the login user; check=True raises CommandError on failure."""
        result = self.runner.run(command, timeout=timeout, stdin=stdin)
        if check and not result.ok:
            output = (result.stderr or result.stdout).strip()
            raise CommandError(
                f"`{_short(command)}` exited {result.exit_code}: {_last_line(output)}",
                where=self.name,
                exit_code=result.exit_code,
                output=output,
            )
        return result

    def sudo(
        self, command: str, *, check: bool = True, timeout: float | None = None, stdin: str | bytes | None = None
    ) -> CommandResult:
        """Run a command as root: directly when logged in as root, else through `sudo -n`."""
        if self.spec.user != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        return self.run(command, check=check, timeout=timeout, stdin=stdin)

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        self.runner.put(local, remote)

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        self.runner.get(remote, local)

    def docker(self) -> docker.DockerClient:
        """The host's Docker engine through the Docker SDK, over this host's SSH connection."""
        if self._docker is None:
            self._docker = _docker_client(self.runner, self.spec.target)
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        self.runner.close()


def _short(command: str, limit: int = 60) -> str:
    flat = " ".join(command.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


@dataclass
class HostOutcome(Generic[T]):
    """The result of one host's share of a fleet operation."""

    host: str
    value: T | None = None
    error: OpsError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FleetResult(Generic[T]):
    outcomes: list[HostOutcome[T]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> list[HostOutcome[T]]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


class Fleet:
    """The hosts of an environment, worked on in parallel with bounded concurrency."""

    def __init__(self, hosts: Sequence[Host], parallel: int = 10):
        self.hosts = list(hosts)
        self.parallel = max(1, parallel)

    @classmethod
    def connect(
        cls,
        env: Environment,
        *,
        only: Iterable[str] | None = None,
        user: str | None = None,
        runner_factory: Callable[[HostSpec], Runner] | None = None,
    ) -> Fleet:
        """Hosts for env (lazy: nothing connects until a host is used)."""
        specs = list(env.hosts)
        if only:
            wanted = set(only)
            specs = [s for s in specs if wanted & {s.name, s.address, s.target}]
            if not specs:
                raise HostError(
                    f"no host of environment {env.name} matches {', '.join(sorted(wanted))}",
                    hint=f"hosts: {', '.join(s.name for s in env.hosts)}",
                )
        if user:
            specs = [s.as_user(user) for s in specs]

        make = runner_factory or (lambda spec: SSHRunner.for_environment(spec, env))
        return cls([Host(spec, make(spec)) for spec in specs], env.parallel)

    def map(self, work: Callable[[Host], T]) -> FleetResult[T]:
        """Run work on every host, at most `parallel` at once; errors are kept per host."""

        def one(host: Host) -> HostOutcome[T]:
            started = time.monotonic()
            try:
                value = work(host)
            except OpsError as error:
                return HostOutcome(host.name, error=error, seconds=time.monotonic() - started)
            return HostOutcome(host.name, value=value, seconds=time.monotonic() - started)

        if len(self.hosts) == 1:
            return FleetResult([one(self.hosts[0])])
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(self.hosts))) as pool:
            return FleetResult(list(pool.map(one, self.hosts)))

    def open_connections(self) -> None:
        """Open every host's SSH connection at once, so the handshakes overlap each other and
        whatever runs meanwhile. A host that cannot be reached fails its first command."""
        self.map(lambda host: host.runner.ssh_client())

    def close(self) -> None:
        for host in self.hosts:
            host.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def openssh_argv(host: Host) -> list[str] | None:
    """The OpenSSH client for bulk data, with the same pinned host keys and identity as the runner.

    paramiko moves data in Python (tens of MB/s on a busy machine); ssh(1) does it in C. Host keys
    are checked against the environment's known_hosts only (StrictHostKeyChecking=yes, no global
    file, no user config), as for every other connection. None when ssh(1) is not installed or the
    host is not reached over SSHRunner (unit tests): paramiko is used then.
    """
    runner = host.runner
    if not isinstance(runner, SSHRunner) or shutil.which("ssh") is None or os.environ.get("OPS_BACKUP_PARAMIKO"):
        return None
    spec = runner.spec
    argv = ["ssh", "-F", "/dev/null", "-T", "-x", "-a", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", f"UserKnownHostsFile={runner.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", f"ConnectTimeout={int(runner.connect_timeout)}", "-o", "LogLevel=ERROR"]
    argv += ["-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com"]
    argv += ["-o", "ServerAliveInterval=15", "-p", str(spec.port), "-l", spec.user]
    if runner.identity_file:
        argv += ["-i", str(runner.identity_file), "-o", "IdentitiesOnly=yes"]
    return [*argv, "--", spec.address]
