"""What a person reads after a failed deploy: each host once, logs once per distinct log, next commands;
and transport failures as sentences."""

from __future__ import annotations

from ops.deploy.explain import explain_failures
from ops.deploy.health import ServiceHealth
from ops.deploy.orchestrator import HostDeployReport
from ops.errors import ConnectionLost, HealthGateError, connection_failure

EXITED = ServiceHealth("api", "exited", logs="boot\nKeyError: 'DB_URL'", container="notes-api-2", exit_code=3)


def test_identical_logs_of_two_hosts_are_shown_once_naming_both() -> None:
    reports = [
        HostDeployReport(host, "rolled-back", previous="r1", error=EXITED.describe(), failing=EXITED)
        for host in ("h1", "h2")
    ]
    assert explain_failures(reports, "staging").lines == [
        "h1: service api (container notes-api-2) exited with code 3; put back on r1",
        "h2: service api (container notes-api-2) exited with code 3; put back on r1",
        "last 2 log lines of api (notes-api-2) on h1 and h2:",
        "    boot",
        "    KeyError: 'DB_URL'",
        "next:",
        "  inv ops.logs api --env staging   (all of its logs, every host)",
        "  inv releases.staging   (the release each host runs now)",
    ]


def test_different_logs_are_shown_per_host_and_a_healthy_host_not_at_all() -> None:
    other = ServiceHealth("api", "exited", logs="OOM", container="notes-api-2", exit_code=137, oom_killed=True)
    reports = [
        HostDeployReport("h1", "rolled-back", error=EXITED.describe(), failing=EXITED),
        HostDeployReport("h2", "failed", error=other.describe(), failing=other),
        HostDeployReport("h3", "deployed"),
    ]
    text = explain_failures(reports, "prod")
    assert [host for host, _ in text.errors] == ["h1", "h2"]
    assert "exited with code 137 (OOM-killed" in text.errors[1][1]
    assert [line for line in text.logs if line.startswith("last")] == [
        "last 2 log lines of api (notes-api-2) on h1:",
        "last 1 log lines of api (notes-api-2) on h2:",
    ]


def test_nothing_to_explain_when_every_host_succeeded() -> None:
    assert explain_failures([HostDeployReport("h1", "deployed")], "prod").lines == []


def test_a_host_is_named_once_where_it_is_shown() -> None:
    error = HealthGateError("service web is unhealthy", where="h1")
    assert error.one_line() == "h1: service web is unhealthy"
    assert error.line_for("h1") == "service web is unhealthy"
    assert HealthGateError("x", where="h1 demo-web-1").line_for("h1") == "demo-web-1: x"
    assert HealthGateError("x", where="h2").line_for("h1") == "h2: x"


def test_transport_failures_are_sentences_never_a_repr() -> None:
    dropped = connection_failure("sending images", OSError("Socket is closed"), where="h1")
    assert dropped.line_for("h1") == (
        "sending images failed: the connection to the host dropped"
        " (check that the host is up (inv ops.status), then run the command again)"
    )
    refused = connection_failure("compose up", ConnectionRefusedError(111, "Connection refused"), where="h1")
    assert refused.message == "compose up failed: the host is unreachable"
    assert connection_failure("x", TimeoutError("timed out"), where="h1").unreachable
    # a lower layer that said what it was doing is kept as it is
    assert connection_failure("the deploy", dropped, where="h1") is dropped
    lost = ConnectionLost("unreachable: connection refused", where="h1", unreachable=True)
    assert connection_failure("reading the release", lost, where="h1").message == (
        "reading the release failed: the host is unreachable"
    )
