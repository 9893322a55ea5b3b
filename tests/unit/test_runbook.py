"""Runbooks as data: the loader's errors name file and line or key, every shipped runbook is valid,
every alert of the demo stack names a runbook that exists, and a step judges answers as documented."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.config import HostSpec
from ops.oncall.runbook import (
    Expect,
    RunbookError,
    find,
    load_all,
    load_runbook,
    parse_runbook,
    runbook_files,
)
from ops.oncall.runbook.run import _diagnose_host
from ops.transport import CommandResult, Host
from tests.cli import opskit
from tests.fakes import FakeRunner

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {
    "disk-full",
    "service-unhealthy",
    "redis-down",
    "memory-pressure",
    "prometheus-storage",
    "deploy-failed",
    "backup-stale",
    "postgres-connection-pool",
    "database-down",
}
DEMO = REPO / "stacks" / "demo"

GOOD = """
name = "cache-down"
title = "The cache is down"
alerts = ["CacheDown"]
symptoms = ["slow pages"]
rto = "10m"
rpo = "0"

[[diagnosis]]
id = "ping"
title = "cache answers"
exec = "redis-cli ping"
service = "cache"
expect = { match = '^PONG$' }
cause = "the cache does not answer ({value})"

[[recovery]]
title = "start it"
when = ["ping"]
host = "docker start $(containers cache all)"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / "runbooks").mkdir(exist_ok=True)
    path = tmp_path / "runbooks" / f"{name}.toml"
    path.write_text(text)
    return path


def test_every_shipped_runbook_is_valid_and_complete() -> None:
    runbooks = load_all(None)
    assert set(runbooks) >= SHIPPED
    for runbook in runbooks.values():
        assert runbook.source == "shipped"
        assert runbook.title and runbook.symptoms and runbook.steps and runbook.rto and runbook.rpo, runbook.name
        for step in runbook.steps:
            assert step.cause, f"{runbook.name}: step {step.title!r} names no cause"


def _alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((REPO / "stacks" / "demo" / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def test_every_alert_rule_names_a_runbook_that_exists_and_lists_the_alert() -> None:
    runbooks = load_all(None, DEMO)
    rules = _alert_rules()
    assert rules
    missing = [rule["alert"] for rule in rules if "runbook" not in rule.get("annotations", {})]
    assert not missing, f"alert rules without a runbook annotation: {missing}"
    unknown = [(r["alert"], r["annotations"]["runbook"]) for r in rules if r["annotations"]["runbook"] not in runbooks]
    assert not unknown, f"alert rules naming a runbook that does not exist: {unknown}"
    # The demo's own runbooks list its alerts; shipped ones list generic names (TargetDown), not the demo's.
    own = [r for r in rules if runbooks[r["annotations"]["runbook"]].source != "shipped"]
    unlisted = [r["alert"] for r in own if r["alert"] not in runbooks[r["annotations"]["runbook"]].alerts]
    assert own and not unlisted, f"runbooks that do not list the alerts pointing at them: {unlisted}"


def test_shipped_runbooks_name_no_service_of_the_demo() -> None:
    demo_names = re.compile(r"\b(web|proxy|alertmanager)\b|Web[A-Z]")
    for runbook in load_all(None).values():
        text = runbook.path.read_text()
        named = [line for line in text.splitlines() if not line.startswith("#") and demo_names.search(line)]
        assert named == [], runbook.name


def test_a_good_runbook_loads_with_its_steps_and_recovery(tmp_path: Path) -> None:
    runbook = load_runbook(write(tmp_path, "cache-down", GOOD))
    assert runbook.alerts == ("CacheDown",)
    assert runbook.steps[0].kind == "exec" and runbook.steps[0].service == "cache"
    assert runbook.steps[0].expect == Expect(exit_code=0, match="^PONG$")
    assert runbook.actions[0].when == ("ping",)


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    text = GOOD.replace('rto = "10m"', 'rto = "10m')
    path = write(tmp_path, "cache-down", text)
    with pytest.raises(RunbookError) as caught:
        load_runbook(path, display="runbooks/cache-down.toml")
    line = text.splitlines().index('rto = "10m') + 1
    assert caught.value.where == f"runbooks/cache-down.toml:{line}"
    assert "TOML syntax error" in caught.value.one_line()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda t: t.replace('title = "The cache is down"\n', ""), "title"),
        (lambda t: t.replace('exec = "redis-cli ping"\n', ""), "diagnosis[1]"),
        (lambda t: t.replace('service = "cache"\n', ""), "diagnosis[1].service"),
        (lambda t: t.replace("match = '^PONG$'", "match = '^(PONG$'"), "diagnosis[1].expect.match"),
        (lambda t: t.replace("match = '^PONG$'", "max = 'lots'"), "diagnosis[1].expect.max"),
        (lambda t: t.replace('when = ["ping"]', 'when = ["pong"]'), "recovery[1].when"),
        (lambda t: t.replace('rpo = "0"', 'rpo = "0"\nseverity = "high"'), "severity"),
        (lambda t: t.replace('cause = "the cache', 'kause = "the cache'), "diagnosis[1].kause"),
    ],
)
def test_a_schema_error_names_the_file_and_key(tmp_path: Path, change: Any, key: str) -> None:
    path = write(tmp_path, "cache-down", change(GOOD))
    with pytest.raises(RunbookError) as caught:
        load_runbook(path, display="runbooks/cache-down.toml")
    assert caught.value.where == "runbooks/cache-down.toml"
    assert caught.value.message.startswith(f"{key}:"), caught.value.message


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunbookError, match="differs from the file name"):
        parse_runbook(GOOD, tmp_path / "other.toml", "test")


