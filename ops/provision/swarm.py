"""Swarm formation (ORCHESTRATOR=swarm): after every host's own steps, the hosts become one swarm.

Facts from each node (its swarm state, its advertise address, its ufw rules), then one plan for the
fleet, applied in order: swarm ports opened in ufw only from the other nodes' addresses, `docker
swarm init` on the first manager, the others joined with tokens read over SSH (never printed, never
on a command line here), roles promoted or demoted, roles as node labels. A formation needs every
node's address and the manager before the workers, which one host's step loop cannot see: hence a
fleet phase after the loops rather than a step in them. Nothing here prints.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ops.config import HostSpec
from ops.errors import HostError
from ops.host.labels import NODE_HOST_LABEL
from ops.transport import Host
from ops.transport.shell import q, sections

SWARM_PORTS = (("2377", "tcp"), ("7946", "tcp"), ("7946", "udp"), ("4789", "udp"))
UFW_COMMENT = "opskit swarm"
ROLE_LABEL = "opskit.role."
# A documentation address (RFC 5737) no host routes specially: `ip route get` to it names the
# source address of the default route, without sending anything.
DEFAULT_ROUTE_PROBE = "192.0.2.1"


@dataclass(frozen=True)
class MemberNode:
    """A node of the swarm as a manager lists it."""

    role: str  # manager, worker
    hostname: str
    state: str = "ready"  # ready, down, unknown, disconnected
    roles: frozenset[str] = frozenset()  # our role labels on it
    host: str = ""  # its opskit.host label: the host as HOSTS named it when it was provisioned


@dataclass(frozen=True)
class NodeFacts:
    """One host as the swarm sees it: read by node_facts_script, parsed by parse_node_facts."""

    host: str  # as HOSTS names it
    address: str  # the address it advertises (given, or its route to the others)
    state: str = "inactive"  # docker info's LocalNodeState: inactive, pending, active, error, locked
    node_id: str = ""
    manager: bool = False  # ControlAvailable: a manager of its swarm
    cluster_id: str = ""
    ufw_from: frozenset[tuple[str, str, str]] = frozenset()  # (port, proto, source) ufw lets in
    ufw_stale: frozenset[tuple[str, str, str]] = frozenset()  # our swarm rules from other sources
    nodes: Mapping[str, MemberNode] = field(default_factory=dict)  # on a manager: its swarm's, by node ID
    error: str = ""  # docker info's error for the swarm (state error)


def node_facts_script(peers: Sequence[str]) -> str:
    """Read a node's swarm state, its routes to the peers' addresses and its ufw rules; changes nothing."""
    targets = " ".join(q(peer) for peer in peers)
    return f"""
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; LC_ALL=C; export LC_ALL
s() {{ printf '\\n@@%s@@\\n' "$1"; }}
s swarm; command -v docker >/dev/null && timeout 20 docker info --format '{{{{json .Swarm}}}}' 2>/dev/null
s nodes; if command -v docker >/dev/null && [ "$(docker info --format '{{{{.Swarm.ControlAvailable}}}}' 2>/dev/null)" = true ]; then
  docker node ls -q | xargs -r docker node inspect --format '{{{{.ID}}}} {{{{.Spec.Role}}}} {{{{.Status.State}}}} {{{{.Description.Hostname}}}} {{{{json .Spec.Labels}}}}'; fi
