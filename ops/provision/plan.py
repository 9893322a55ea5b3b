"""Plans: the one loop over the steps, which a dry run prints (plan_host, and provision's dry run)
and apply runs (ops.provision.run). Planning never touches a host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ops.console import OK, SKIPPED, WOULD_CHANGE
from ops.provision.facts import HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, StepSkipped
from ops.provision.steps import STEPS
from ops.provision.steps.os import check_supported


def assume_installed(facts: HostFacts, changes: Iterable[Change]) -> HostFacts:
    """Facts as if the planned installs were done, so a dry run lists each install once."""
    planned = {package for change in changes for package in change.installs}
    return replace(facts, packages=facts.packages | planned) if planned else facts


@dataclass(frozen=True)
class StepPlan:
    step: str
    status: str  # OK, WOULD_CHANGE or SKIPPED
    changes: tuple[Change, ...]
    detail: str


def plan_host(facts: HostFacts, settings: ProvisionSettings) -> list[StepPlan]:
    """Every step's plan from one set of facts, without SSH: what a dry run shows (later steps see
    the host as it is now, not as earlier steps would leave it)."""
    check_supported(facts)
    ctx = Context(settings)
    plans = []
    for step in STEPS:
        if not settings.enabled(step.key):
            plans.append(StepPlan(step.name, SKIPPED, (), "skipped by PROVISION_SKIP"))
            continue
        try:
            changes = step.plan(facts, ctx)
        except StepSkipped as skipped:
            plans.append(StepPlan(step.name, SKIPPED, (), str(skipped)))
            continue
        if changes:
            plans.append(StepPlan(step.name, WOULD_CHANGE, tuple(changes), "; ".join(c.description for c in changes)))
            facts = assume_installed(facts, changes)
        else:
            plans.append(StepPlan(step.name, OK, (), step.summary(facts, ctx)))
    return plans
