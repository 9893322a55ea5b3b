"""The doctor's swarm checks (ORCHESTRATOR=swarm): nodes down, under-replicated services, paused or
rolled-back updates, manager quorum, local volumes without placement, IPVS. Each judges one
SwarmState read on a manager (ops.swarm); registered in SWARM_CHECKS. Never changes anything.
"""

from __future__ import annotations

from collections.abc import Callable

from ops.oncall.findings import Finding
from ops.swarm import SwarmState


def swarm_nodes(state: SwarmState) -> list[Finding]:
    down = [f"{n.hostname} {n.state.lower()}" for n in state.nodes if n.state.lower() != "ready"]
    held = [f"{n.hostname} {n.availability.lower()}" for n in state.nodes if n.availability.lower() != "active"]
    if down:
        return [
            Finding(
                "fail",
                f"{len(down)} of {len(state.nodes)} nodes not ready: {', '.join(down)}",
                "start the host or its dockerd; its tasks run elsewhere meanwhile (inv ops.status)",
            )
        ]
    if held:
        return [
            Finding(
                "warn",
                f"{len(state.nodes)} nodes ready, not taking tasks: {', '.join(held)}",
                "after maintenance: inv swarm.activate HOST",
            )
        ]
    return [Finding("pass", f"{len(state.nodes)} nodes ready and active")]


def swarm_managers(state: SwarmState) -> list[Finding]:
    managers = [n for n in state.nodes if n.manager]
    reachable = [n for n in managers if n.manager_status.lower() in ("leader", "reachable")]
    count = len(managers)
    if len(reachable) * 2 <= count:
        return [
            Finding(
                "fail",
                f"{len(reachable)} of {count} managers reachable: no quorum, the swarm cannot be changed",
                "bring managers back; as a last resort `docker swarm init --force-new-cluster` on one",
            )
        ]
    if count % 2 == 0:
        return [
            Finding(
                "warn",
                f"{count} managers: an even count tolerates no more losses than {count - 1}",
                "mark an odd number of hosts /manager (1, 3 or 5) and inv provision",
            )
        ]
    tolerates = (count - 1) // 2
    return [Finding("pass", f"{len(reachable)} of {count} managers reachable (survives losing {tolerates})")]


def swarm_replicas(state: SwarmState) -> list[Finding]:
    short = [s for s in state.services if s.running < s.desired]
    if not short:
        return [Finding("pass", f"{len(state.services)} services at their replicas")]
    return [
        Finding(
            "fail",
            f"{s.name} runs {s.running}/{s.desired}" + (f": {s.last_error}" if s.last_error else ""),
            f"docker service ps {s.name} --no-trunc (on a manager); inv ops.logs {s.name.split('_', 1)[-1]}",
        )
        for s in short
    ]


def swarm_updates(state: SwarmState) -> list[Finding]:
    found = []
    for s in state.services:
        message = f" ({s.update_message})" if s.update_message else ""
        if s.update_state in ("paused", "rollback_paused"):
            found.append(
                Finding(
                    "fail",
                    f"{s.name}: update {s.update_state.replace('_', ' ')}{message}",
                    "fix the cause, then deploy again or inv rollback",
                )
            )
        elif s.update_state == "rollback_completed":
            found.append(
                Finding("warn", f"{s.name}: its last update was rolled back{message}", "see the deploy's audit")
            )
        elif s.update_state in ("updating", "rollback_started"):
            found.append(Finding("warn", f"{s.name}: {s.update_state.replace('_', ' ')}{message}"))
    return found or [Finding("pass", "no update paused or rolled back")]


def swarm_volumes(state: SwarmState) -> list[Finding]:
    found = []
    for s in state.services:
        if s.local_volumes and not s.constraints and s.mode != "global":
            volumes = ", ".join(volume.source for volume in s.local_volumes)
            found.append(
                Finding(
                    "warn",
                    f"{s.name} keeps {volumes} in a local volume but may be placed on any node: "
                    "rescheduled, it starts empty",
                    "pin it: deploy.placement.constraints [node.labels.opskit.role.<role> == true]",
                )
            )
    return found or [Finding("pass", "every service with a local volume is pinned to its node")]


def ipvs(state: SwarmState) -> list[Finding]:
    if not state.ipvs:
        return [Finding("warn", "no node answered about IPVS")]
    missing = sorted(host for host, (available, _) in state.ipvs.items() if not available)
    if not missing:
        return [Finding("pass", f"IPVS on every node ({len(state.ipvs)}): ingress mesh and VIPs work")]
    said = next((line for host, (_, line) in sorted(state.ipvs.items()) if host in missing and line), "")
    evidence = f"; dockerd: {said[-120:]}" if said else ""
    return [
        Finding(
            "warn",
            f"no IPVS on {len(missing)} of {len(state.ipvs)} nodes ({', '.join(missing)}){evidence}: "
            "there the ingress routing mesh and services' virtual IPs do not answer",
            "publish ports with mode: host (a proxy per node, mode: global) and give internal services "
            "endpoint_mode: dnsrr; or load the kernel's ip_vs module (modprobe ip_vs)",
        )
    ]


SwarmCheck = Callable[[SwarmState], list[Finding]]

# In the order the doctor shows them, after the hosts' checks.
SWARM_CHECKS: tuple[tuple[str, SwarmCheck], ...] = (
    ("swarm-nodes", swarm_nodes),
    ("swarm-managers", swarm_managers),
    ("swarm-replicas", swarm_replicas),
    ("swarm-updates", swarm_updates),
    ("swarm-volumes", swarm_volumes),
    ("ipvs", ipvs),
)