def test_a_repository_runbook_overrides_a_shipped_one_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path, "redis-down", GOOD.replace("cache-down", "redis-down"))
    write(tmp_path, "cache-down", GOOD)
    files = runbook_files(tmp_path)
    assert files["redis-down"][1] == "runbooks/redis-down.toml"
    assert files["disk-full"][1] == "shipped"
    assert find(tmp_path, "redis-down").title == "The cache is down"
    assert find(tmp_path, "cache-down").source == "runbooks/cache-down.toml"


def test_an_unknown_runbook_lists_the_known_ones() -> None:
    with pytest.raises(RunbookError) as caught:
        find(None, "nope")
    assert "unknown runbook 'nope'" in caught.value.one_line()
    assert "redis-down" in caught.value.one_line()


def result(stdout: str, code: int = 0) -> CommandResult:
    return CommandResult("x", code, stdout, "")


def test_expect_judges_exit_code_regex_and_thresholds() -> None:
    assert Expect().judge(result("fine")) == (True, "fine")
    assert Expect().judge(result("", 3)) == (False, "exit 3")
    assert Expect(match="^PONG$").judge(result("PONG\n"))[0]
    assert Expect(match="^PONG$").judge(result("Could not connect\n")) == (False, "Could not connect")
    assert Expect(no_match="unhealthy.*").judge(result("web Up (unhealthy)\n")) == (False, "unhealthy)")
    assert Expect(max=90).judge(result("31% /\n97% volume demo_data\n")) == (False, "97% volume demo_data")
    assert Expect(max=90).judge(result("31% /\n")) == (True, "31% /")
    assert Expect(min=10).judge(result("5 free\n")) == (False, "5 free")
    assert Expect(max=90).judge(result("no numbers")) == (False, "no number in the output")


def test_a_step_names_the_cause_and_a_missing_container(tmp_path: Path) -> None:
    runbook = load_runbook(write(tmp_path, "cache-down", GOOD))
    down = Host(HostSpec("127.0.0.21"), FakeRunner({"redis-cli ping": (1, "Could not connect to Redis")}))
    [step] = _diagnose_host(down, "demo", runbook.steps)
    assert not step.ok and step.cause == "the cache does not answer (exit 1)"
    gone = Host(HostSpec("127.0.0.21"), FakeRunner({"redis-cli ping": (97, "no running container of service cache")}))
    [step] = _diagnose_host(gone, "demo", runbook.steps)
    assert step.cause == "service cache has no running container"
    fine = Host(HostSpec("127.0.0.21"), FakeRunner({"redis-cli ping": (0, "PONG")}))
    [step] = _diagnose_host(fine, "demo", runbook.steps)
    assert step.ok and step.cause == ""


def test_cli_unknown_runbook_is_one_red_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    for args in (("runbook.show", "nope"), ("runbook.run", "nope")):
        done = opskit(tmp_path, *args)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            "error: unknown runbook 'nope' (runbooks: backup-stale, database-down, deploy-failed, disk-full, memory-pressure, "
            "postgres-connection-pool, prometheus-storage, redis-down, service-unhealthy (inv runbook.list))"
        ]


