"""A Host: one server's commands, files and Docker engine, all through its Runner."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ops.config import HostSpec
from ops.errors import CommandError
from ops.transport.docker import remote_client
from ops.transport.runner import CommandResult, Runner
from ops.transport.shell import last_line, short
from ops.transport.streams import Sink, Source

if TYPE_CHECKING:
    import docker


class Host:
    """One server: run commands (as the login user or with sudo), move files, use its Docker."""

    def __init__(self, spec: HostSpec, runner: Runner, *, docker_client: docker.DockerClient | None = None):
        """docker_client: the engine client to use instead of one over the runner's SSH connection (tests
        pass a double beside their fake runner)."""
        self.spec = spec
        self.runner = runner
        self._docker: docker.DockerClient | None = docker_client

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
                f"`{short(command)}` exited {result.exit_code}: {last_line(output)}",
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

    def follow(self, command: str, on_line: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
        """Feed on_line each line of command's output as it arrives, until it ends or stop is set."""
        self.runner.follow(command, on_line, stop=stop)

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        self.runner.put(local, remote)

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        self.runner.get(remote, local)

    def stream_out(self, command: str, sink: Sink, on_bytes: Callable[[int], None]) -> CommandResult:
        """Run command with its stdout into sink (bulk data); the caller checks the exit code."""
        return self.runner.stream_out(command, sink, on_bytes)

    def stream_in(self, command: str, source: Source, on_bytes: Callable[[int], None]) -> CommandResult:
        """Run command with source on its stdin (bulk data); the caller checks the exit code."""
        return self.runner.stream_in(command, source, on_bytes)

    def docker(self) -> docker.DockerClient:
        """The host's Docker engine through the Docker SDK, over this host's SSH connection."""
        if self._docker is None:
            self._docker = remote_client(self.runner, self.spec.target)
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        self.runner.close()
