"""Provisioning: turn fresh Ubuntu/Debian servers into Docker hosts with a deploy user, idempotently.

Facts, plan, apply: one shell round trip reads a host's state (facts.py), each step in steps/ plans
the commands it needs (none when the host is already right; plan.py), and run.py applies them with
sudo. Everything is told through a Reporter; this package never prints, never exits and never
reads os.environ.
"""

from __future__ import annotations

from ops.provision.commands import write_file
from ops.provision.facts import SSHD_DROPIN, HostFacts, facts_script, parse_facts, read_facts
from ops.provision.plan import StepLoop, StepPlan, plan_host
from ops.provision.run import HostProvisionReport, ProvisionResult, connect, provision, provision_host
from ops.provision.settings import STEP_KEYS, ProvisionSettings, authorized_keys, public_key_of
from ops.provision.step import Change, Context, Step, StepSkipped
from ops.provision.steps import STEPS
from ops.provision.steps.docker import DOCKER_CE_PACKAGES, DOCKER_KEY_FINGERPRINT

__all__ = [
    "DOCKER_CE_PACKAGES",
    "DOCKER_KEY_FINGERPRINT",
    "SSHD_DROPIN",
    "STEPS",
    "STEP_KEYS",
    "Change",
    "Context",
    "HostFacts",
    "HostProvisionReport",
    "ProvisionResult",
    "ProvisionSettings",
    "Step",
    "StepLoop",
    "StepPlan",
    "StepSkipped",
    "authorized_keys",
    "connect",
    "facts_script",
    "parse_facts",
    "plan_host",
    "provision",
    "provision_host",
    "public_key_of",
    "read_facts",
    "write_file",
]
