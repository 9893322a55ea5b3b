"""The demo stack against the real tools and the local engine: its configs pass promtool, amtool
and nginx -t; broken ones are caught; built and started with Compose, it counts visits and
reports its version through the proxy, the only published port (on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ops.console import OK, RecordingReporter
from ops.errors import StackError
from ops.lab import ensure_base_image, ensure_engine
from ops.stack.toolbox import (
    TOOLBOX_IMAGE,
    check_stack_configs,
    compose_config,
    ensure_compose,
    ensure_toolbox_image,
)

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]
STACK = CHECKOUT / "stacks" / "demo"
ALL_TOOLS = {"promtool check config", "promtool check rules", "promtool test rules", "amtool check-config", "nginx -t"}


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    reporter = RecordingReporter()
    ensure_engine(reporter)
    engine = docker.from_env(version="auto", timeout=300)
    ensure_base_image(engine, reporter)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def toolbox(client: docker.DockerClient) -> str:
    return ensure_toolbox_image(client, RecordingReporter())


@pytest.fixture(scope="module")
def compose_bin(toolbox: str) -> Path:
    return ensure_compose(CHECKOUT, RecordingReporter())


@pytest.fixture
def stack_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "demo"
    shutil.copytree(STACK, copy)
    return copy


def test_toolbox_is_reused_and_compose_runs_here(client: docker.DockerClient, compose_bin: Path) -> None:
    reporter = RecordingReporter()
    assert ensure_toolbox_image(client, reporter) == TOOLBOX_IMAGE
    assert [event.status for event in reporter.events] == [OK]
    assert ensure_compose(CHECKOUT, reporter) == compose_bin
    assert reporter.events[-1].status == OK
    assert compose_bin == CHECKOUT / ".lab" / "bin" / "docker-compose"
    done = subprocess.run([str(compose_bin), "version"], capture_output=True, text=True, check=True)
    assert re.search(r"Docker Compose version v?2\.", done.stdout), done.stdout


def test_demo_configs_pass_the_real_tools(client: docker.DockerClient, toolbox: str) -> None:
    checks = check_stack_configs(STACK, client)
    assert {check.tool for check in checks} == ALL_TOOLS
    failed = [f"{check.tool} {check.file}:\n{check.output}" for check in checks if not check.ok]
    assert not failed, "\n\n".join(failed)
    files = {check.file for check in checks}
    assert {"prometheus/prometheus.yml", "alertmanager/alertmanager.yml", "proxy/nginx.conf"} <= files


def test_an_invalid_alert_rule_fails_promtool_naming_the_file(
    client: docker.DockerClient, toolbox: str, stack_copy: Path
) -> None:
    (stack_copy / "prometheus" / "rules" / "broken.yml").write_text(
        "groups:\n"
        "  - name: broken\n"
        "    rules:\n"
        "      - alert: Broken\n"
        "        expr: up{job=\n"
        "        annotations: {runbook: service-unhealthy}\n"
    )
    checks = {(check.tool, check.file): check for check in check_stack_configs(stack_copy, client)}
    broken = checks["promtool check rules", "prometheus/rules/broken.yml"]
    assert not broken.ok
    assert "broken.yml" in broken.output
    # The config check loads the rules too, so it fails as well; the good rule file still passes.
    assert not checks["promtool check config", "prometheus/prometheus.yml"].ok
    assert checks["promtool check rules", "prometheus/rules/demo.yml"].ok


def test_an_alert_that_loses_its_runbook_fails_the_rule_tests(
    client: docker.DockerClient, toolbox: str, stack_copy: Path
) -> None:
    rules = stack_copy / "prometheus" / "rules" / "demo.yml"
    rules.write_text(rules.read_text().replace("runbook: redis-down", "runbook: service-unhealthy"))
    checks = {check.tool: check for check in check_stack_configs(stack_copy, client)}
    assert checks["promtool check rules"].ok
    assert not checks["promtool test rules"].ok
    assert "RedisDown" in checks["promtool test rules"].output


def test_broken_nginx_and_alertmanager_configs_fail(
    client: docker.DockerClient, toolbox: str, stack_copy: Path
) -> None:
    nginx = stack_copy / "proxy" / "nginx.conf"
    nginx.write_text(nginx.read_text().replace("proxy_next_upstream_tries 3;", "proxy_next_upstream_tries;"))
    alertmanager = stack_copy / "alertmanager" / "alertmanager.yml"
    alertmanager.write_text(
        alertmanager.read_text().replace("receiver: web-log\n  group_by", "receiver: nobody\n  group_by")
    )
    checks = {check.tool: check for check in check_stack_configs(stack_copy, client)}
    assert not checks["nginx -t"].ok
    assert "proxy_next_upstream_tries" in checks["nginx -t"].output
    assert not checks["amtool check-config"].ok
    assert "nobody" in checks["amtool check-config"].output


def test_compose_config_resolves_the_release_env(compose_bin: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "release.env"
    env_file.write_text("APP_VERSION=v7\nHTTP_PORT=8088\n")
    resolved = compose_config(STACK, compose_bin, env_file)
    assert "image: opskit-demo/web:v7" in resolved
    assert 'published: "8088"' in resolved
    assert 'opskit.swap: "true"' in resolved


def test_an_invalid_compose_file_is_refused(compose_bin: Path, stack_copy: Path) -> None:
    compose_file = stack_copy / "compose.yaml"
    compose_file.write_text(compose_file.read_text().replace("    healthcheck:", "    healthchek:", 1))
    with pytest.raises(StackError) as caught:
        compose_config(stack_copy, compose_bin)
    assert "healthchek" in str(caught.value)
    assert str(compose_file) in str(caught.value)


# ---------------------------------------------------------------- the stack on the local engine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Compose:
    """The demo stack under a project name of its own, driven by the local compose binary."""

    # Compose labels the images it builds with the project name; building under one fixed name
    # keeps a cached rebuild the very same image instead of leaving the last run's dangling.
    BUILD_PROJECT = "opskit-test-demo"

    def __init__(self, binary: Path, project: str, env_file: Path):
        self.binary, self.project, self.env_file = binary, project, env_file

    def __call__(
        self, *args: str, project: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.binary), "-p", project or self.project, "--project-directory", str(STACK)]
        command += ["-f", str(STACK / "compose.yaml"), "--env-file", str(self.env_file), *args]
        # Only the env file sets the stack's variables: none leak in from the caller's shell.
        environment = {key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_HOST") if key in os.environ}
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


def test_demo_stack_counts_visits_and_reports_its_version(
    client: docker.DockerClient, compose_bin: Path, tmp_path: Path
) -> None:
    port = _free_port()
    env_file = tmp_path / "release.env"
    env_file.write_text(f"APP_VERSION=v2\nHTTP_BIND=127.0.0.1\nHTTP_PORT={port}\n")
    compose = Compose(compose_bin, f"opskit-test-demo-{uuid.uuid4().hex[:8]}", env_file)
    base = f"http://127.0.0.1:{port}"
    try:
        built = compose("build", project=Compose.BUILD_PROJECT)
        assert built.returncode == 0, built.stderr[-3000:]
        up = compose("up", "-d", "--wait", "--wait-timeout", "120")
        assert up.returncode == 0, up.stderr[-3000:]

        status, first = _get(f"{base}/")
        assert status == 200, first
        status, second = _get(f"{base}/")
        assert status == 200, second
        counts = [int(re.search(r'id="visits">(\d+)<', page).group(1)) for page in (first, second)]  # type: ignore[union-attr]
        assert counts[1] == counts[0] + 1
        assert 'id="version">v2<' in second

        status, body = _get(f"{base}/version")
        version = json.loads(body)
        assert status == 200 and version["version"] == "v2" and version["host"]
        assert _get(f"{base}/health")[0] == 200

        containers = client.containers.list(filters={"label": f"com.docker.compose.project={compose.project}"})
        assert {c.labels["com.docker.compose.service"] for c in containers} == {
            "proxy",
            "web",
            "redis",
            "prometheus",
            "alertmanager",
        }
        published = {
            c.labels["com.docker.compose.service"]: binding
            for c in containers
            for bindings in (c.attrs["NetworkSettings"]["Ports"] or {}).values()
            for binding in bindings or []
        }
        assert published == {"proxy": {"HostIp": "127.0.0.1", "HostPort": str(port)}}

        # A version whose healthcheck fails: Compose's health wait refuses it, /health says 500.
        env_file.write_text(f"APP_VERSION=v3\nHEALTH_FAIL=1\nHTTP_BIND=127.0.0.1\nHTTP_PORT={port}\n")
        assert compose("build", "web", project=Compose.BUILD_PROJECT).returncode == 0
        started = time.monotonic()
        failing = compose("up", "-d", "--wait", "--wait-timeout", "60", "web")
        assert failing.returncode != 0
        assert "unhealthy" in failing.stderr
        assert time.monotonic() - started < 60  # refused for its health, not by the wait's timeout
        status, body = _get(f"{base}/health")
        assert status == 500 and json.loads(body)["version"] == "v3"
    finally:
        down = compose("down", "-v", "--remove-orphans", "--timeout", "10")
        assert down.returncode == 0, down.stderr[-2000:]
