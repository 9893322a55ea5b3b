"""Deploy: a stack as numbered releases on every host, gated on health, under the deploy lock;
rollback to any kept release, and the blue-green swap of one service.

    from ops.deploy import DeployOptions, deploy
"""

from ops.deploy.compose import DeployOptions, DeployResult, deploy, rollback, swap
from ops.deploy.releases import Release, ReleaseStore

__all__ = ["DeployOptions", "DeployResult", "Release", "ReleaseStore", "deploy", "rollback", "swap"]
