"""Deploy building blocks with fake hosts: the lock, releases, rollback targets, audit, stack env."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from ops.config import HostSpec, load_environment
from ops.deploy.health import summary_state
from ops.deploy.releases import (
    Release,
    ReleaseStore,
    new_release_id,
    override_yaml,
    pin_tag,
    releases_to_prune,
    rollback_target,
)
from ops.deploy.rollout import batches
from ops.errors import DeployError, LockError
from ops.host.audit import AuditRecord
from ops.host.lock import DeployLock, LockInfo
from ops.images.local import base_images, build_if_changed
from ops.stack.compose import Service, Stack, archive, content_digest, duration_seconds, render_env
from ops.transport import CommandResult, Host
from tests.fakes import FakeRunner


class LockHost(FakeRunner):
    """A fake host whose /opt/<p>/lock behaves like mkdir: the first taker wins."""

    def __init__(self, holder: LockInfo | None = None):
        super().__init__()
        self.lock = json.dumps(holder.__dict__) if holder else None

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        self.commands.append(command)
        if "mkdir /opt/" in command:
            if self.lock is not None:
                return CommandResult(command, 1, "", "exists")
            self.lock = command.split("printf '%s\\n' ")[1].split(" > ")[0].strip("'")
            return CommandResult(command, 0, "", "")
        if command.startswith("cat /opt/"):
            return CommandResult(command, 0 if self.lock else 1, self.lock or "", "")
        if command.endswith("&& rm -rf /opt/demo/lock"):  # release: only a lock that is ours
            ours = command.startswith("test -d") or (
                self.lock is not None and command.split("'")[1] in self.lock  # grep -qF 'TOKEN'
            )
            if self.lock is None or not ours:
                return CommandResult(command, 1, "", "")
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
    assert rollback_target(releases, "4-v4", None, host).id == "2-v2"
    assert rollback_target(releases, "4-v4", "v1", host).id == "1-v1"
    with pytest.raises(DeployError, match="failed its gate"):
        rollback_target(releases, "4-v4", "3-v3", host)
    with pytest.raises(DeployError, match=r"no release 'v9' \(kept: 1-v1 \(v1\)"):
        rollback_target(releases, "4-v4", "v9", host)
    with pytest.raises(DeployError, match="no earlier release"):
        rollback_target(releases[:1], "1-v1", None, host)


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
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("500ms") == 0.5
    assert duration_seconds("0s") == 0


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
    assert [len(b) for b in batches(hosts, 2)] == [2, 2, 1]
    assert [len(b) for b in batches(hosts, 0)] == [5]


def test_rollback_skips_a_release_identical_to_the_current_one() -> None:
    host = Host(HostSpec("a"), FakeRunner())
    v1 = release("1-v1")
    v2a = Release("2-v2", "v2", "abc", "me", "t", ("compose.yaml",), {"web": "sha256:2"}, {"web": "p2"})
    v2b = Release("3-v2", "v2", "abc", "me", "t", ("compose.yaml",), {"web": "sha256:2"}, {"web": "p2"})
    assert rollback_target([v1, v2a, v2b], "3-v2", None, host).id == "1-v1"
    with pytest.raises(DeployError, match="same version and images as the current one"):
        rollback_target([v2a, v2b], "3-v2", None, host)


def test_prune_keeps_the_newest_distinct_releases_and_the_current_one() -> None:
    def made(release_id: str, content: str, status: str = "active") -> Release:
        return Release(
            release_id, release_id[2:], "abc", "me", "t", ("compose.yaml",), {"web": content}, {}, (), status, content
        )

    # deploy v2 and roll back to v1, five times over: every v2 release is the same
    history = [made("1-v1", "one"), *(made(f"{n}-v2", "two") for n in range(2, 7)), made("7-v3", "three", "failed")]
    removed = releases_to_prune(history, "1-v1", keep=5)
    assert [r.id for r in removed] == ["2-v2", "3-v2", "4-v2", "5-v2"]  # v1 stays to roll back to
    assert [r.id for r in releases_to_prune(history, "6-v2", keep=1)] == ["1-v1", "2-v2", "3-v2", "4-v2", "5-v2"]
    assert [r.id for r in releases_to_prune(history, "3-v2", keep=2)] == ["1-v1", "2-v2", "4-v2", "5-v2"]
    # a failed release takes no place of one to roll back to, and goes once older than those
    failed_first = [made("0-v0", "zero", "failed"), *history]
    assert [r.id for r in releases_to_prune(failed_first, "6-v2", keep=1)][:2] == ["0-v0", "1-v1"]
    assert "7-v3" not in [r.id for r in releases_to_prune(failed_first, "6-v2", keep=1)]


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


def test_a_maintenance_lock_outlives_the_command_that_took_it() -> None:
    """`inv lock.acquire` exits at once; a later deploy on the same machine must not take its lock
    over as abandoned."""
    host = Host(HostSpec("a"), LockHost(None))
    maintenance = DeployLock([host], "demo", "maintenance", until_released=True)
    maintenance.acquire()
    assert json.loads(host.runner.lock)["pid"] == 0  # type: ignore[attr-defined]
    with pytest.raises(LockError, match="maintenance"):
        DeployLock([host], "demo", "deploy v2").acquire()


def _stack(tmp_path: Path, web_args: dict[str, str]) -> Stack:
    (tmp_path / "web").mkdir(exist_ok=True)
    (tmp_path / "web" / "Dockerfile").write_text("FROM debian:trixie-slim\n")
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    web = Service("web", "demo/web:v1", True, build={"context": str(tmp_path / "web"), "args": web_args})
    redis = Service("redis", "redis:7", False)
    return Stack(tmp_path, ("compose.yaml",), {"web": web, "redis": redis})


def test_a_local_build_is_skipped_only_when_its_inputs_and_images_are_unchanged(tmp_path: Path) -> None:
    builds: list[Path] = []
    # the local engine's tags: the stack's images and the base its build starts FROM
    images = {"demo/web:v1": "sha256:web1", "redis:7": "sha256:redis", "debian:trixie-slim": "sha256:base1"}

    def build_locally(compose_bin: Path, directory: Path, files: tuple[str, ...], env_path: Path) -> None:
        builds.append(directory)

    def local_image_ids(refs: Mapping[str, str]) -> dict[str, str]:
        return {service: images[ref] for service, ref in refs.items()}

    stamps = tmp_path / ".opskit" / "builds.json"
    (tmp_path / "stack").mkdir()
    stack = _stack(tmp_path / "stack", {"APP_VERSION": "v1"})

    def build(stack: Stack) -> bool:
        ids, built = build_if_changed(
            Path("compose"), stack, Path(".env"), stamps, build=build_locally, inspect_ids=local_image_ids
        )
        assert ids == {"web": images["demo/web:v1"], "redis": "sha256:redis"}
        return built

    assert build(stack) is True  # nothing recorded yet
    assert build(stack) is False  # same inputs, same images
    (stack.directory / "web" / "app.py").write_text("print('v2')\n")
    assert build(stack) is True  # a file of the build context changed
    assert build(_stack(stack.directory, {"APP_VERSION": "v2"})) is True  # a build argument changed
    assert build(stack) is False  # the earlier inputs are still recorded
    images["demo/web:v1"] = "sha256:retagged"
    assert build(stack) is True  # someone re-tagged the image: build again
    images["debian:trixie-slim"] = "sha256:base2"
    assert build(stack) is True  # the base image was refreshed: build again
    assert build(stack) is False
    assert len(builds) == 5


def test_base_images_are_read_from_each_building_service_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Containerfile").write_text(
        "ARG BASE=debian:trixie-slim\n"
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\n"
        "RUN make\n"
        "from debian:trixie-slim\n"
        "COPY --from=build /app /app\n"
        "FROM build AS test\n"
        "FROM ${BASE} AS other\n"
        "FROM scratch\n"
    )
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    web = Service("web", "demo/web:v1", True, build={"context": str(tmp_path / "web"), "dockerfile": "Containerfile"})
    redis = Service("redis", "redis:7", False)
    stack = Stack(tmp_path, ("compose.yaml",), {"web": web, "redis": redis})
    assert base_images(stack) == ["debian:trixie-slim", "golang:1.22"]


def test_a_release_archive_carries_the_env_file_private(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "compose.yaml").write_text("services: {}\n")
    (tmp_path / ".env").write_text("LOCAL=1\n")  # the operator's own .env stays home
    with tarfile.open(fileobj=io.BytesIO(archive(tmp_path, "TOKEN=s3cret\n"))) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert sorted(members) == [".env", "compose.yaml"]
        assert members[".env"].mode == 0o600
        env = tar.extractfile(members[".env"])
        assert env is not None and env.read() == b"TOKEN=s3cret\n"


def test_the_content_digest_changes_with_files_and_env(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    first = content_digest(tmp_path, "A=1\n")
    assert content_digest(tmp_path, "A=1\n") == first
    assert content_digest(tmp_path, "A=2\n") != first
    (tmp_path / "compose.yaml").write_text("services: {web: {}}\n")
    assert content_digest(tmp_path, "A=1\n") != first


@pytest.mark.parametrize(
    ("summary", "state"),
    [
        ({"State": "running", "Status": "Up 3 minutes (healthy)"}, "healthy"),
        ({"State": "running", "Status": "Up 2 seconds (health: starting)"}, "starting"),
        ({"State": "running", "Status": "Up 1 minute (unhealthy)"}, "unhealthy"),
        ({"State": "running", "Status": "Up 5 minutes"}, "running"),
        ({"State": "exited", "Status": "Exited (1) 3 seconds ago"}, "exited"),
        ({"State": "restarting", "Status": "Restarting (1) 1 second ago"}, "restarting"),
    ],
)
def test_health_is_read_from_the_container_list(summary: dict[str, str], state: str) -> None:
    assert summary_state(summary) == state


def test_the_current_release_is_read_in_one_round_trip() -> None:
    release = Release("20261123-101010-v2", "v2", "abc", "me", "now", ("compose.yaml",), status="active")
    runner = FakeRunner({"readlink": (0, f"releases/{release.id}\n{release.to_json()}\n")})
    assert ReleaseStore(Host(HostSpec("a"), runner), "demo").current() == release
    assert len(runner.commands) == 1
    missing = FakeRunner({"readlink": (1, "No such file")})
    assert ReleaseStore(Host(HostSpec("a"), missing), "demo").current() is None


def test_a_lock_held_on_one_of_three_hosts_leaves_none_taken() -> None:
    other = LockInfo("bob@laptop", "2026-11-23T10:00:00+00:00", "deploy v8", "b0b")
    hosts = [Host(HostSpec("a"), LockHost()), Host(HostSpec("b"), LockHost(other)), Host(HostSpec("c"), LockHost())]
    with pytest.raises(LockError) as raised:
        DeployLock(hosts, "demo", "deploy v2").acquire()
    assert raised.value.one_line().startswith("b: locked by bob@laptop")
    assert [host.runner.lock is None for host in hosts] == [True, False, True]  # type: ignore[attr-defined]


def test_current_state_tells_hand_edited_files_from_drifted_containers() -> None:
    """One SSH answer: the release directory's sha256sums, compose's config hashes, `docker ps`."""
    from ops.deploy.compose import _current_state
    from ops.deploy.prepare import Prepared
    from ops.deploy.releases import OVERRIDE_FILE, Release, ReleaseStore, override_yaml

    release = Release("1-v1", "v1", "abc", "me", "now", ("compose.yaml",), pins={"web": "demo/web:pin1"})
    override = hashlib.sha256(override_yaml(release, "demo").encode()).hexdigest()
    files = {"compose.yaml": "c" * 64, ".env": "e" * 64}
    stack = Stack(Path("."), ("compose.yaml",), {"web": Service("web", "demo/web:v1", True)})
    prepared = Prepared(stack, "", b"", {"web": "demo/web:v1"}, {}, "abc", "digest", files)

    class Answer(FakeRunner):
        def __init__(self, stdout: str):
            super().__init__()
            self.stdout = stdout

        def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
            return CommandResult(command, 0, self.stdout, "")

    def state(sums: dict[str, str], container: str) -> tuple[bool, bool]:
        listing = "".join(f"{digest}  ./{name}\n" for name, digest in sums.items())
        stdout = f"{listing}--- opskit files ---\nweb hash1\n--- opskit containers ---\n{container}\n"
        host = Host(HostSpec("a"), Answer(stdout))
        return _current_state(host, ReleaseStore(host, "demo"), release, prepared)

    running = "web\thash1\tdemo/web:pin1\trunning\tUp 5 minutes (healthy)"
    on_host = {**files, OVERRIDE_FILE: override}
    assert state(on_host, running) == (True, True)
    assert state({**on_host, "compose.yaml": "d" * 64}, running) == (False, False)  # edited by hand
    assert state({**on_host, "extra.yaml": "f" * 64}, running) == (False, False)  # a file added there
    assert state(on_host, running.replace("hash1", "hash0")) == (True, False)  # config drifted
    assert state(on_host, running.replace("running\tUp 5 minutes (healthy)", "exited\tExited (1)")) == (True, False)


def test_a_failing_batch_leaves_the_later_batches_on_their_release(tmp_path: Path) -> None:
    from ops.console import SKIPPED, RecordingReporter
    from ops.deploy.orchestrator import HostDeployReport
    from ops.deploy.rollout import run_batches
    from ops.errors import HostError
    from ops.transport import Fleet

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "prod.env").write_text("HOSTS=a b c d e\n")
    env = load_environment("prod", tmp_path, {})
    worked: list[str] = []

    def work(host: Host) -> HostDeployReport:
        worked.append(host.name)
        if host.name == "c":
            raise HostError("unreachable: connection refused", where="c")
        return HostDeployReport(host.name, "deployed")

    fleet = Fleet([Host(HostSpec(name), FakeRunner()) for name in "abcde"])
    reporter = RecordingReporter()
    reports = run_batches(env, fleet, 2, work, reporter)
    assert [(r.host, r.result) for r in reports] == [
        ("a", "deployed"),
        ("b", "deployed"),
        ("c", "failed"),
        ("d", "deployed"),
        ("e", "skipped"),
    ]
    assert reports[2].error == "unreachable: connection refused"  # the report's host is not repeated
    assert sorted(worked) == ["a", "b", "c", "d"]
    assert [(e.host, e.status) for e in reporter.events if e.status == SKIPPED] == [("e", SKIPPED)]
