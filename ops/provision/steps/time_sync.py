"""Time sync: chrony, or systemd-timesyncd where systemd runs it. Never steers a container's clock."""

from __future__ import annotations

from ops.provision.commands import boot_change, install_change
from ops.provision.facts import BOOT_CHRONY, HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, Step


def time_sync_kind(facts: HostFacts, settings: ProvisionSettings) -> str:
    if settings.time_sync != "auto":
        return settings.time_sync
    # Without systemd there is no timesyncd to run; chrony works anywhere.
    if not facts.has_systemd or "chrony" in facts.packages:
        return "chrony"
    return "timesyncd"


class TimeSyncStep(Step):
    name, key = "time sync", "time"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        kind = time_sync_kind(facts, ctx.settings)
        if kind == "timesyncd":
            changes = install_change(facts, ("systemd-timesyncd",))
            if not facts.ntp_enabled:
                changes.append(Change("enable systemd-timesyncd", ("timedatectl set-ntp true",)))
            return changes
        changes = install_change(facts, ("chrony",))
        if facts.in_container:
            return changes  # the clock belongs to the machine under the container: never steer it from here
        if facts.has_systemd:
            if not facts.services.get("chrony", "").startswith("enabled") or not facts.chronyd_running:
                changes.append(Change("enable and start chrony", ("systemctl enable --now chrony",)))
        elif not facts.chronyd_running:
            changes.append(Change("start chronyd (no systemd)", ("chronyd",)))
        return changes + boot_change(facts, BOOT_CHRONY, "chronyd", "pidof chronyd >/dev/null || chronyd")

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        kind = time_sync_kind(facts, ctx.settings)
        if kind == "chrony" and facts.in_container:
            return "chrony installed; not started in a container (the clock belongs to the machine)"
        return f"{kind} running"
