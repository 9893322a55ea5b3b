"""The OS check: provisioning refuses an unsupported release before changing anything. This step
never changes the host.
"""

from __future__ import annotations

from ops.errors import HostError
from ops.provision.facts import SUPPORTED_TEXT, HostFacts
from ops.provision.step import Change, Context, Step


class OsStep(Step):
    name, key = "os", "os"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        return []

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{facts.os_label} {facts.arch}".strip()


def check_supported(facts: HostFacts, where: str = "") -> None:
    if not facts.supported:
        raise HostError(
            f"{facts.os_label} is not supported (opskit provisions {SUPPORTED_TEXT}); nothing was changed",
            where=where or None,
            hint="use a supported release, or leave this host out with --host",
        )