s routes; for p in {targets}; do a=$(getent ahostsv4 "$p" 2>/dev/null | awk 'NR==1{{print $1}}'); [ -n "$a" ] && ip -o route get "$a" 2>/dev/null | head -1; done
s default-route; ip -o route get {DEFAULT_ROUTE_PROBE} 2>/dev/null | head -1
s ufw-rules; cat /etc/ufw/user.rules 2>/dev/null
s end
"""


def _route_source(line: str) -> str:
    """The `src` of an `ip -o route get` line when it is not a loopback address, else ""."""
    match = re.search(r"\bsrc (\S+)", line)
    if not match:
        return ""
    try:
        return "" if ipaddress.ip_address(match.group(1)).is_loopback else match.group(1)
    except ValueError:
        return ""


def _ufw_rules(text: str) -> tuple[frozenset[tuple[str, str, str]], frozenset[tuple[str, str, str]]]:
    """(port, proto, source) of every allow-in rule, and those of ours (the swarm comment)."""
    ours_hex = UFW_COMMENT.encode().hex()
    rules, ours = set(), set()
    for line in text.splitlines():
        parts = line.split()
        # ### tuple ### allow udp 4789 0.0.0.0/0 any 10.0.0.2 in comment=6f70...
        if line.startswith("### tuple ###") and len(parts) >= 10 and parts[3] == "allow" and parts[9] == "in":
            rule = (parts[5], parts[4], parts[8])
            rules.add(rule)
            if f"comment={ours_hex}" in parts[10:]:
                ours.add(rule)
    return frozenset(rules), frozenset(ours)


def parse_node_facts(host: str, text: str, given_address: str = "") -> NodeFacts:
    """NodeFacts from node_facts_script's output (also how unit tests build them)."""
    answers = {name: body.strip() for name, body in sections(text).items()}
    try:
        swarm = json.loads(answers.get("swarm") or "{}")
    except ValueError:
        swarm = {}
    address = given_address
    for line in [*answers.get("routes", "").splitlines(), answers.get("default-route", "")]:
        address = address or _route_source(line)
    nodes = {}
    for line in answers.get("nodes", "").splitlines():
        parts = line.split(" ", 4)
        if len(parts) == 5:
            labels = json.loads(parts[4] or "null") or {}
            ours = frozenset(
                k[len(ROLE_LABEL) :] for k, v in labels.items() if k.startswith(ROLE_LABEL) and v == "true"
            )
            nodes[parts[0]] = MemberNode(parts[1], parts[3], parts[2], ours, str(labels.get(NODE_HOST_LABEL, "")))
    rules, ours = _ufw_rules(answers.get("ufw-rules", ""))
    return NodeFacts(
        host=host,
        address=address,
        state=str(swarm.get("LocalNodeState") or "inactive"),
        node_id=str(swarm.get("NodeID") or ""),
        manager=bool(swarm.get("ControlAvailable")),
        cluster_id=str((swarm.get("Cluster") or {}).get("ID") or ""),
        ufw_from=rules,
        ufw_stale=ours,
        nodes=nodes,
        error=str(swarm.get("Error") or ""),
    )


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class FormationChange:
    """One change of the formation on one host: what a person reads, and how it is done."""

    host: str
    description: str
    kind: str  # ufw, init, join, promote, demote, labels, remove
    commands: tuple[str, ...] = ()  # ufw: run on host
    labels_add: tuple[str, ...] = ()
    labels_remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormationPlan:
    """The fleet's plan: the leader (the manager that inits or already leads) and every change."""

    leader: str
    changes: tuple[FormationChange, ...]

    def for_host(self, host: str) -> list[FormationChange]:
        return [change for change in self.changes if change.host == host]


def _ufw_changes(node: NodeFacts, peers: Sequence[str]) -> list[FormationChange]:
    changes = []
    for peer in peers:
        for port, proto in SWARM_PORTS:
            if (port, proto, peer) not in node.ufw_from:
                command = f"ufw allow proto {proto} from {q(peer)} to any port {port} comment {q(UFW_COMMENT)}"
                changes.append(FormationChange(node.host, f"ufw allow {port}/{proto} from {peer}", "ufw", (command,)))
    for port, proto, source in sorted(node.ufw_stale):
        if source not in peers:
            command = f"ufw delete allow proto {proto} from {q(source)} to any port {port}"
            changes.append(
                FormationChange(node.host, f"ufw drop {port}/{proto} from {source} (not a node)", "ufw", (command,))
            )
    return changes


def plan_formation(
    specs: Sequence[HostSpec], facts: Mapping[str, NodeFacts], *, firewall: bool = True
) -> FormationPlan:
    """What it takes to make specs one swarm, from every node's facts; empty when they are one."""
    managers = [spec for spec in specs if spec.manager]
    if not managers:
        raise HostError("no host has the manager role", hint="mark one host /manager in HOSTS")
    leading = [spec for spec in managers if facts[spec.name].state == "active" and facts[spec.name].manager]
    leader = (leading or managers)[0]
    lead = facts[leader.name]
    changes: list[FormationChange] = []
    for spec in specs:
        node = facts[spec.name]
        if not node.address:
            raise HostError(
                "no address to advertise to the other nodes",
                where=spec.name,
                hint=f"set SWARM_ADVERTISE_ADDR={spec.name}=IP in the env file",
            )
        if firewall:
            changes += _ufw_changes(node, [facts[other.name].address for other in specs if other != spec])
    if lead.state != "active":
        changes.append(FormationChange(leader.name, f"docker swarm init (advertise {lead.address})", "init"))
    for spec in specs:
        node = facts[spec.name]
        if spec == leader:
            continue
        role = "manager" if spec.manager else "worker"
        member = lead.state == "active" and node.node_id in lead.nodes
        if node.state in ("active", "locked") and not member:
            raise HostError(
                f"already in another swarm (node {node.node_id[:12]}), not {leader.name}'s",
                where=spec.name,
                hint="on that host run `docker swarm leave --force`, or take it out of HOSTS",
            )
        if not member:
            changes.append(FormationChange(spec.name, f"join as {role} via {lead.address}:2377", "join"))
        elif lead.nodes[node.node_id].role != role:
            verb = "promote" if spec.manager else "demote"
            changes.append(FormationChange(spec.name, f"{verb} to {role}", verb))
    for spec in specs:
        node = facts[spec.name]
        listed = lead.nodes.get(node.node_id, MemberNode("", "")) if lead.state == "active" else MemberNode("", "")
        have = listed.roles
        add = tuple(f"{ROLE_LABEL}{role}=true" for role in spec.roles if role not in have)
        add += (f"{NODE_HOST_LABEL}={spec.name}",) if listed.host != spec.name else ()
        remove = tuple(f"{ROLE_LABEL}{role}" for role in sorted(have - set(spec.roles)))
        if add or remove:
            shown = ", ".join([*add, *(f"-{label}" for label in remove)])
            changes.append(FormationChange(spec.name, f"node labels {shown}", "labels", (), add, remove))
    changes += _departed(specs, facts, leader.name) if lead.state == "active" else []
    return FormationPlan(leader.name, tuple(changes))


