"""Kernel settings (SYSCTL): persisted in sysctl.d, applied where /proc/sys is writable. A read-only
/proc/sys (a container) is a note, never a failure.
"""

from __future__ import annotations

from collections.abc import Sequence

from ops.provision.commands import HEADER, write_file
from ops.provision.facts import SYSCTL_FILE, HostFacts
from ops.provision.step import Change, Context, Step, StepSkipped
from ops.transport import Host
from ops.transport.shell import q


class SysctlStep(Step):
    name, key = "sysctl", "sysctl"

    def content(self, ctx: Context) -> str:
        return HEADER + "".join(f"{key} = {value}\n" for key, value in ctx.settings.sysctl)

    def unapplied(self, facts: HostFacts, ctx: Context) -> list[tuple[str, str]]:
        return [(k, v) for k, v in ctx.settings.sysctl if facts.sysctl.get(k) != v]

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        if not ctx.settings.sysctl:
            raise StepSkipped("nothing set (SYSCTL is empty)")
        changes = []
        if facts.file(SYSCTL_FILE) != self.content(ctx):
            changes.append(Change(f"persist {SYSCTL_FILE}", (write_file(SYSCTL_FILE, self.content(ctx)),)))
        applicable = [(k, v) for k, v in self.unapplied(facts, ctx) if k in facts.sysctl_writable]
        if applicable:
            changes.append(
                Change(
                    "apply " + ", ".join(f"{k}={v}" for k, v in applicable),
                    tuple(f"sysctl -q -w {q(f'{k}={v}')}" for k, v in applicable),
                    may_fail=True,
                )
            )
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        stuck = self.unapplied(facts, ctx)
        settings = ", ".join(f"{k}={v}" for k, v in ctx.settings.sysctl)
        if stuck:
            return (
                f"{settings} persisted; not applied here: /proc/sys is read-only (container), "
                "takes effect where the kernel allows"
            )
        return f"{settings} applied and persisted"

    def apply(self, host: Host, changes: Sequence[Change], facts: HostFacts, ctx: Context) -> list[str]:
        notes = super().apply(host, changes, facts, ctx)
        if any(k not in facts.sysctl_writable for k, _ in self.unapplied(facts, ctx)):
            notes.append("not applied here: /proc/sys is read-only (container); persisted for the kernel")
        return notes
