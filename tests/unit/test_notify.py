"""Notifications: the messages each result becomes, their two bodies, and delivery to a real HTTP
receiver on 127.0.0.1 (down, slow, failing, dropping), never raising and never slower than its bound."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from ops.backup.model import ArchiveRecord, BackupResult, Snapshot
from ops.config import Environment, load_environment
from ops.deploy.health import ServiceHealth
from ops.deploy.orchestrator import HostDeployReport
from ops.deploy.rollout import DeployResult
from ops.errors import LockError
from ops.notify import backup_message, deliver, deploy_message, doctor_message, notify, render
from ops.oncall.doctor import Check, DoctorReport
from ops.stack.compose import render_env
from ops.tasks.notice import notifying
from tests.receiver import closed_port, receiver

HIDDEN = "hunter" + "2-notify-" + "value"


def environment(tmp_path: Path, url: str, extra: str = "", **environ: str) -> Environment:
    (tmp_path / "env").mkdir(exist_ok=True)
    (tmp_path / "env" / "prod.env").write_text(f"HOSTS=web1.example.com\nSECRETS=DB_PASSWORD\n{extra}")
    return load_environment("prod", tmp_path, {"NOTIFY_URL": url, "DB_PASSWORD": HIDDEN, **environ})


def rolled_back() -> DeployResult:
    failing = ServiceHealth("web", "unhealthy", health_output=f"HTTP 503 from /health (password {HIDDEN})")
    reports = [
        HostDeployReport("web1", "rolled-back", "20261203T1500-v3", "20261203T1400-v2", 31.5, "gate failed", failing),
        HostDeployReport("web2", "rolled-back", "20261203T1500-v3", "20261203T1400-v2", 30.1, "gate failed", failing),
    ]
    return DeployResult("deploy", "prod", "v3", reports, seconds=42.0)


def test_a_deploy_that_failed_its_gate_is_told_as_rolled_back_naming_the_service() -> None:
    message = deploy_message(rolled_back())
    assert (message.outcome, message.ok) == ("rolled back", False)
    assert message.title == "deploy v3 on prod: rolled back (service web unhealthy)"
    assert message.field("failing service") == "web"
    assert message.field("hosts") == "web1 rolled-back, web2 rolled-back"
    assert message.field("release") == "20261203T1500-v3" and message.field("duration") == "42 s"
    assert message.field("who")
    slack = json.loads(render(message, "slack"))
    assert slack["text"].startswith(":rotating_light: deploy v3 on prod: rolled back")
    assert slack["attachments"][0]["color"] == "danger"
    assert {"title": "failing service", "value": "web", "short": True} in slack["attachments"][0]["fields"]
    generic = json.loads(render(message, "json"))
    assert generic["event"] == "deploy" and generic["outcome"] == "rolled back" and generic["ok"] is False
    assert generic["fields"]["version"] == "v3"


@pytest.mark.parametrize(
    ("results", "outcome"),
    [
        (["deployed", "deployed"], "deployed"),
        (["unchanged", "unchanged"], "unchanged"),
        (["failed", "skipped"], "failed"),
    ],
)
def test_deploy_outcomes(results: list[str], outcome: str) -> None:
    result = DeployResult("deploy", "prod", "v2", [HostDeployReport(f"h{i}", r) for i, r in enumerate(results)])
    assert deploy_message(result).outcome == outcome


def test_a_backup_with_a_refused_volume_names_it_and_its_sizes(tmp_path: Path) -> None:
    record = ArchiveRecord(
        "web1", "redis-data", "demo_redis-data", ("redis",), "redis", "web1/r.tar.zst", "zstd", 2_500_000, "0" * 64, 1.0
    )
    snapshot = Snapshot("20261203T030000Z", tmp_path, True, archives=[record], hosts={"web1": {}})
    env = environment(tmp_path, "http://127.0.0.1:9/")
    result = BackupResult(snapshot, ["web1: volume pg-data of service db refused (label it)"], 12.0)
    message = backup_message(env, result)
    assert message.outcome == "incomplete" and not message.ok
    assert "1 volumes refused" in message.title and message.field("volumes") == "redis-data (2.5 MB)"
    assert message.details == ("web1: volume pg-data of service db refused (label it)",)
    failed = backup_message(env, BackupResult(None, ["lock held by ci"], 1.0))
    assert failed.outcome == "failed" and failed.details == ("lock held by ci",)


def test_doctor_tells_only_failing_checks(tmp_path: Path) -> None:
    env = environment(tmp_path, "")
    quiet = DoctorReport("prod", [Check("disk", "web1", "warn", "86 % used")])
    assert doctor_message(env, quiet) is None
    report = DoctorReport("prod", [Check("disk", "web1", "fail", "97 % used", "free space"), *quiet.checks])
    message = doctor_message(env, report)
    assert message is not None and message.field("failing") == "disk on web1"
    assert message.details == ("web1 disk: 97 % used (fix: free space)",)


def test_delivered_once_with_the_secrets_redacted(tmp_path: Path) -> None:
    with receiver() as hook:
        env = environment(tmp_path, hook.url)
        delivery = notify(env, deploy_message(rolled_back()))
        assert delivery is not None and delivery.delivered and delivery.attempts == 1
        (body,) = hook.bodies
    assert HIDDEN.encode() not in body and b"***" in body
    assert "rolled back" in json.loads(body)["text"]


def test_json_format_and_no_url_means_no_notification(tmp_path: Path) -> None:
    with receiver() as hook:
        env = environment(tmp_path, hook.url, "NOTIFY_FORMAT=json\n")
        notify(env, deploy_message(rolled_back()))
        assert hook.messages()[0]["fields"]["failing service"] == "web"  # type: ignore[index]
    (tmp_path / "other").mkdir()
    assert notify(environment(tmp_path / "other", ""), deploy_message(rolled_back())) is None


def test_a_failed_attempt_is_retried_once() -> None:
    with receiver() as hook:
        hook.answers = ["500"]
        delivery = deliver(hook.url, "{}", 2, pause=0.01)
        assert delivery.delivered and delivery.attempts == 2
        hook.answers = ["503", "502"]
        delivery = deliver(hook.url, "{}", 2, pause=0.01)
        assert not delivery.delivered and delivery.attempts == 2 and "HTTP 502" in delivery.error
        hook.answers = ["404"]
        delivery = deliver(hook.url, "{}", 2, pause=0.01)  # a wrong URL does not get better by asking again
        assert not delivery.delivered and delivery.attempts == 1 and "HTTP 404" in delivery.error
        hook.answers = ["drop", "ok"]
        assert deliver(hook.url, "{}", 2, pause=0.01).attempts == 2


def test_a_webhook_that_is_down_or_slow_costs_at_most_two_timeouts() -> None:
    started = time.monotonic()
    down = deliver(f"http://127.0.0.1:{closed_port()}/hook", "{}", 1, pause=0.01)
    assert not down.delivered and down.attempts == 2 and "refused" in down.error
    with receiver() as hook:
        hook.answers = ["slow", "slow"]
        started = time.monotonic()
        slow = deliver(hook.url, "{}", 0.3, pause=0.1)
        took = time.monotonic() - started
    assert not slow.delivered and slow.error == "no answer within 0.3 s"
    assert 0.7 < took < 2 * (0.3 + 0.5) + 0.1 + 0.5, took
    assert deliver("ftp://example.com/x", "{}", 1).error == "NOTIFY_URL is not an http(s):// URL"


def test_the_task_hook_sends_the_result_even_through_a_failing_exit_and_never_changes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with receiver() as hook:
        env = environment(tmp_path, hook.url)
        with pytest.raises(Exit), notifying(env, "deploy", "deploy v3") as note:
            note(deploy_message(rolled_back()))
            raise Exit(code=1)  # what _render raises for a result that is not ok
        assert "rolled back" in json.loads(hook.bodies[-1])["text"]
        with pytest.raises(LockError), notifying(env, "deploy", "deploy v3"):
            raise LockError("locked by ci@runner since 03:00", where="web1")
        assert json.loads(hook.bodies[-1])["text"] == ":rotating_light: deploy v3 on prod: failed"
        assert "locked by ci@runner" in json.loads(hook.bodies[-1])["attachments"][0]["text"]
        count = len(hook.bodies)
        with notifying(env, "deploy", "deploy v3", enabled=False) as note:
            note(deploy_message(rolled_back()))
        assert len(hook.bodies) == count  # a dry run tells nobody
    down = environment(tmp_path, f"http://127.0.0.1:{closed_port()}/hook", "NOTIFY_TIMEOUT=1\n")
    with notifying(down, "deploy", "deploy v3") as note:
        note(deploy_message(rolled_back()))
    err = capsys.readouterr().err
    assert "warning: notification of the deploy not delivered to NOTIFY_URL (connection refused, 2 attempts)" in err
    assert "127.0.0.1" not in err  # the URL is a secret


def test_notify_url_is_a_secret_that_stays_on_this_machine(tmp_path: Path) -> None:
    url = "https://hooks.example.com/services/" + "T0/B0/" + "x" * 24
    env = environment(tmp_path, url)
    assert env.secret("NOTIFY_URL") == url and env.redact(f"posting to {url}") == "posting to ***"
    stack = tmp_path / "stack"
    stack.mkdir()
    rendered = render_env(env, "v1", stack)
    assert "DB_PASSWORD" in rendered and "NOTIFY_URL" not in rendered and url not in rendered
