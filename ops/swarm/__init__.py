"""Docker Swarm as on-call people see it: the nodes and services read on a manager (state), and
node maintenance (drain, activate). Forming the swarm is provisioning's (ops.provision.swarm);
deploying to it is ops.deploy's. Nothing here prints or exits.
"""

from ops.swarm.maintenance import DRAIN_TIMEOUT, MaintenanceResult, activate, drain, resolve_node, set_availability
from ops.swarm.state import (
    LocalVolume,
    NodeStatus,
    ServiceStatus,
    SwarmState,
    manager_host,
    parse_ipvs,
    parse_state,
    read_state,
    swarm_state,
)

__all__ = [
    "DRAIN_TIMEOUT",
    "LocalVolume",
    "MaintenanceResult",
    "NodeStatus",
    "ServiceStatus",
    "SwarmState",
    "activate",
    "drain",
    "manager_host",
    "parse_ipvs",
    "parse_state",
    "read_state",
    "resolve_node",
    "set_availability",
    "swarm_state",
]
