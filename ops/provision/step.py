"""What a provisioning step is: Step (plan from facts, then apply), the Change it plans, the
Context it may use, and StepSkipped. Concrete steps live in ops/provision/steps/, one per concern.
A plan never touches the host; only apply runs commands, and nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ops.config import HostSpec
from ops.provision.facts import HostFacts
from ops.provision.settings import ProvisionSettings
from ops.transport import Host, Runner
from ops.transport.shell import last_line

COMMAND_TIMEOUT = 300.0


@dataclass(frozen=True)
class Change:
    """One thing a step changes: what a person reads, and the shell commands (run as root) doing it.

    may_fail: a command failure is reported as a note ("not possible here") instead of failing the
    step, for what containers cannot do (swapon, writing /proc/sys).
    """

    description: str
    commands: tuple[str, ...]
    may_fail: bool = False
    timeout: float = COMMAND_TIMEOUT
    installs: tuple[str, ...] = ()  # packages this change installs: a dry run assumes them for later steps


class StepSkipped(Exception):
    """Raised by a plan when the step does not apply to this host (reported as skipped)."""


@dataclass(frozen=True)
class Context:
    """What a step may use besides facts: the settings, and how to prove a fresh deploy login."""

    settings: ProvisionSettings
    spec: HostSpec | None = None
    runner_factory: Callable[[HostSpec], Runner] | None = None


class Step:
    """One provisioning step: plan from facts (empty when the host is right), then apply."""

    name: ClassVar[str] = ""
    key: ClassVar[str] = ""

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        raise NotImplementedError

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        """The detail shown when nothing needs to change."""
        return ""

    def apply(self, host: Host, changes: Sequence[Change], facts: HostFacts, ctx: Context) -> list[str]:
        """Run the changes; returns notes for what could not be done here but is not a failure."""
        notes = []
        for change in changes:
            for command in change.commands:
                result = host.sudo(command, check=not change.may_fail, timeout=change.timeout)
                if not result.ok:
                    reason = last_line(result.stderr or result.stdout)
                    notes.append(f"{change.description}: not possible here ({reason})")
                    break
        return notes
