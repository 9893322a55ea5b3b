"""Transport: runners (SSH or fake), hosts, fleets, pinned host keys and Docker clients.

Everything here moves commands, bytes and API calls; nothing here knows what a release or a
backup is.
"""

from ops.transport.fleet import Fleet, FleetResult, HostOutcome
from ops.transport.host import Host
from ops.transport.openssh import openssh_argv
from ops.transport.runner import CommandResult, Runner, SSHRunner, trust_hint

__all__ = [
    "CommandResult",
    "Fleet",
    "FleetResult",
    "Host",
    "HostOutcome",
    "Runner",
    "SSHRunner",
    "openssh_argv",
    "trust_hint",
]
