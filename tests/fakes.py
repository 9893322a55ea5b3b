"""A fake Runner for unit tests: canned answers by command substring, every command recorded;
streamed commands get canned bytes out and have the bytes fed in recorded."""

from __future__ import annotations

import threading
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

    def follow(self, command: str, on_line: Callable[[str], None], *, stop: threading.Event | None = None) -> None:
        """The canned answer's output as lines, one at a time, until stop is set."""
        for line in self.run(command).stdout.splitlines():
            if stop is not None and stop.is_set():
                return
            on_line(line)

    def close(self) -> None:
        pass


class FakeContainer:
    """A container as the Docker SDK shows it: the attrs, list summary and calls opskit uses."""

    def __init__(
        self,
        engine: FakeDocker,
        name: str,
        labels: dict[str, str],
        image: str,
        *,
        image_ref: str = "",
        state: str = "running",
        health: str | None = "healthy",
        health_output: str = "",
        log: str = "",
        exit_code: int = 0,
        oom_killed: bool = False,
    ):
        self.engine = engine
        engine.serial += 1
        self.id = f"c{engine.serial:04d}"
        self.name = name
        self.labels = labels
        self.image = image  # image ID
        self.image_ref = image_ref or image  # what `docker ps` shows in .Image
        self.state = state  # running | exited | restarting | created
        self.health = health  # healthy | starting | unhealthy | None: no healthcheck
        self.health_output = health_output
        self.log = log
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.signals: list[str] = []

    @property
    def status(self) -> str:
        return self.state

    @property
    def attrs(self) -> dict[str, Any]:
        state: dict[str, Any] = {"Status": self.state, "ExitCode": self.exit_code, "OOMKilled": self.oom_killed}
        if self.health:
            state["Health"] = {"Status": self.health, "Log": [{"Output": self.health_output}]}
        return {"Id": self.id, "Name": f"/{self.name}", "Image": self.image, "State": state}

    def summary(self) -> dict[str, Any]:
        """The engine's list entry (`GET /containers/json`)."""
        if self.state != "running":
            status = f"Exited ({self.exit_code}) 3 seconds ago" if self.state == "exited" else self.state.capitalize()
        else:
            marks = {"healthy": " (healthy)", "unhealthy": " (unhealthy)", "starting": " (health: starting)"}
            status = "Up 5 minutes" + marks.get(self.health or "", "")
        return {"Id": self.id, "Names": [f"/{self.name}"], "Labels": self.labels, "State": self.state, "Status": status}

    def reload(self) -> None:
        pass

    def logs(self, tail: int = 15) -> bytes:
        return "\n".join(self.log.splitlines()[-tail:]).encode()

    def kill(self, signal: str = "SIGKILL") -> None:
        if self.state != "running":
            raise RuntimeError(f"container {self.name} is not running")
        self.signals.append(signal)

    def stop(self, timeout: int = 10) -> None:
        self.state = "exited"

    def remove(self, v: bool = False, force: bool = False) -> None:
        self.engine.removed.append(self.name)
        self.engine.created.remove(self)


class FakeDocker:
    """A Docker SDK client double for Host(docker_client=...): containers.list/get and
    api.containers with label filters, over containers a test (or a fake runner) creates."""

    def __init__(self) -> None:
        self.created: list[FakeContainer] = []  # those that exist, in creation order
        self.removed: list[str] = []  # names of those removed
        self.serial = 0
        self.containers = _FakeContainers(self)
        self.api = _FakeAPI(self)

    def add(self, name: str, labels: dict[str, str], image: str, **kwargs: Any) -> FakeContainer:
        container = FakeContainer(self, name, labels, image, **kwargs)
        self.created.append(container)
        return container

    def matching(self, filters: dict[str, list[str]] | None) -> list[FakeContainer]:
        wanted = [label.split("=", 1) for label in (filters or {}).get("label", [])]
        return [c for c in self.created if all(c.labels.get(key) == value for key, value in wanted)]

    def close(self) -> None:
        pass


class _FakeContainers:
    def __init__(self, engine: FakeDocker):
        self.engine = engine

    def list(self, all: bool = False, filters: dict[str, list[str]] | None = None) -> list[FakeContainer]:
        return [c for c in self.engine.matching(filters) if all or c.state == "running"]

    def get(self, container_id: str) -> FakeContainer:
        return next(c for c in self.engine.created if container_id in (c.id, c.name))


class _FakeAPI:
    def __init__(self, engine: FakeDocker):
        self.engine = engine

    def containers(self, all: bool = False, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return [c.summary() for c in self.engine.matching(filters) if all or c.state == "running"]


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps; each sleep first runs
    the next of `on_sleep` (how the world changes meanwhile)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep.pop(0)()