def _departed(specs: Sequence[HostSpec], facts: Mapping[str, NodeFacts], leader: str) -> list[FormationChange]:
    """Removals of down workers that are no longer any host's node (by the host label provisioning
    gave them): a decommissioned server's, or the old node of a host that joined again as a new
    one, which would stay down in the swarm for ever. A node still up, a manager, or a node
    without the label is left alone."""
    names = {spec.name for spec in specs}
    ours = {facts[spec.name].node_id for spec in specs}
    changes = []
    for node_id, node in sorted(facts[leader].nodes.items()):
        if not node.host or node_id in ours or node.role != "worker" or node.state != "down":
            continue
        why = "joined again as another node" if node.host in names else "is no longer in HOSTS"
        description = f"remove node {node.hostname} (its host {node.host} {why}; the node is down)"
        changes.append(FormationChange(leader, description, "remove", (f"docker node rm {q(node_id)}",)))
    return changes


# ---------------------------------------------------------------- apply


def join_token(leader: Host, role: str) -> str:
    """The swarm's join token for role, read on the leader; only ever passed on stdin."""
    result = leader.sudo(f"docker swarm join-token -q {role}", timeout=30)
    token = result.stdout.strip()
    if not token.startswith("SWMTKN-"):
        raise HostError("the manager gave no join token", where=leader.name, hint="is it a swarm manager?")
    return token


def node_id(host: Host) -> str:
    return host.sudo("docker info --format '{{.Swarm.NodeID}}'", timeout=30).stdout.strip()


def apply_change(
    change: FormationChange, hosts: Mapping[str, Host], plan: FormationPlan, facts: Mapping[str, NodeFacts]
) -> None:
    """Run one change; the order of plan.changes (ufw, init, joins, roles, labels, removals) is the order needed."""
    host, leader = hosts[change.host], hosts[plan.leader]
    address = facts[change.host].address
    if change.kind == "ufw":
        for command in change.commands:
            host.sudo(command, timeout=60)
    elif change.kind == "init":
        host.sudo(f"docker swarm init --advertise-addr {q(address)}", timeout=120)
    elif change.kind == "join":
        role = "manager" if host.spec.manager else "worker"
        token = join_token(leader, role)
        # The token travels on stdin: never in a command line, an error message or a log here.
        remote = f"{facts[plan.leader].address}:2377"
        host.sudo(
            f'read -r token; docker swarm join --advertise-addr {q(address)} --token "$token" {q(remote)}',
            timeout=120,
            stdin=token + "\n",
        )
    elif change.kind in ("promote", "demote"):
        leader.sudo(f"docker node {change.kind} {q(node_id(host))}", timeout=60)
    elif change.kind == "remove":
        for command in change.commands:
            leader.sudo(command, timeout=60)
    elif change.kind == "labels":
        flags = [f"--label-add {q(label)}" for label in change.labels_add]
        flags += [f"--label-rm {q(label)}" for label in change.labels_remove]
        leader.sudo(f"docker node update {' '.join(flags)} {q(node_id(host))}", timeout=60)


def read_node_facts(host: Host, specs: Sequence[HostSpec], given: Callable[[str], str]) -> NodeFacts:
    """NodeFacts of host over its SSH connection (as root); given: SWARM_ADVERTISE_ADDR per host."""
    peers = [spec.address for spec in specs if spec.name != host.name]
    result = host.sudo(node_facts_script(peers), timeout=60)
    if "@@end@@" not in result.stdout:
        raise HostError("reading swarm facts gave no complete answer", where=host.name)
    return parse_node_facts(host.name, result.stdout, given(host.name))
