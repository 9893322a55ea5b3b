"""The provisioning steps in the order they run: adding a step is one module here and one line in
STEPS. Each step plans from facts and applies its own changes; none calls another step.
"""

from __future__ import annotations

from ops.provision.step import Step
from ops.provision.steps.apt import AptCacheStep, PackagesStep
from ops.provision.steps.deploy_user import DeployUserStep
from ops.provision.steps.docker import DaemonJsonStep, DockerEngineStep, DockerPackagesStep
from ops.provision.steps.fail2ban import Fail2banStep
from ops.provision.steps.firewall import FirewallStep
from ops.provision.steps.os import OsStep
from ops.provision.steps.project_dir import ProjectDirStep
from ops.provision.steps.registry_ca import RegistryCaStep
from ops.provision.steps.ssh import SshHardeningStep
from ops.provision.steps.swap import SwapStep
from ops.provision.steps.sysctl import SysctlStep
from ops.provision.steps.time_sync import TimeSyncStep
from ops.provision.steps.unattended_upgrades import UnattendedUpgradesStep

STEPS: tuple[Step, ...] = (
    OsStep(),
    AptCacheStep(),
    PackagesStep(),
    DockerPackagesStep(),
    DaemonJsonStep(),
    DockerEngineStep(),
    RegistryCaStep(),  # after the engine: its certs.d directory trusts the team registry
    DeployUserStep(),
    FirewallStep(),
    UnattendedUpgradesStep(),
    Fail2banStep(),
    TimeSyncStep(),
    SwapStep(),
    SysctlStep(),
    ProjectDirStep(),
    SshHardeningStep(),  # last: it closes root login once everything else is in place
)

__all__ = ["STEPS"]
