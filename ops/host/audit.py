"""The audit trail: one JSON line per action, on each host (/opt/<project>/audit.log) and locally.

Append-only. Records carry names, versions, results and durations, never secret values: every
line passes through the environment's redactor before it is written anywhere.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ops.host.layout import ProjectLayout
from ops.transport import Host

LOCAL_AUDIT_DIR = ".opskit/audit"


@dataclass(frozen=True)
class AuditRecord:
    action: str
    environment: str
    host: str
    result: str  # ok | failed | rolled-back
    who: str
    release: str = ""
    version: str = ""
    duration_s: float = 0.0
    detail: str = ""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def line(self, redact: Callable[[str], str]) -> str:
        return redact(json.dumps(asdict(self), sort_keys=True))


def remote_log(project: str) -> str:
    return ProjectLayout(project).audit_log


def append(host: Host, project: str, record: AuditRecord, redact: Callable[[str], str], local_root: Path) -> None:
    """Append the record to the host's audit log and to the local one."""
    line = record.line(redact)
    host.run(
        f"mkdir -p {shlex.quote(ProjectLayout(project).base)} && printf '%s\\n' {shlex.quote(line)} >> {remote_log(project)}"
    )
    append_local(local_root, record.environment, line)


def append_local(local_root: Path, environment: str, line: str) -> None:
    path = local_root / LOCAL_AUDIT_DIR / f"{environment}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(line + "\n")


def read(host: Host, project: str, tail: int | None = None) -> list[dict[str, object]]:
    command = f"cat {remote_log(project)} 2>/dev/null || true"
    if tail:
        command = f"tail -n {int(tail)} {remote_log(project)} 2>/dev/null || true"
    records = []
    for line in host.run(command).stdout.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line from a host that died mid-write
    return records
