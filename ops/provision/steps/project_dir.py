"""The project directory (/opt/<project>, ProjectLayout's base) owned by the deploy user. Creates it
only: what deploys put inside is never touched here.
"""

from __future__ import annotations

from ops.host.layout import ProjectLayout
from ops.provision.facts import HostFacts
from ops.provision.step import Change, Context, Step, StepSkipped
from ops.transport.shell import q


class ProjectDirStep(Step):
    name, key = "project dir", "project-dir"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        s = ctx.settings
        if not s.project:
            raise StepSkipped("no PROJECT")
        if facts.project_dir == f"{s.deploy_user}:{s.deploy_user}:750":
            return []
        base = ProjectLayout(s.project).base
        return [
            Change(
                f"{base} owned by {s.deploy_user}",
                (f"install -d -m 0750 -o {q(s.deploy_user)} -g {q(s.deploy_user)} {q(base)}",),
            )
        ]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{ProjectLayout(ctx.settings.project).base} owned by {ctx.settings.deploy_user}"
