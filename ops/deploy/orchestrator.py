"""What deploy and rollback ask of an orchestrator: per host (compose: every host runs its own copy)
or of the whole cluster at once (swarm: pulled on every node, deployed once through a manager), and
the per-host report either answers with. Nothing here knows how an orchestrator works or touches a
host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ops.deploy.health import ServiceHealth
from ops.deploy.prepare import Prepared
from ops.deploy.releases import Release
from ops.transport import Host

SUCCEEDED = ("deployed", "unchanged", "planned")  # a host's results that leave it as asked


@dataclass
class HostDeployReport:
    """What happened on one host."""

    host: str
    result: str  # deployed | unchanged | rolled-back | failed | skipped | planned
    release: str = ""
    previous: str = ""
    seconds: float = 0.0
    error: str = ""
    failing: ServiceHealth | None = None
    images_sent: int = 0

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "failing"}
        if self.failing:
            data["failing_service"] = self.failing.service
            data["failing_container"] = self.failing.container
            data["state"] = self.failing.state
            data["exit_code"] = self.failing.exit_code
            data["oom_killed"] = self.failing.oom_killed
            data["health_output"] = self.failing.health_output
            data["logs"] = self.failing.logs
        return data


class Orchestrator(Protocol):
    """Runs releases on one host. Every method works on that host alone; the rollout runs them
    over the fleet under the deploy lock and records the audit."""

    def deploy_host(self, host: Host, prepared: Prepared) -> HostDeployReport:
        """Make the prepared release the host's current one (or converge it, when it already is),
        gated on health; a release that fails is undone before the report says so."""
        ...

    def plan_host(self, host: Host, prepared: Prepared) -> HostDeployReport:
        """What deploy_host would do (dry run): reads the host, changes nothing."""
        ...

    def rollback_host(self, host: Host, to: str | None) -> HostDeployReport:
        """Go back to the release before the current one, or the one `to` names."""
        ...

    def current(self, host: Host) -> Release | None:
        """The host's current release, or None before the first deploy."""
        ...


@runtime_checkable
class ClusterOrchestrator(Protocol):
    """Runs releases on all hosts as one cluster. The rollout holds every host's deploy lock and
    records one audit line per report; batches do not apply (the cluster's update settings do)."""

    def deploy_cluster(self, hosts: list[Host], prepared: Prepared) -> list[HostDeployReport]:
        """Make the prepared release the cluster's current one, gated on health; a release that
        fails puts the whole cluster back on its previous release before the reports say so."""
        ...

    def plan_cluster(self, hosts: list[Host], prepared: Prepared) -> list[HostDeployReport]:
        """What deploy_cluster would do (dry run): reads the hosts, changes nothing."""
        ...

    def rollback_cluster(self, hosts: list[Host], to: str | None) -> list[HostDeployReport]:
        """Go back to the release before the current one, or the one `to` names."""
        ...

    def current(self, host: Host) -> Release | None:
        """The current release as this host records it (None where it records none)."""
        ...

    def answering(self, hosts: list[Host]) -> list[Host]:
        """The hosts a deploy or rollback works on (and locks): all, or those left when a host that
        does not answer may be left out; OpsError when it may not."""
        ...
