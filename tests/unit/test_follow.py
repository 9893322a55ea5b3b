"""The runner's follow verb: SSHRunner over a scripted channel, the fake's canned lines, and
`ops.logs --follow` (service_logs) through the fake on two hosts."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ops.config import HostSpec, load_environment
from ops.oncall.services import service_logs
from ops.transport import SSHRunner
from tests.fakes import FakeRunner


class ScriptedChannel:
    """A paramiko channel that answers recv() from a script: bytes, TimeoutError, then EOF."""

    def __init__(self, script: list[bytes | type[Exception]]):
        self.script = list(script)
        self.command = ""
        self.closed = False

    def settimeout(self, timeout: float) -> None:
        pass

    def exec_command(self, command: str) -> None:
        self.command = command

    def recv(self, size: int) -> bytes:
        if not self.script:
            return b""
        item = self.script.pop(0)
        if isinstance(item, type):
            raise item()
        return item

    def close(self) -> None:
        self.closed = True


def ssh_runner(channel: ScriptedChannel) -> SSHRunner:
    runner = SSHRunner(HostSpec("127.0.0.21"), known_hosts=Path("/nonexistent"))
    transport = SimpleNamespace(open_session=lambda: channel)
    client = SimpleNamespace(get_transport=lambda: transport)
    runner._connection = SimpleNamespace(is_connected=True, client=client)
    return runner


def test_ssh_follow_feeds_whole_lines_across_chunks_and_the_last_partial_one() -> None:
    channel = ScriptedChannel([b"first li", b"ne\nsecond\nthi", TimeoutError, b"rd\n\xff", b"tail"])
    lines: list[str] = []
    ssh_runner(channel).follow("docker logs --follow c1 2>&1", lines.append)
    assert lines == ["first line", "second", "third", "\ufffdtail"]
    assert channel.command == "docker logs --follow c1 2>&1" and channel.closed


def test_ssh_follow_ends_when_stop_is_set_and_closes_its_channel() -> None:
    stop = threading.Event()
    channel = ScriptedChannel([b"one\n", b"two\n", b"three\n"])
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        stop.set()

    ssh_runner(channel).follow("docker logs --follow c1", on_line, stop=stop)
    assert lines == ["one"] and channel.closed


def test_the_fake_follows_its_canned_lines_until_stopped() -> None:
    runner = FakeRunner({"docker logs": (0, "a\nb\nc\n")})
    lines: list[str] = []
    runner.follow("docker logs --follow x", lines.append)
    assert lines == ["a", "b", "c"] and runner.commands == ["docker logs --follow x"]
    stop = threading.Event()
    stopped: list[str] = []
    runner.follow("docker logs --follow x", lambda line: (stopped.append(line), stop.set()), stop=stop)
    assert stopped == ["a"]


def two_hosts(tmp_path: Path) -> Any:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.21,127.0.0.22\nPROJECT=demo\n")
    return load_environment("lab", tmp_path, os.environ)


def runners() -> dict[str, FakeRunner]:
    return {
        address: FakeRunner(
            {
                "docker ps -a": (
                    0,
                    f"{address}-w|demo-web-1|web|||running\n{address}-r|demo-redis-1|redis|||running\n",
                ),
                "docker logs": (0, "GET /version 200\nGET /health 200\nGET /version 304\n"),
            }
        )
        for address in ("127.0.0.21", "127.0.0.22")
    }


def test_logs_follow_streams_every_host_through_the_runner(tmp_path: Path) -> None:
    fakes = runners()
    seen: list[tuple[str, str, str]] = []
    count = service_logs(
        two_hosts(tmp_path),
        "web",
        lambda host, container, line: seen.append((host, container, line)),
        follow=True,
        tail=0,
        grep="GET /version",
        runner_factory=lambda spec: fakes[spec.address],
    )
    assert count == 4
    assert sorted(seen) == sorted(
        (host, "demo-web-1", line) for host in fakes for line in ("GET /version 200", "GET /version 304")
    )
    for address, fake in fakes.items():
        logs = [command for command in fake.commands if command.startswith("docker logs")]
        assert logs == [f"docker logs --timestamps --tail 0 --follow {address}-w 2>&1"]


def test_logs_follow_ends_when_stop_is_set(tmp_path: Path) -> None:
    fakes = runners()
    stop = threading.Event()
    seen: list[str] = []

    def on_line(host: str, container: str, line: str) -> None:
        seen.append(line)
        stop.set()

    env = two_hosts(tmp_path)
    count = service_logs(env, "web", on_line, follow=True, stop=stop, runner_factory=lambda spec: fakes[spec.address])
    # Each host's stream sees stop before its next line: at most one line per host.
    assert 1 <= count == len(seen) <= 2 and stop.is_set()


def test_logs_without_follow_come_in_one_block_per_container(tmp_path: Path) -> None:
    fakes = runners()
    seen: list[str] = []
    count = service_logs(
        two_hosts(tmp_path),
        "web",
        lambda host, container, line: seen.append(f"{host} {line}"),
        runner_factory=lambda spec: fakes[spec.address],
    )
    assert count == 6 and len(seen) == 6
    assert not any("--follow" in command for fake in fakes.values() for command in fake.commands)