def test_cli_names_file_and_line_of_a_broken_repository_runbook(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    write(tmp_path, "cache-down", GOOD.replace("[[diagnosis]]", "[[diagnosis]"))
    line = GOOD.splitlines().index("[[diagnosis]]") + 1
    for args in (("runbook.list",), ("runbook.run", "cache-down")):
        done = opskit(tmp_path, *args)
        assert done.returncode == 1
        [message] = done.stderr.strip().splitlines()
        assert message.startswith(f"error: runbooks/cache-down.toml:{line}: TOML syntax error:"), message


def test_cli_lists_and_shows_runbooks_with_the_repository_override(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    write(tmp_path, "cache-down", GOOD)
    done = opskit(tmp_path, "runbook.list")
    assert done.returncode == 0
    assert re.search(r"cache-down\s+│ The cache is down\s+│ CacheDown\s+│ runbooks/cache-down.toml", done.stdout)
    assert "10 runbooks" in done.stdout
    done = opskit(tmp_path, "runbook.show", "redis-down")
    assert done.returncode == 0
    assert (
        "healthy: exit 0, output matches /^PONG$/; otherwise: Redis ({service}) does not answer PING ({value})"
        in done.stdout
    )


class StatefulRunner(FakeRunner):
    """A host whose cache is down until the recovery's `docker start` ran."""

    def __init__(self, down: bool):
        super().__init__()
        self.down = down

    def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
        self.commands.append(command)
        if "docker start" in command:
            self.down = False
        if "redis-cli ping" in command:
            return CommandResult(command, 1 if self.down else 0, "" if self.down else "PONG\n", "refused")
        return CommandResult(command, 0, "", "")


def fix_env(tmp_path: Path) -> Any:
    from ops.config import load_environment

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.21,127.0.0.22\nPROJECT=demo\n")
    return load_environment("lab", tmp_path, os.environ)


def test_fix_runs_only_after_confirmation_only_where_it_failed_and_verifies(tmp_path: Path) -> None:
    from ops.console import RecordingReporter
    from ops.oncall.runbook import run_runbook

    env = fix_env(tmp_path)
    runbook = load_runbook(write(tmp_path, "cache-down", GOOD))
    runners = {"127.0.0.21": StatefulRunner(down=True), "127.0.0.22": StatefulRunner(down=False)}
    factory = lambda spec: runners[spec.address]  # noqa: E731

    asked: list[str] = []
    refused = run_runbook(
        env, runbook, RecordingReporter(), fix=True, confirm=lambda q: asked.append(q) or False, runner_factory=factory
    )
    assert asked == ["run the recovery of cache-down on lab: start it?"]
    assert refused.fixed is None and refused.causes == ["the cache does not answer (exit 1)"]
    assert not any("docker start" in c for r in runners.values() for c in r.commands)

    fixed = run_runbook(env, runbook, RecordingReporter(), fix=True, confirm=lambda q: True, runner_factory=factory)
    assert fixed.fixed is True and [a.host for a in fixed.actions] == ["127.0.0.21"]
    assert not any("docker start" in c for c in runners["127.0.0.22"].commands)
    assert all(step.ok for step in fixed.after_fix)


def test_without_fix_nothing_changes_and_the_conclusion_names_the_cause(tmp_path: Path) -> None:
    from ops.console import RecordingReporter
    from ops.oncall.runbook import run_runbook

    env = fix_env(tmp_path)
    runbook = load_runbook(write(tmp_path, "cache-down", GOOD))
    runners = {"127.0.0.21": StatefulRunner(down=True), "127.0.0.22": StatefulRunner(down=True)}
    reporter = RecordingReporter()
    result = run_runbook(env, runbook, reporter, runner_factory=lambda spec: runners[spec.address])
    assert not result.healthy and result.conclusion == "the cache does not answer (exit 1)"
    assert [(e.host, e.status) for e in reporter.events] == [("127.0.0.21", "failed"), ("127.0.0.22", "failed")]
    assert not any("docker start" in c for r in runners.values() for c in r.commands)


def test_a_doctor_step_asks_the_probe_the_caller_passes(tmp_path: Path) -> None:
    from ops.console import RecordingReporter
    from ops.oncall.runbook import run_runbook

    env = fix_env(tmp_path)
    text = GOOD.replace('exec = "redis-cli ping"\nservice = "cache"', 'doctor = "lock"').replace(
        'when = ["ping"]\n', ""
    )
    runbook = load_runbook(write(tmp_path, "cache-down", text))
    asked: list[str] = []

    def probe(_env: Any, check: str) -> list[tuple[str, bool, str]]:
        asked.append(check)
        return [("127.0.0.21", False, "stale deploy lock")]

    result = run_runbook(env, runbook, RecordingReporter(), doctor_probe=probe)
    assert asked == ["lock"] and result.conclusion == "the cache does not answer (stale deploy lock)"
    with pytest.raises(RunbookError, match="asks the doctor, and no doctor probe was given"):
        run_runbook(env, runbook, RecordingReporter())
