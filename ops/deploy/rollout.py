"""Rolling a per-host action out over the fleet: under every host's deploy lock, batch by batch
(a failing batch leaves later hosts on their release), one report per host, one audit line per
host. Knows nothing of what the action does on a host.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ops.config import Environment
from ops.console import FAILED, SKIPPED, Reporter
from ops.deploy.orchestrator import SUCCEEDED, HostDeployReport
from ops.errors import ConnectionLost, OpsError, connection_failure
from ops.host import audit
from ops.host.lock import held, operator
from ops.transport import Fleet, Host


@dataclass
class DeployResult:
    action: str
    environment: str
    version: str
    hosts: list[HostDeployReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(report.result in SUCCEEDED for report in self.hosts)

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "environment": self.environment,
            "version": self.version,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "hosts": [report.as_dict() for report in self.hosts],
        }


ClusterWork = Callable[[list[Host]], list[HostDeployReport]]


def roll_out(
    env: Environment,
    fleet: Fleet,
    work: Callable[[Host], HostDeployReport],
    reporter: Reporter,
    *,
    action: str,
    version: str,
    reason: str,
    batch: int = 0,
    lock_wait: float = 0,
) -> list[HostDeployReport]:
    """work on every host of the fleet, batch by batch, holding the deploy lock of all of them;
    then one audit line per host's report."""
    return roll_out_cluster(
        env,
        fleet,
        in_batches(env, fleet, batch, work, reporter, action),
        reporter,
        action=action,
        version=version,
        reason=reason,
        lock_wait=lock_wait,
    )


def in_batches(
    env: Environment,
    fleet: Fleet,
    batch: int,
    work: Callable[[Host], HostDeployReport],
    reporter: Reporter,
    action: str = "deploy",
) -> ClusterWork:
    """Per-host work as work on all hosts: batch by batch (see run_batches)."""
    return lambda hosts: run_batches(env, fleet, batch, work, reporter, action)


def roll_out_cluster(
    env: Environment,
    fleet: Fleet,
    work: ClusterWork,
    reporter: Reporter,
    *,
    action: str,
    version: str,
    reason: str,
    lock_wait: float = 0,
) -> list[HostDeployReport]:
    """work on all hosts of the fleet at once (a cluster), holding the deploy lock of every one of
    them; then one audit line per host's report."""
    with held(fleet, env.project, reason, reporter, wait=lock_wait):
        reports = work(fleet.hosts)
        record_audit(env, action, version, reports, fleet.hosts)
    return reports


def record_audit(
    env: Environment, action: str, version: str, reports: list[HostDeployReport], hosts: list[Host]
) -> None:
    """One audit line per host report, on its host (all hosts at once) or, when unreachable, locally."""
    by_name = {host.name: host for host in hosts}

    def record(report: HostDeployReport) -> None:
        line = audit.AuditRecord(
            action=action,
            environment=env.name,
            host=report.host,
            result=report.result,
            who=operator(),
            release=report.release,
            version=version,
            duration_s=round(report.seconds, 2),
            detail=report.error,
        )
        try:
            audit.append(by_name[report.host], env.project, line, env.redact, env.root)
        except OpsError:
            audit.append_local(env.root, env.name, line.line(env.redact))

    with ThreadPoolExecutor(max_workers=max(1, min(env.parallel, len(reports)))) as pool:
        list(pool.map(record, reports))


def batches(hosts: list[Host], size: int) -> list[list[Host]]:
    size = size if size > 0 else len(hosts)
    return [hosts[index : index + size] for index in range(0, len(hosts), size)]


def run_batches(
    env: Environment,
    fleet: Fleet,
    batch: int,
    work: Callable[[Host], HostDeployReport],
    reporter: Reporter,
    action: str = "deploy",
) -> list[HostDeployReport]:
    reports: list[HostDeployReport] = []
    groups = batches(fleet.hosts, batch)
    for number, hosts in enumerate(groups):
        outcome = Fleet(hosts, env.parallel).map(work)
        for item in outcome.outcomes:
            if item.value is not None:
                reports.append(item.value)
            else:
                error = item.error
                if isinstance(error, ConnectionLost):  # as a sentence, when no layer said what was under way
                    error = connection_failure(f"the {action}", error, where=item.host)
                message = error.line_for(item.host) if error else "failed"
                reporter.step(item.host, "deploy", FAILED, message)
                reports.append(HostDeployReport(item.host, "failed", error=message, seconds=item.seconds))
        if any(report.result not in SUCCEEDED for report in reports) and number < len(groups) - 1:
            for later in groups[number + 1 :]:
                for host in later:
                    reporter.step(host.name, "deploy", SKIPPED, "an earlier batch failed: left on its release")
                    reports.append(HostDeployReport(host.name, "skipped"))
            break
    return reports
