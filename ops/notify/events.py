"""The message for each operation's result: deploy, rollback and swap (DeployResult), backup,
restore and drill, the doctor's failing checks, and any operation that stopped with
an error before it had a result. Builds messages only; sending is deliver's."""

from __future__ import annotations

from ops.backup.model import BackupResult, DrillResult, RestoreResult, Snapshot
from ops.config import Environment
from ops.deploy.orchestrator import SUCCEEDED
from ops.deploy.rollout import DeployResult
from ops.host.lock import operator
from ops.notify.message import Message
from ops.oncall.doctor import DoctorReport


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def deploy_message(result: DeployResult) -> Message:
    """deploy / rollback / swap: deployed (or unchanged), rolled back (the release failed its gate
    and each host went back by itself), or failed; hosts, release, version, who, duration and the
    failing service with its health output."""
    reports = result.hosts
    event = result.action.split()[0]  # "swap web" -> swap
    if result.ok:
        outcome = {"deploy": "deployed", "rollback": "rolled back", "swap": "swapped"}.get(event, "done")
        if event == "deploy" and reports and all(report.result == "unchanged" for report in reports):
            outcome = "unchanged"
    elif any(report.result == "rolled-back" for report in reports):
        outcome = "rolled back"
    else:
        outcome = "failed"
    failing = next((report.failing for report in reports if report.failing), None)
    subject = result.action if event != "rollback" else "rollback"
    title = f"{subject} {result.version} on {result.environment}: {outcome}"
    if failing is not None:
        title += f" (service {failing.service} {failing.state})"
    releases = sorted({report.release for report in reports if report.release})
    fields = [
        ("environment", result.environment),
        ("version", result.version),
        ("release", ", ".join(releases) or "-"),
        ("hosts", ", ".join(f"{report.host} {report.result}" for report in reports) or "-"),
        ("who", operator()),
        ("duration", _duration(result.seconds)),
    ]
    if failing is not None:
        fields.append(("failing service", failing.service))
    details = [
        f"{report.host}: {report.error}" for report in reports if report.error and report.result not in SUCCEEDED
    ]
    if failing is not None and failing.health_output:
        details.append(f"{failing.service} health: {failing.health_output.strip()}")
    return Message(event, outcome, result.ok, result.environment, title, tuple(fields), tuple(details))


def _snapshot_fields(snapshot: Snapshot) -> list[tuple[str, str]]:
    volumes = sorted({f"{record.volume} ({_size(record.bytes)})" for record in snapshot.archives})
    return [
        ("snapshot", snapshot.id),
        ("volumes", ", ".join(volumes) or "-"),
        ("size", _size(snapshot.bytes)),
        ("hosts", ", ".join(sorted(snapshot.hosts)) or "-"),
    ]


def backup_message(env: Environment, result: BackupResult) -> Message:
    """complete, complete with volumes refused (named), or failed (no snapshot; the errors)."""
    snapshot = result.snapshot
    if snapshot is None:
        outcome, title = "failed", f"backup of {env.name}: failed, no snapshot was made"
        fields = [("environment", env.name)]
    elif result.errors:
        outcome = "incomplete"
        title = f"backup of {env.name}: snapshot {snapshot.id} complete but {len(result.errors)} volumes refused"
        fields = [("environment", env.name), *_snapshot_fields(snapshot)]
    else:
        outcome = "complete"
        title = f"backup of {env.name}: snapshot {snapshot.id} complete, {_size(snapshot.bytes)}"
        fields = [("environment", env.name), *_snapshot_fields(snapshot)]
    fields += [("who", operator()), ("duration", _duration(result.seconds))]
    return Message("backup", outcome, result.ok, env.name, title, tuple(fields), tuple(result.errors))


def restore_message(env: Environment, result: RestoreResult) -> Message:
    outcome = "restored" if result.ok else "failed"
    title = f"restore of {env.name} from {result.snapshot.id}: {outcome}"
    if result.ok:
        title += f", {len(result.restored)} volumes"
    fields = (
        ("environment", env.name),
        ("snapshot", result.snapshot.id),
        ("volumes", ", ".join(result.restored) or "-"),
        ("who", operator()),
        ("duration", _duration(result.seconds)),
    )
    return Message("restore", outcome, result.ok, env.name, title, fields, tuple(result.errors))


def drill_message(env: Environment, result: DrillResult) -> Message:
    outcome = "passed" if result.ok else "failed"
    title = f"restore drill of {result.snapshot} on {env.name}: {outcome}"
    fields = (
        ("environment", env.name),
        ("snapshot", result.snapshot),
        ("host", result.host),
        ("volumes", ", ".join(f"{volume.volume}: {volume.summary}" for volume in result.volumes) or "-"),
        ("duration", _duration(result.seconds)),
    )
    details = tuple(line for line in (result.error, f"left on the host: {result.left}" if result.left else "") if line)
    return Message("drill", outcome, result.ok, env.name, title, fields, details)


def doctor_message(env: Environment, report: DoctorReport) -> Message | None:
    """The failing checks, or None when nothing fails (a cron doctor stays quiet when all is well)."""
    failing = [check for check in report.checks if check.status == "fail"]
    if not failing:
        return None
    title = f"doctor of {env.name}: {len(failing)} checks failing"
    fields = (
        ("environment", env.name),
        ("failing", ", ".join(sorted({f"{check.name} on {check.host}" for check in failing}))),
        ("checks", f"{report.count('pass')} pass, {report.count('warn')} warn, {len(failing)} fail"),
    )
    details = tuple(
        f"{check.host} {check.name}: {check.detail}" + (f" (fix: {check.fix})" if check.fix else "")
        for check in failing
    )
    return Message("doctor", "failing", False, env.name, title, fields, details)


def failure_message(env: Environment, event: str, subject: str, error: str) -> Message:
    """An operation that stopped with an error before it had a result (a held lock, a bad stack)."""
    title = f"{subject} on {env.name}: failed"
    fields = (("environment", env.name), ("who", operator()))
    return Message(event, "failed", False, env.name, title, fields, (error,))
