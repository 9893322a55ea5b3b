"""ops.stack.toolbox without Docker: which tool checks which file, and compose_config driven through a
fake compose binary (a collaborator passed in, not a patch).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ops.console import OK, RecordingReporter
from ops.errors import StackError
from ops.stack.toolbox import _planned_checks, compose_config, ensure_compose

STACK = Path(__file__).resolve().parents[2] / "stacks" / "demo"


def _fake_compose(tmp_path: Path, script: str) -> Path:
    binary = tmp_path / "docker-compose"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    return binary


def test_the_demo_stack_plans_every_check() -> None:
    plan = {(tool, path.relative_to(STACK).as_posix()) for tool, path, _ in _planned_checks(STACK)}
    assert plan == {
        ("promtool check config", "prometheus/prometheus.yml"),
        ("promtool check rules", "prometheus/rules/demo.yml"),
        ("promtool test rules", "prometheus/tests/demo.test.yml"),
        ("amtool check-config", "alertmanager/alertmanager.yml"),
        ("nginx -t", "proxy/nginx.conf"),
    }


def test_checks_run_on_the_mounted_copy() -> None:
    commands = [command for _, _, command in _planned_checks(STACK)]
    assert ["nginx", "-t", "-c", "/stack/proxy/nginx.conf"] in commands


def test_compose_config_returns_what_compose_prints(tmp_path: Path) -> None:
    binary = _fake_compose(tmp_path, 'echo "$@"\n')
    env_file = tmp_path / "release.env"
    output = compose_config(STACK, binary, env_file)
    assert f"-f {STACK / 'compose.yaml'} --env-file {env_file} config" in output


def test_compose_config_does_not_leak_the_callers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_VERSION", "from-my-shell")
    binary = _fake_compose(tmp_path, 'echo "APP_VERSION=${APP_VERSION:-unset}"\n')
    assert compose_config(STACK, binary).strip() == "APP_VERSION=unset"
    assert compose_config(STACK, binary, environment={"APP_VERSION": "v4"}).strip() == "APP_VERSION=v4"


def test_an_invalid_compose_file_raises_with_composes_first_line(tmp_path: Path) -> None:
    binary = _fake_compose(
        tmp_path,
        'echo "validating compose.yaml: services.web additional property foo is not allowed" >&2\n'
        'echo "second line" >&2\nexit 15\n',
    )
    with pytest.raises(StackError) as caught:
        compose_config(STACK, binary)
    assert caught.value.message == (
        "compose file is invalid: validating compose.yaml: services.web additional property foo is not allowed"
    )
    assert caught.value.where == str(STACK / "compose.yaml")


def test_a_missing_compose_file_or_binary_raises(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no compose file"):
        compose_config(tmp_path, _fake_compose(tmp_path, "exit 0\n"))
    with pytest.raises(StackError, match="could not run"):
        compose_config(STACK, tmp_path / "nowhere" / "docker-compose")


def test_ensure_compose_keeps_a_binary_already_there(tmp_path: Path) -> None:
    target = tmp_path / ".lab" / "bin" / "docker-compose"
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    reporter = RecordingReporter()
    assert ensure_compose(tmp_path, reporter) == target
    assert [(event.step, event.status) for event in reporter.events] == [("docker-compose", OK)]
    assert os.access(target, os.X_OK)
