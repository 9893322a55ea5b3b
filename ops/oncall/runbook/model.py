"""A runbook's model: what it answers, its diagnosis steps with the healthy answer, its recovery.

Values only (and how a step judges one command's answer); loading is in load.py, running in
run.py. Nothing here reaches a host.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ops.errors import OpsError
from ops.transport import CommandResult
from ops.transport.shell import last_line

NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


class RunbookError(OpsError):
    """A runbook is unknown, or its file is not valid TOML or not a valid runbook."""


@dataclass(frozen=True)
class Expect:
    """What a healthy answer looks like; every condition given must hold."""

    exit_code: int | None = 0
    match: str = ""  # a regex that must be found in the output
    no_match: str = ""  # a regex that must not be found in the output
    max: float | None = None  # every number (first one per output line) at most this
    min: float | None = None  # every number at least this

    def judge(self, result: CommandResult) -> tuple[bool, str]:
        """(healthy, the value that decided) for one command's result."""
        output = result.stdout
        if self.exit_code is not None and result.exit_code != self.exit_code:
            return False, f"exit {result.exit_code}"
        if self.match and not re.search(self.match, output, re.MULTILINE):
            return False, last_line(output)
        if self.no_match:
            found = re.search(self.no_match, output, re.MULTILINE)
            if found:
                return False, found.group(0).strip()
        if self.max is not None or self.min is not None:
            numbers = _numbers(output)
            if not numbers:
                return False, "no number in the output"
            if self.max is not None:
                worst = max(numbers)
                if worst[0] > self.max:
                    return False, worst[1]
            if self.min is not None:
                worst = min(numbers)
                if worst[0] < self.min:
                    return False, worst[1]
            return True, worst[1]
        return True, last_line(output) if output.strip() else ""


@dataclass(frozen=True)
class DiagnosisStep:
    """One diagnosis step: a command on each host, in each container of a service, or a doctor check."""

    title: str
    kind: str  # host | exec | doctor
    command: str  # the shell command, or the doctor check's name
    service: str = ""  # for exec: the compose service by name
    expect: Expect = field(default_factory=Expect)
    cause: str = ""  # what is wrong when the answer is not healthy ({value}, {output}, {host}, {service})
    id: str = ""
    role: str = ""  # instead of a name: every service playing this role (subjects.py); none: not applicable


@dataclass(frozen=True)
class Action:
    """One recovery action, run only with --fix after confirmation."""

    title: str
    kind: str  # host | exec
    command: str
    service: str = ""
    when: tuple[str, ...] = ()  # ids of steps that must have failed; empty: any failure
    role: str = ""  # every service playing this role, as for a step


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    alerts: tuple[str, ...]
    symptoms: tuple[str, ...]
    steps: tuple[DiagnosisStep, ...]
    actions: tuple[Action, ...]
    rto: str
    rpo: str
    source: str  # "shipped" or the file of the repository's own runbook
    path: Path

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _numbers(output: str) -> list[tuple[float, str]]:
    """(first number, its line) for each output line that holds a number."""
    numbers = []
    for line in output.splitlines():
        found = NUMBER_RE.search(line)
        if found:
            numbers.append((float(found.group(0)), line.strip()[:200]))
    return numbers
