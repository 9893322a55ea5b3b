"""The team registry through fakes: chosen from the env, this machine's login and push with the
password as request data, each host's login with the password on stdin, pulls by digest with no
tunnel, and every fault as one line saying what to fix."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest

from ops.config import HostSpec, RegistrySettings, load_environment
from ops.console import CHANGED, OK, RecordingReporter
from ops.errors import DeployError
from ops.images import ReleaseImages, delivery_for
from ops.images.local_registry import RegistryError
from ops.images.registry import RegistryImages
from ops.images.team_registry import LOGIN_FAILED, PULL_FAILED, TeamRegistry, describe_fault
from ops.stack.compose import render_env
from ops.transport import CommandResult, Host
from tests.fakes import FakeRunner

PASSWORD = "s3cret-Registry-pw"
SETTINGS = RegistrySettings("registry.example.com:5443/team", "ci", "")
DIGEST = "sha256:" + "ab" * 32
REFS = {"web": "demo/web:v2", "proxy": "demo/proxy:1"}
LOCAL_IDS = {"web": "sha256:web2", "proxy": "sha256:proxy1"}


class StdinRunner(FakeRunner):
    """A fake runner that keeps what each command got on stdin, and answers with `after` once
    the host logged in (the images pulled)."""

    def __init__(self, before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]):
        super().__init__(dict(before))
        self.after = after
        self.stdin: dict[str, str | bytes | None] = {}

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        self.stdin[command] = stdin
        result = super().run(command, timeout=timeout, stdin=stdin)
        if "docker login" in command:
            self.answers = dict(self.after)
        return result


class FakeImage:
    def __init__(self, image_id: str):
        self.id = image_id
        self.tags: list[str] = []

    def tag(self, repository: str, tag: str) -> None:
        self.tags.append(f"{repository}:{tag}")


class FakeEngine:
    """This machine's engine as TeamRegistry uses it: login, images.get, api.push."""

    def __init__(self, login_error: str = "", push_events: list[dict[str, Any]] | None = None):
        self.login_error = login_error
        self.push_events = push_events
        self.logins: list[tuple[str, str, str, bool]] = []
        self.pushes: list[tuple[str, str, dict[str, str] | None]] = []
        self.images = SimpleNamespace(get=lambda name: FakeImage(name if name.startswith("sha256:") else "sha256:x"))
        self.api = SimpleNamespace(push=self._push)
        self.closed = 0

    def login(self, username: str, password: str, registry: str = "", reauth: bool = False) -> dict[str, str]:
        self.logins.append((username, password, registry, reauth))
        if self.login_error:
            raise docker.errors.APIError("500 Server Error", explanation=self.login_error)
        return {"Status": "Login Succeeded"}

    def _push(
        self, target: str, tag: str, stream: bool, decode: bool, auth_config: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        self.pushes.append((target, tag, auth_config))
        events = self.push_events or [{"status": "Pushed", "id": "l1"}, {"aux": {"Tag": tag, "Digest": DIGEST}}]
        return iter(events)

    def close(self) -> None:
        self.closed += 1


def team(engine: FakeEngine | None = None, settings: RegistrySettings = SETTINGS) -> TeamRegistry:
    made = engine or FakeEngine()
    return TeamRegistry(settings, PASSWORD, secrets_file="env/prod.secrets.env", engine=lambda: made)


def compose(args: str) -> str:
    return f"cd /opt/demo/releases/r1 && docker compose -p demo {args}"


# ---------------------------------------------------------------- chosen from the env


def test_registry_set_makes_the_registry_source_go_through_the_team_registry(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "prod.env").write_text("HOSTS=a\nREGISTRY=registry.example.com/team\nREGISTRY_USER=ci\n")
    env = load_environment("prod", tmp_path, {"REGISTRY_PASSWORD": PASSWORD})
    delivery = delivery_for(env)
    assert isinstance(delivery, RegistryImages)
    registry = delivery.registry
    assert isinstance(registry, TeamRegistry)
    assert registry.address == "registry.example.com"
    assert registry.repository("demo", "web") == "team/demo/web"
    assert registry.secrets_file == "env/prod.secrets.env"
    assert PASSWORD not in repr(registry)
    # The password is opskit's, not the stack's: it is not written into the release's .env.
    stack = tmp_path / "stack"
    stack.mkdir()
    assert PASSWORD not in render_env(env, "v1", stack) and "REGISTRY_PASSWORD" not in render_env(env, "v1", stack)


# ---------------------------------------------------------------- this machine


def test_prepare_logs_in_and_pushes_every_built_image_before_any_host(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    delivery = RegistryImages("demo", team(engine))
    monkeypatch.setattr("ops.images.registry.build_if_changed", lambda *args: (dict(LOCAL_IDS), False))
    reporter = RecordingReporter()
    ids = delivery.prepare_locally(Path("compose"), None, Path(".env"), Path("stamps"), reporter)  # type: ignore[arg-type]
    assert ids == LOCAL_IDS
    assert engine.logins == [("ci", PASSWORD, "registry.example.com:5443", True)]
    auth = {"username": "ci", "password": PASSWORD, "serveraddress": "registry.example.com:5443"}
    assert sorted(engine.pushes) == [
        ("registry.example.com:5443/team/demo/proxy", "proxy1", auth),
        ("registry.example.com:5443/team/demo/web", "web2", auth),
    ]
    assert ("registry login", OK, "ci at registry.example.com:5443") in [
        (e.step, e.status, e.detail) for e in reporter.events
    ]
    assert all(PASSWORD not in f"{e.step} {e.detail}" for e in reporter.events)
    # Pushed once per run: a host that lacks an image later does not push it again.
    delivery.push(dict(LOCAL_IDS), reporter)
    assert len(engine.pushes) == 2 and len(engine.logins) == 1


@pytest.mark.parametrize(
    ("explanation", "expected"),
    [
        (
            'Get "https://registry.example.com:5443/v2/": unauthorized: incorrect username or password',
            "local: registry registry.example.com:5443 refused the credentials of ci (login): Get "
            '"https://registry.example.com:5443/v2/": unauthorized: incorrect username or password'
            " (check REGISTRY_USER, and REGISTRY_PASSWORD in env/prod.secrets.env)",
        ),
        (
            'Get "https://registry.example.com:5443/v2/": dial tcp 10.1.2.3:5443: connect: connection refused',
            "local: registry registry.example.com:5443 is unreachable from this machine (login): Get "
            '"https://registry.example.com:5443/v2/": dial tcp 10.1.2.3:5443: connect: connection refused'
            " (is it up, and is REGISTRY right? this machine must reach registry.example.com:5443 over HTTPS)",
        ),
        (
            'Get "https://registry.example.com:5443/v2/": x509: certificate signed by unknown authority',
            "local: registry registry.example.com:5443's TLS certificate is not trusted by this machine (login): Get "
            '"https://registry.example.com:5443/v2/": x509: certificate signed by unknown authority'
            " (put the registry's CA in /etc/docker/certs.d/registry.example.com:5443/ca.crt here)",
        ),
    ],
)
def test_this_machines_login_faults_are_one_line(explanation: str, expected: str) -> None:
    engine = FakeEngine(login_error=explanation)
    with pytest.raises(RegistryError) as raised:
        RegistryImages("demo", team(engine)).push(dict(LOCAL_IDS), RecordingReporter())
    line = raised.value.one_line()
    assert line == expected
    assert PASSWORD not in line and "\n" not in line
    assert engine.pushes == [] and engine.closed == 1


def test_a_push_refused_for_its_credentials_is_one_line() -> None:
    events = [
        {"status": "The push refers to repository [registry.example.com:5443/team/demo/web]"},
        {
            "errorDetail": {"message": "unauthorized: authentication required"},
            "error": "unauthorized: authentication required",
        },
    ]
    with pytest.raises(RegistryError) as raised:
        team(FakeEngine(push_events=events)).push("sha256:web2", "team/demo/web", RecordingReporter())
    assert raised.value.one_line() == (
        "local: registry registry.example.com:5443 refused the credentials of ci (push): unauthorized: authentication"
        " required (check REGISTRY_USER, and REGISTRY_PASSWORD in env/prod.secrets.env)"
    )


def test_a_push_denied_for_the_repository_says_so() -> None:
    events = [{"error": "denied: requested access to the resource is denied"}]
    with pytest.raises(RegistryError) as raised:
        team(FakeEngine(push_events=events)).push("sha256:web2", "team/demo/web", RecordingReporter())
    assert raised.value.one_line() == (
        "local: registry registry.example.com:5443 refused the push of team/demo/web: denied: requested access to the"
        " resource is denied (does ci have push rights there, and was the image pushed?)"
    )


# ---------------------------------------------------------------- hosts


def pushed_delivery(engine: FakeEngine | None = None) -> RegistryImages:
    delivery = RegistryImages("demo", team(engine))
    delivery.push(dict(LOCAL_IDS), RecordingReporter())
    return delivery


def test_a_host_logs_in_with_the_password_on_stdin_and_pulls_by_digest_without_a_tunnel() -> None:
    ref = f"registry.example.com:5443/team/demo/web@{DIGEST}"
    runner = StdinRunner(
        {"docker image inspect": (0, "sha256:old\nsha256:proxy1\n")},
        {"json .RepoDigests": (0, f'["{ref}"]\n[]\n'), "docker image inspect": (0, "sha256:web2\nsha256:proxy1\n")},
    )
    reporter = RecordingReporter()
    delivered = pushed_delivery().bring(Host(HostSpec("a"), runner), ReleaseImages(REFS, LOCAL_IDS, compose), reporter)
    script = next(c for c in runner.commands if "docker login" in c)
    assert "docker login registry.example.com:5443 --username ci --password-stdin" in script
    assert f"docker pull -q {ref}" in script and f"docker tag {ref} demo/web:v2" in script
    assert 'export DOCKER_CONFIG="$d"' in script and "trap 'rm -rf \"$d\"' EXIT" in script
    assert "proxy" not in script  # the host has proxy's image: only web is pulled
    assert runner.stdin[script] == PASSWORD
    assert all(PASSWORD not in command for command in runner.commands)
    assert delivered.ids == {"web": "sha256:web2", "proxy": "sha256:proxy1"}
    assert delivered.digests == {"web": ref}
    assert [(e.step, e.status, e.detail) for e in reporter.events if e.host == "a"] == [
        ("images", CHANGED, "pulled demo/web:v2 from registry.example.com:5443")
    ]


def test_the_host_script_removes_its_docker_config_and_tells_login_from_pull(tmp_path: Path) -> None:
    """The script itself, run by sh with a docker stand-in: credentials never outlive it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\necho "$* config=$DOCKER_CONFIG" >> {log}\n'
        'case "$1" in login) cat > "$DOCKER_CONFIG/config.json"; [ -z "$FAIL_LOGIN" ];;'
        ' pull) [ -z "$FAIL_PULL" ];; esac\n'
    )
    (bin_dir / "docker").chmod(0o755)
    script = team().host_script({f"r.example/team/demo/web@{DIGEST}": "demo/web:v2"})
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path)}

    def run(**extra: str) -> int:
        done = subprocess.run(["sh", "-c", script], input=PASSWORD, text=True, env={**environ, **extra})
        return done.returncode

    assert run() == 0
    assert run(FAIL_LOGIN="1") == LOGIN_FAILED
    assert run(FAIL_PULL="1") == PULL_FAILED
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tmp.")] == []  # every DOCKER_CONFIG removed
    assert PASSWORD not in log.read_text()
    assert "login registry.example.com:5443 --username ci --password-stdin config=" + str(tmp_path) in log.read_text()


def test_a_registry_without_a_user_is_pulled_with_no_login() -> None:
    anonymous = team(settings=RegistrySettings("registry.example.com/team", "", ""))
    script = anonymous.host_script({f"registry.example.com/team/demo/web@{DIGEST}": "demo/web:v2"})
    assert "docker login" not in script and "DOCKER_CONFIG" not in script


HOST_FAULTS = [
    (
        LOGIN_FAILED,
        "Error response from daemon: login attempt to https://registry.example.com:5443/v2/ failed with status:"
        " 401 Unauthorized",
        "a: registry registry.example.com:5443 refused the credentials of ci (login): Error response from daemon:"
        " login attempt to https://registry.example.com:5443/v2/ failed with status: 401 Unauthorized"
        " (check REGISTRY_USER, and REGISTRY_PASSWORD in env/prod.secrets.env)",
    ),
    (
        LOGIN_FAILED,
        'Error response from daemon: Get "https://registry.example.com:5443/v2/": dial tcp 10.1.2.3:5443:'
        " connect: no route to host",
        "a: registry registry.example.com:5443 is unreachable from the host (login): Error response from daemon:"
        ' Get "https://registry.example.com:5443/v2/": dial tcp 10.1.2.3:5443: connect: no route to host'
        " (is it up, and is REGISTRY right? the host must reach registry.example.com:5443 over HTTPS)",
    ),
    (
        LOGIN_FAILED,
        'Error response from daemon: Get "https://registry.example.com:5443/v2/": context deadline exceeded',
        "a: registry registry.example.com:5443 is unreachable from the host (login): Error response from daemon:"
        ' Get "https://registry.example.com:5443/v2/": context deadline exceeded'
        " (is it up, and is REGISTRY right? the host must reach registry.example.com:5443 over HTTPS)",
    ),
    (
        LOGIN_FAILED,
        'Error response from daemon: Get "https://registry.example.com:5443/v2/": tls: failed to verify certificate:'
        " x509: certificate signed by unknown authority",
        "a: registry registry.example.com:5443's TLS certificate is not trusted by the host (login): Error response"
        ' from daemon: Get "https://registry.example.com:5443/v2/": tls: failed to verify certificate: x509:'
        " certificate signed by unknown authority (set REGISTRY_CA to the registry's CA file and run inv provision)",
    ),
    (
        PULL_FAILED,
        "read tcp 10.1.2.4:40000->10.1.2.3:5443: read: connection reset by peer",
        f"a: the pull of registry.example.com:5443/team/demo/web@{DIGEST} from registry.example.com:5443 was cut"
        " off: read tcp 10.1.2.4:40000->10.1.2.3:5443: read: connection reset by peer (the connection to the"
        " registry dropped; deploy again (layers already there are kept))",
    ),
    (
        PULL_FAILED,
        f"Error response from daemon: manifest for registry.example.com:5443/team/demo/web@{DIGEST} not found:"
        " manifest unknown: manifest unknown",
        f"a: registry registry.example.com:5443 refused the pull of registry.example.com:5443/team/demo/web@{DIGEST}:"
        f" Error response from daemon: manifest for registry.example.com:5443/team/demo/web@{DIGEST} not found:"
        " manifest unknown: manifest unknown (does ci have pull rights there, and was the image pushed?)",
    ),
]


@pytest.mark.parametrize(("code", "stderr", "expected"), HOST_FAULTS)
def test_a_hosts_login_or_pull_fault_is_one_line(code: int, stderr: str, expected: str) -> None:
    runner = FakeRunner(
        {
            "docker login": (code, "WARNING! Your password will be stored unencrypted\n" + stderr + "\n"),
            "docker image inspect": (0, "sha256:old\nsha256:proxy1\n"),
        }
    )
    with pytest.raises(DeployError) as raised:
        pushed_delivery().bring(
            Host(HostSpec("a"), runner), ReleaseImages(REFS, LOCAL_IDS, compose), RecordingReporter()
        )
    line = raised.value.one_line()
    assert line == expected
    assert "\n" not in line and PASSWORD not in line


def test_fault_texts_for_a_full_disk_and_an_anonymous_user() -> None:
    disk = describe_fault(
        "pull", "write /var/lib/docker/tmp/x: no space left on device", settings=SETTINGS, secrets_file="s", local=False
    )
    assert (
        disk.message
        == "pull of images failed: the host's disk is full: write /var/lib/docker/tmp/x: no space left on device"
    )
    anonymous = describe_fault(
        "pull",
        "unauthorized: authentication required",
        settings=RegistrySettings("r.example.com", "", ""),
        secrets_file="env/prod.secrets.env",
        local=False,
        subject="r.example.com/demo/web@x",
    )
    assert anonymous.hint == "set REGISTRY_USER, and REGISTRY_PASSWORD in env/prod.secrets.env"
