"""Deploy building blocks with fake hosts: the lock, releases, rollback targets, audit, stack env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.audit import AuditRecord
from ops.config import HostSpec, load_environment
from ops.deploy import _batches, _rollback_target
from ops.errors import DeployError, LockError
from ops.lock import DeployLock, LockInfo
from ops.releases import Release, new_release_id, override_yaml, pin_tag
from ops.remote import CommandResult, Host
from ops.stack import _seconds, render_env
from tests.fakes import FakeRunner


class LockHost(FakeRunner):
    """A fake host whose /opt/<p>/lock behaves like mkdir: the first taker wins."""

    def __init__(self, holder: LockInfo | None = None):
        super().__init__()
        self.lock = json.dumps(holder.__dict__) if holder else None

    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        self.commands.append(command)
        if "mkdir /opt/" in command:
            if self.lock is not None:
                return CommandResult(command, 1, "", "exists")
            self.lock = command.split("printf '%s\\n' ")[1].split(" > ")[0].strip("'")
            return CommandResult(command, 0, "", "")
        if command.startswith("cat /opt/"):
            return CommandResult(command, 0 if self.lock else 1, self.lock or "", "")
        if command.startswith("rm -rf /opt/"):
            self.lock = None
        return CommandResult(command, 0, "", "")


def test_lock_is_taken_on_every_host_and_released() -> None:
    hosts = [Host(HostSpec("b"), LockHost()), Host(HostSpec("a"), LockHost())]
    with DeployLock(hosts, "demo", "deploy v2") as lock:
        assert [host.spec.address for host in lock.held] == ["a", "b"]  # fixed order
        assert all(host.runner.lock for host in hosts)  # type: ignore[attr-defined]
    assert not any(host.runner.lock for host in hosts)  # type: ignore[attr-defined]


def test_a_held_lock_names_the_holder_and_releases_what_was_taken() -> None:
    other = LockInfo("alice@laptop", "2026-11-22T10:00:00+00:00", "deploy v7", "t0k")
    free, held = Host(HostSpec("a"), LockHost()), Host(HostSpec("b"), LockHost(other))
    with pytest.raises(LockError) as raised:
        DeployLock([held, free], "demo", "deploy v2").acquire()
    assert "b: locked by alice@laptop since 2026-11-22T10:00:00+00:00: deploy v7" in raised.value.one_line()
    assert "STALE" in raised.value.one_line()  # older than the TTL
    assert free.runner.lock is None  # type: ignore[attr-defined]
    assert json.loads(held.runner.lock)["holder"] == "alice@laptop"  # type: ignore[attr-defined]


def test_lock_wait_retries_until_the_deadline() -> None:
    other = LockInfo("bob@ci", "2099-01-01T00:00:00+00:00", "deploy", "x")
    host = Host(HostSpec("a"), LockHost(other))
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(LockError, match="wait for it"):
        DeployLock([host], "demo", "r", wait_seconds=3, clock=lambda: now[0], sleep=sleep).acquire()
    assert sleeps == [1.0, 1.0, 1.0]


def release(id_: str, status: str = "active", version: str = "v1") -> Release:
    return Release(id_, version, "abc", "me", "t", ("compose.yaml",), {"web": "sha256:1"}, {"web": "p"}, status=status)


def test_rollback_goes_to_the_release_before_current_skipping_failed_ones() -> None:
    host = Host(HostSpec("a"), FakeRunner())
    releases = [
        release("1-v1"),
        release("2-v2", version="v2"),
        release("3-v3", "failed", "v3"),
        release("4-v4", version="v4"),
    ]
    assert _rollback_target(releases, "4-v4", None, host).id == "2-v2"
    assert _rollback_target(releases, "4-v4", "v1", host).id == "1-v1"
    with pytest.raises(DeployError, match="failed its gate"):
        _rollback_target(releases, "4-v4", "3-v3", host)
    with pytest.raises(DeployError, match=r"no release 'v9' \(kept: 1-v1 \(v1\)"):
        _rollback_target(releases, "4-v4", "v9", host)
    with pytest.raises(DeployError, match="no earlier release"):
        _rollback_target(releases[:1], "1-v1", None, host)


def test_release_ids_sort_by_time_and_pins_are_per_image() -> None:
    assert new_release_id("v2 beta/1").endswith("-v2-beta-1")
    assert pin_tag("demo", "web", "0123456789ab") == "opskit-pin/demo-web:0123456789ab"
    text = override_yaml(release("1-v1"), "demo")
    assert "  web:\n    image: p\n    build: !reset null\n" in text


def test_release_json_round_trip() -> None:
    original = release("1-v1")
    assert Release.from_json(original.to_json()) == original


def test_audit_lines_never_carry_secrets() -> None:
    record = AuditRecord("deploy", "prod", "a", "failed", "me", detail="redis auth hunter22 refused")
    line = record.line(lambda text: text.replace("hunter22", "***"))
    assert "hunter22" not in line and json.loads(line)["detail"] == "redis auth *** refused"


def test_compose_durations() -> None:
    assert _seconds("1m30s") == 90
    assert _seconds("500ms") == 0.5
    assert _seconds("0s") == 0


def test_rendered_env_has_version_vars_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / ".env").write_text("HTTP_PORT=8080\nLOG=info\n")
    (tmp_path / "env" / "prod.env").write_text("HOSTS=a\nSTACK_VARS=HTTP_PORT=80\nSECRETS=TOKEN\n")
    env = load_environment("prod", tmp_path, {"TOKEN": "abc def"})
    text = render_env(env, "v2", tmp_path / "stack")
    assert text == 'APP_VERSION="v2"\nHTTP_PORT="80"\nLOG="info"\nTOKEN="abc def"\n'


def test_batches() -> None:
    hosts = [Host(HostSpec(str(i)), FakeRunner()) for i in range(5)]
    assert [len(b) for b in _batches(hosts, 2)] == [2, 2, 1]
    assert [len(b) for b in _batches(hosts, 0)] == [5]


def test_rollback_skips_a_release_identical_to_the_current_one() -> None:
    host = Host(HostSpec("a"), FakeRunner())
    v1 = release("1-v1")
    v2a = Release("2-v2", "v2", "abc", "me", "t", ("compose.yaml",), {"web": "sha256:2"}, {"web": "p2"})
    v2b = Release("3-v2", "v2", "abc", "me", "t", ("compose.yaml",), {"web": "sha256:2"}, {"web": "p2"})
    assert _rollback_target([v1, v2a, v2b], "3-v2", None, host).id == "1-v1"


def test_a_lock_left_by_a_killed_process_here_is_taken_over() -> None:
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = LockInfo("me@here", "2026-11-22T10:00:00+00:00", "deploy v1", "old", socket.gethostname(), dead.pid)
    host = Host(HostSpec("a"), LockHost(abandoned))
    lock = DeployLock([host], "demo", "deploy v2")
    lock.acquire()
    assert lock.taken_over == ["a: locked by me@here since 2026-11-22T10:00:00+00:00: deploy v1"]
    assert json.loads(host.runner.lock)["reason"] == "deploy v2"  # type: ignore[attr-defined]
    alive = LockInfo("me@here", "2026-11-22T10:00:00+00:00", "deploy v1", "old", socket.gethostname(), 1)
    with pytest.raises(LockError):
        DeployLock([Host(HostSpec("b"), LockHost(alive))], "demo", "deploy v2").acquire()
