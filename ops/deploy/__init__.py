"""Deploy: a stack as numbered releases on every host (compose) or once to a swarm, gated on
health, under the deploy lock; rollback to any kept release, and the blue-green swap of one service.

    from ops.deploy import DeployOptions, deploy
"""

from ops.deploy.actions import ORCHESTRATORS, DeployOptions, deploy, rollback
from ops.deploy.compose import ComposeOrchestrator
from ops.deploy.orchestrator import SUCCEEDED, ClusterOrchestrator, HostDeployReport, Orchestrator
from ops.deploy.prepare import Prepared, prepare
from ops.deploy.releases import Release, ReleaseStore
from ops.deploy.rollout import DeployResult
from ops.deploy.swap import swap
from ops.deploy.swarm import SwarmOrchestrator

__all__ = [
    "ORCHESTRATORS",
    "SUCCEEDED",
    "ClusterOrchestrator",
    "ComposeOrchestrator",
    "DeployOptions",
    "DeployResult",
    "HostDeployReport",
    "Orchestrator",
    "Prepared",
    "Release",
    "ReleaseStore",
    "SwarmOrchestrator",
    "deploy",
    "prepare",
    "rollback",
    "swap",
]
