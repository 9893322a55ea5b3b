"""Plans: the one loop over the steps, which a dry run prints (plan_host, and provision's dry run)
and apply runs (ops.provision.run). Planning never touches a host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from ops.console import OK, SKIPPED, WOULD_CHANGE
from ops.provision.facts import HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, Step, StepSkipped
from ops.provision.steps import STEPS
from ops.provision.steps.os import check_supported


def assume_installed(facts: HostFacts, changes: Iterable[Change]) -> HostFacts:
    """Facts as if the planned installs were done, so a dry run lists each install once."""
    planned = {package for change in changes for package in change.installs}
    return replace(facts, packages=facts.packages | planned) if planned else facts


@dataclass(frozen=True)
class StepPlan:
    """One step's plan: its name, OK, WOULD_CHANGE or SKIPPED, the changes, and what to show."""

    step: str
    status: str  # OK, WOULD_CHANGE or SKIPPED
    changes: tuple[Change, ...]
    detail: str


class StepLoop:
    """The one walk over STEPS: a dry run prints each plan (plan_host, provision's dry run), apply
    runs it (ops.provision.run). Both see a step skipped, ok or with changes the same way.

    Each step plans from the facts as the earlier steps left the host: after applying a plan with
    changes, hand the loop the facts read afterwards (applied); otherwise (a dry run) it assumes
    the planned installs done, so each install is listed once. A step's plan may raise OpsError:
    `step` is then the step that raised it.
    """

    def __init__(self, facts: HostFacts, ctx: Context, steps: Sequence[Step] = STEPS):
        self.facts = facts
        self.ctx = ctx
        self.steps = steps
        self.step: Step | None = None
        self._applied: HostFacts | None = None

    def applied(self, facts: HostFacts) -> None:
        """The facts read after applying the current step's changes: later steps plan from them."""
        self._applied = facts

    def __iter__(self) -> Iterator[tuple[Step, StepPlan]]:
        for step in self.steps:
            self.step = step
            plan = self._plan(step)
            yield step, plan
            if plan.changes:
                applied = self._applied
                self.facts = applied if applied is not None else assume_installed(self.facts, plan.changes)
            self._applied = None

    def _plan(self, step: Step) -> StepPlan:
        if not self.ctx.settings.enabled(step.key):
            return StepPlan(step.name, SKIPPED, (), "skipped by PROVISION_SKIP")
        try:
            changes = step.plan(self.facts, self.ctx)
        except StepSkipped as skipped:
            return StepPlan(step.name, SKIPPED, (), str(skipped))
        if changes:
            return StepPlan(step.name, WOULD_CHANGE, tuple(changes), "; ".join(c.description for c in changes))
        return StepPlan(step.name, OK, (), step.summary(self.facts, self.ctx))


def plan_host(facts: HostFacts, settings: ProvisionSettings) -> list[StepPlan]:
    """Every step's plan from one set of facts, without SSH: what a dry run shows (later steps see
    the host as it is now, not as earlier steps would leave it, but for the planned installs)."""
    check_supported(facts)
    return [plan for _, plan in StepLoop(facts, Context(settings))]
