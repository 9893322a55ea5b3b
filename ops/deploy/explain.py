"""What a person reads after a failed deploy, rollback or swap: each host's failure once, the
failing container's last log lines once per distinct log (hosts with the same lines named
together), and the commands to type next. Plain text lines; the task layer colours and prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ops.deploy.orchestrator import HostDeployReport

INDENT = "    "


@dataclass(frozen=True)
class FailureText:
    """The lines of the explanation, in their three parts."""

    errors: list[tuple[str, str]]  # (host, what failed there and how)
    logs: list[str]  # headed, indented log blocks
    next_steps: list[str]  # commands to type, with what they show

    @property
    def lines(self) -> list[str]:
        return [f"{host}: {error}" for host, error in self.errors] + self.logs + self.next_steps


def _hosts(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def explain_failures(reports: Iterable[HostDeployReport], environment: str) -> FailureText:
    """The explanation of the reports that carry an error (empty parts when none does)."""
    failed = [report for report in reports if report.error]
    errors = [(report.host, _outcome(report)) for report in failed]
    groups: dict[tuple[str, str], list[HostDeployReport]] = {}
    for report in failed:
        if report.failing is not None and report.failing.logs.strip():
            groups.setdefault((report.failing.service, report.failing.logs), []).append(report)
    logs: list[str] = []
    for (service, text), same in groups.items():
        lines = text.splitlines()
        containers = sorted(
            {report.failing.container for report in same if report.failing and report.failing.container}
        )
        named = f"{service} ({containers[0]})" if len(containers) == 1 else service
        where = [(report.failing.node if report.failing else "") or report.host for report in same]
        logs.append(f"last {len(lines)} log lines of {named} on {_hosts(where)}:")
        logs.extend(f"{INDENT}{line}" for line in lines)
    services = sorted({report.failing.service for report in failed if report.failing is not None})
    next_steps = []
    if failed:
        next_steps.append("next:")
        for service in services:
            next_steps.append(f"  inv ops.logs {service} --env {environment}   (all of its logs, every host)")
        next_steps.append(f"  inv releases.{environment}   (the release each host runs now)")
    return FailureText(errors, logs, next_steps)


def _outcome(report: HostDeployReport) -> str:
    if report.result == "rolled-back" and report.previous:
        return f"{report.error}; put back on {report.previous}"
    return report.error
