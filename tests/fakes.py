"""A fake Runner for unit tests: canned answers by command substring, every command recorded."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ops.errors import HostError
from ops.transport import CommandResult


class FakeRunner:
    def __init__(self, answers: dict[str, tuple[int, str]] | None = None, unreachable: str | None = None):
        self.answers = answers or {}
        self.unreachable = unreachable
        self.commands: list[str] = []
        self.files: dict[str, bytes] = {}

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        if self.unreachable:
            raise HostError(f"unreachable: {self.unreachable}", where="fake")
        self.commands.append(command)
        for pattern, (code, output) in self.answers.items():
            if pattern in command:
                return CommandResult(command, code, output if code == 0 else "", output if code else "")
        return CommandResult(command, 0, "", "")

    def put(self, local: Path | IO[bytes], remote: str) -> None:
        self.files[remote] = local.read_bytes() if isinstance(local, Path) else local.read()

    def get(self, remote: str, local: Path | IO[bytes]) -> None:
        data = self.files[remote]
        if isinstance(local, Path):
            local.write_bytes(data)
        else:
            local.write(data)

    def ssh_client(self) -> Any:
        raise HostError("the fake runner has no SSH connection")

    def follow(self, command: str, on_line: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
        """The canned answer's output as lines, one at a time, until stop is set."""
        for line in self.run(command).stdout.splitlines():
            if stop is not None and stop.is_set():
                return
            on_line(line)

    def close(self) -> None:
        pass
