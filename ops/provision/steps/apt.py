"""The apt cache (refreshed when older than APT_CACHE_MAX_AGE) and the baseline packages, with what
the enabled later steps need installed in one apt transaction.
"""

from __future__ import annotations

from ops.provision.commands import APT_TIMEOUT, apt_update, install_change
from ops.provision.facts import HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, Step
from ops.provision.steps.time_sync import time_sync_kind


class AptCacheStep(Step):
    name, key = "apt cache", "apt"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        age = facts.apt_cache_age
        if age is not None and age <= ctx.settings.apt_cache_max_age:
            return []
        why = "never refreshed" if age is None else f"{age // 60} min old"
        return [Change(f"apt-get update ({why})", (apt_update(),), timeout=APT_TIMEOUT)]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"refreshed {(facts.apt_cache_age or 0) // 60} min ago"


def step_packages(facts: HostFacts, settings: ProvisionSettings) -> list[str]:
    """Baseline plus what the enabled later steps need, installed in one apt transaction."""
    wanted = list(settings.baseline_packages)
    if settings.enabled("deploy-user") and settings.deploy_sudo:
        wanted.append("sudo")
    if settings.enabled("firewall"):
        wanted.append("ufw")
    if settings.enabled("unattended-upgrades"):
        wanted.append("unattended-upgrades")
    if settings.enabled("fail2ban"):
        wanted += ["fail2ban"] + (["python3-systemd"] if facts.has_systemd else [])
    if settings.enabled("time"):
        wanted.append("chrony" if time_sync_kind(facts, settings) == "chrony" else "systemd-timesyncd")
    return wanted


class PackagesStep(Step):
    name, key = "packages", "packages"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        return install_change(facts, step_packages(facts, ctx.settings))

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{len(set(step_packages(facts, ctx.settings)))} installed"
