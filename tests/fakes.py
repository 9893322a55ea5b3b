"""A fake Runner for unit tests: canned answers by command substring, every command recorded;
streamed commands get canned bytes out and have the bytes fed in recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ops.errors import HostError
from ops.transport import CommandResult
from ops.transport.streams import Sink, Source


class FakeRunner:
    def __init__(
        self,
        answers: dict[str, tuple[int, str]] | None = None,
        unreachable: str | None = None,
        outputs: dict[str, bytes] | None = None,
    ):
        self.answers = answers or {}  # command substring -> (exit code, output)
        self.unreachable = unreachable
        self.outputs = outputs or {}  # command substring -> the bytes stream_out writes to the sink
        self.commands: list[str] = []
        self.files: dict[str, bytes] = {}
        self.received: dict[str, bytes] = {}  # command -> the bytes stream_in fed it

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        if self.unreachable:
            raise HostError(f"unreachable: {self.unreachable}", where="fake")
        self.commands.append(command)
        for pattern, (code, output) in self.answers.items():
            if pattern in command:
                return CommandResult(command, code, output if code == 0 else "", output if code else "")
        return CommandResult(command, 0, "", "")

    def stream_out(self, command: str, sink: Sink, on_bytes: Callable[[int], None]) -> CommandResult:
        answer = self.run(command)
        if answer.ok:
            data = next((data for pattern, data in self.outputs.items() if pattern in command), b"")
            for start in range(0, len(data), 4096):
                sink.write(data[start : start + 4096])
                on_bytes(len(data[start : start + 4096]))
        return CommandResult(command, answer.exit_code, "", answer.stderr)

    def stream_in(self, command: str, source: Source, on_bytes: Callable[[int], None]) -> CommandResult:
        answer = self.run(command)
        received = bytearray()
        while chunk := source.read(4096):
            received += chunk
            on_bytes(len(chunk))
        self.received[command] = bytes(received)
        return CommandResult(command, answer.exit_code, answer.stdout + answer.stderr, "")

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

    def close(self) -> None:
        pass
