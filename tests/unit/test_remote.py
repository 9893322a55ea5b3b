"""Host and Fleet with a fake runner: sudo wrapping, command errors, per-host failures."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from ops.config import HostSpec
from ops.errors import CommandError, HostError
from ops.transport import Fleet, Host
from tests.fakes import FakeRunner


def test_sudo_is_direct_for_root_and_sudo_n_for_others() -> None:
    root = Host(HostSpec("a", user="root"), FakeRunner())
    root.sudo("apt-get update")
    assert root.runner.commands == ["apt-get update"]  # type: ignore[attr-defined]
    deploy = Host(HostSpec("a", user="deploy"), FakeRunner())
    deploy.sudo("echo 'x'")
    assert deploy.runner.commands == ["sudo -n sh -c 'echo '\"'\"'x'\"'\"''"]  # type: ignore[attr-defined]


def test_a_failing_command_names_host_command_and_last_output_line() -> None:
    host = Host(
        HostSpec("web1", 2222), FakeRunner({"apt-get": (100, "Reading lists\nE: Unable to locate package nope")})
    )
    with pytest.raises(CommandError) as raised:
        host.run("apt-get install -y nope")
    assert raised.value.one_line() == (
        "web1:2222: `apt-get install -y nope` exited 100: E: Unable to locate package nope"
    )
    assert raised.value.exit_code == 100
    assert host.run("apt-get install -y nope", check=False).exit_code == 100


def test_files_round_trip_through_the_runner() -> None:
    host = Host(HostSpec("a"), FakeRunner())
    host.put(io.BytesIO(b"payload"), "/tmp/f")
    back = io.BytesIO()
    host.get("/tmp/f", back)
    assert back.getvalue() == b"payload"


def test_fleet_reports_an_unreachable_host_and_finishes_the_others() -> None:
    hosts = [
        Host(HostSpec("good1"), FakeRunner({"uname": (0, "Linux")})),
        Host(HostSpec("down"), FakeRunner(unreachable="connection refused")),
        Host(HostSpec("good2"), FakeRunner({"uname": (0, "Linux")})),
    ]
    result = Fleet(hosts, parallel=2).map(lambda host: host.run("uname").stdout)
    assert not result.ok
    assert [(o.host, o.value) for o in result.outcomes] == [("good1", "Linux"), ("down", None), ("good2", "Linux")]
    assert [o.error.one_line() for o in result.failed if o.error] == ["fake: unreachable: connection refused"]


def test_fleet_concurrency_is_bounded() -> None:
    running, peak, lock, three_at_once = 0, 0, threading.Lock(), threading.Event()

    def work(host: Host) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 3:
                three_at_once.set()
        # Held until three run at once (however slow threads start on a busy machine), then a
        # moment more so an unbounded fleet would show a fourth.
        three_at_once.wait(timeout=10)
        time.sleep(0.05)
        with lock:
            running -= 1

    Fleet([Host(HostSpec(f"h{i}"), FakeRunner()) for i in range(8)], parallel=3).map(work)
    assert peak == 3


def test_fleet_keeps_only_ops_errors_per_host() -> None:
    def boom(host: Host) -> None:
        raise HostError("disk on fire", where=host.name)

    result = Fleet([Host(HostSpec("a"), FakeRunner())]).map(boom)
    assert result.failed[0].error is not None
    assert result.failed[0].error.one_line() == "a: disk on fire"


# --- bulk data: stream_out / stream_in ---


def test_stream_out_writes_a_commands_stdout_into_the_sink_and_returns_its_exit_and_stderr() -> None:
    from ops.transport.streams import openssh_out

    sink, sizes = io.BytesIO(), []
    # A local shell stands in for ssh(1): the loop is the same for both.
    code, stderr = openssh_out(["sh", "-c"], "printf hello; echo oops >&2; exit 3", sink, sizes.append)
    assert (code, sink.getvalue(), sum(sizes), stderr.strip()) == (3, b"hello", 5, "oops")


def test_stream_in_feeds_the_source_to_the_commands_stdin(tmp_path: Path) -> None:
    from ops.transport.streams import openssh_in

    data = bytes(range(256)) * 5000  # more than one chunk's worth of pipe buffer
    target = tmp_path / "received"
    sizes: list[int] = []
    code, output = openssh_in(["sh", "-c"], f"cat > {target}; echo stored", io.BytesIO(data), sizes.append)
    assert (code, output.strip(), sum(sizes)) == (0, "stored", len(data)) and target.read_bytes() == data
    code, output = openssh_in(["sh", "-c"], "echo refused >&2; exit 4", io.BytesIO(data), sizes.append)
    assert (code, output.strip()) == (4, "refused")  # the command ending early is no crash


def test_the_fake_runner_streams_canned_bytes_out_and_records_the_bytes_in() -> None:
    runner = FakeRunner({"broken": (2, "tar: short read")}, outputs={"tar -c": b"archive bytes"})
    host = Host(HostSpec("a"), runner)
    sink, sizes = io.BytesIO(), []
    result = host.stream_out("tar -cf - .", sink, sizes.append)
    assert result.ok and sink.getvalue() == b"archive bytes" and sum(sizes) == len(b"archive bytes")
    failed = host.stream_out("broken tar -c", io.BytesIO(), sizes.append)
    assert (failed.exit_code, failed.stderr) == (2, "tar: short read")
    fed = host.stream_in("tar -xf -", io.BytesIO(b"restore me"), sizes.append)
    assert fed.ok and runner.received == {"tar -xf -": b"restore me"}
    assert runner.commands == ["tar -cf - .", "broken tar -c", "tar -xf -"]


class FakeChannel:
    """The paramiko channel calls the stream loops make, over canned stdout/stderr and an exit code."""

    def __init__(self, stdout: bytes = b"", stderr: bytes = b"", code: int = 0):
        self.stdout, self.stderr, self.code = bytearray(stdout), bytearray(stderr), code
        self.sent = bytearray()
        self.closed = self.shut = False
        self.status_event = threading.Event()
        self.status_event.set()

    def recv(self, size: int) -> bytes:
        data = bytes(self.stdout[:7])  # small packets, as SSH delivers them
        del self.stdout[:7]
        return data

    def recv_ready(self) -> bool:
        return bool(self.stdout)

    def recv_stderr(self, size: int) -> bytes:
        data = bytes(self.stderr)
        self.stderr.clear()
        return data

    def recv_stderr_ready(self) -> bool:
        return bool(self.stderr)

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return self.code

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        self.shut = True

    def close(self) -> None:
        self.closed = True


def test_the_paramiko_fallback_streams_the_same_way() -> None:
    from ops.transport.streams import channel_in, channel_out

    out, sink, sizes = FakeChannel(b"archive bytes here", b"tar: warning", 2), io.BytesIO(), []
    assert channel_out(out, sink, sizes.append) == (2, "tar: warning")
    assert sink.getvalue() == b"archive bytes here" and sum(sizes) == 18 and out.closed
    into = FakeChannel(b"restored\n")
    assert channel_in(into, io.BytesIO(b"x" * 100), sizes.append, "h1") == (0, "restored\n")
    assert into.sent == b"x" * 100 and into.shut and into.closed
