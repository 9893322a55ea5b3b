"""What a swarm looks like, read on one of its managers in one SSH round trip: its nodes, its
services (replicas, update state, last task error, local volumes, placement) and whether each
node has IPVS. Read-only: never changes a node or a service.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ops.config import Environment, HostSpec
from ops.errors import HostError, OpsError, SwarmError
from ops.transport import Host, Runner, SSHRunner
from ops.transport.shell import sections

STATE_SCRIPT = r"""
s() { printf '\n@@%s@@\n' "$1"; }
s swarm; docker info --format '{{json .Swarm}}' 2>&1
s nodes; docker node ls --format '{{json .}}' 2>/dev/null
ids=$(docker service ls -q 2>/dev/null)
s services; [ -n "$ids" ] && docker service ls --format '{{json .}}'
s inspect; [ -n "$ids" ] && docker service inspect $ids
s tasks; [ -n "$ids" ] && docker service ps --no-trunc --format '{{json .}}' $ids
s end
"""
# IPVS backs the ingress routing mesh and the services' virtual IPs. Loaded: /proc/net/ip_vs (dockerd
# loads it for the first VIP); else loadable: the kernel ships the module or has it built in. A
# lab host (a container on a kernel without it) has neither; dockerd then logs "Could not get
# ipvs family information".
IPVS_SCRIPT = r"""
m=/lib/modules/$(uname -r)
if [ -e /proc/net/ip_vs ] || [ -d /sys/module/ip_vs ]; then echo ipvs=yes
elif grep -qs '/ip_vs\.ko' "$m/modules.dep" "$m/modules.builtin"; then echo ipvs=yes
else echo ipvs=no; fi
{ tail -n 5000 /var/log/dockerd.log 2>/dev/null; journalctl -u docker --no-pager -n 5000 2>/dev/null; } \
  | grep -m1 -i 'ipvs' | sed 's/^/ipvs_log=/'
"""


@dataclass(frozen=True)
class NodeStatus:
    """One node as `docker node ls` shows it."""

    id: str
    hostname: str
    state: str  # Ready, Down, Unknown, Disconnected
    availability: str  # Active, Pause, Drain
    manager_status: str  # Leader, Reachable, Unreachable, "" for a worker
    engine: str

    @property
    def manager(self) -> bool:
        return bool(self.manager_status)


@dataclass(frozen=True)
class LocalVolume:
    """A volume a service mounts with the local driver: it exists separately on every node."""

    source: str
    target: str


@dataclass(frozen=True)
class ServiceStatus:
    """One service: replicas running/desired, its update state and the last task error."""

    name: str
    mode: str  # replicated, global, ...
    image: str
    running: int
    desired: int
    update_state: str = ""  # updating, paused, completed, rollback_started, rollback_paused, rollback_completed
    update_message: str = ""
    last_error: str = ""  # the newest task error, with the node it ran on
    local_volumes: tuple[LocalVolume, ...] = ()
    constraints: tuple[str, ...] = ()


@dataclass(frozen=True)
class SwarmState:
    """A swarm as one manager sees it, and IPVS on each node that could be asked."""

    manager: str  # the host (as HOSTS names it) that answered
    nodes: tuple[NodeStatus, ...] = ()
    services: tuple[ServiceStatus, ...] = ()
    ipvs: dict[str, tuple[bool, str]] = field(default_factory=dict)  # host -> (available, dockerd's line)

    def node(self, name: str) -> NodeStatus | None:
        return next((node for node in self.nodes if name in (node.hostname, node.id)), None)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _json_lines(text: str) -> list[dict[str, object]]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _local_volumes(spec: dict[str, object]) -> tuple[LocalVolume, ...]:
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {} if isinstance(template, dict) else {}
    mounts = container.get("Mounts") or [] if isinstance(container, dict) else []
    found = []
    for mount in mounts:
        if mount.get("Type") != "volume":
            continue
        driver = ((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name") or "local"
        if driver == "local":
            found.append(LocalVolume(str(mount.get("Source") or "(anonymous)"), str(mount.get("Target") or "")))
    return tuple(found)


def parse_state(manager: str, text: str) -> SwarmState:
    """SwarmState from STATE_SCRIPT's output (also how unit tests build one)."""
    answers = {name: body.strip() for name, body in sections(text).items()}
    nodes = tuple(
        NodeStatus(
            id=str(row.get("ID", "")),
            hostname=str(row.get("Hostname", "")),
            state=str(row.get("Status", "")),
            availability=str(row.get("Availability", "")),
            manager_status=str(row.get("ManagerStatus", "")),
            engine=str(row.get("EngineVersion", "")),
        )
        for row in _json_lines(answers.get("nodes", ""))
    )
    try:
        inspected = json.loads(answers.get("inspect") or "[]")
    except ValueError:
        inspected = []
    by_name = {str(item["Spec"]["Name"]): item for item in inspected if isinstance(item, dict) and "Spec" in item}
    errors: dict[str, str] = {}
    for task in _json_lines(answers.get("tasks", "")):
        service = str(task.get("Name", "")).rsplit(".", 1)[0].lstrip("\\_ ")
        error = str(task.get("Error") or "").strip().strip('"')
        if error and service not in errors:  # tasks come newest first within each slot
            errors[service] = f"{error} (on {task.get('Node') or '?'}, {str(task.get('CurrentState', '')).lower()})"
    services = []
    for row in _json_lines(answers.get("services", "")):
        name = str(row.get("Name", ""))
        match = re.match(r"(\d+)/(\d+)", str(row.get("Replicas", "")))
        item = by_name.get(name, {})
        spec = item.get("Spec") or {}
        update = item.get("UpdateStatus") or {}
        placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
        services.append(
            ServiceStatus(
                name=name,
                mode=str(row.get("Mode", "")),
                image=str(row.get("Image", "")),
                running=int(match.group(1)) if match else 0,
                desired=int(match.group(2)) if match else 0,
                update_state=str(update.get("State") or ""),
                update_message=str(update.get("Message") or ""),
                last_error=errors.get(name, ""),
                local_volumes=_local_volumes(spec),
                constraints=tuple(str(c) for c in placement.get("Constraints") or ()),
            )
        )
    return SwarmState(manager, nodes, tuple(sorted(services, key=lambda s: s.name)))


def parse_ipvs(text: str) -> tuple[bool, str]:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return values.get("ipvs") == "yes", values.get("ipvs_log", "").strip()


RunnerFactory = Callable[[HostSpec], Runner]


def node_host(env: Environment, spec: HostSpec, runner_factory: RunnerFactory | None = None) -> Host:
    """A host of the swarm, logged in as the deploy user (in the docker group); runner_factory: how
    to reach it (default SSH; unit tests pass fakes)."""
    login = spec.as_user(env.deploy_user)
    runner = runner_factory(login) if runner_factory else SSHRunner.for_environment(login, env)
    return Host(login, runner)


@contextmanager
def manager_host(env: Environment, runner_factory: RunnerFactory | None = None) -> Iterator[Host]:
    """A connection to the first manager (HOSTS order) that answers as a swarm manager."""
    if not env.orchestrator.swarm:
        raise SwarmError(
            f"environment {env.name} is not a swarm (ORCHESTRATOR={env.orchestrator.orchestrator})",
            where=str(env.file),
            hint="set ORCHESTRATOR=swarm and run inv provision." + env.name,
        )
    reasons = []
    for spec in (spec for spec in env.hosts if spec.manager):
        host = node_host(env, spec, runner_factory)
        try:
            answer = host.run("docker info --format '{{.Swarm.ControlAvailable}}'", check=False, timeout=30)
        except OpsError as error:
            host.close()
            reasons.append(f"{spec.name}: {error.message}")
            continue
        if answer.stdout.strip() == "true":
            try:
                yield host
            finally:
                host.close()
            return
        host.close()
        reasons.append(f"{spec.name}: not a swarm manager")
    raise SwarmError(
        "no manager of the swarm answers (" + "; ".join(reasons) + ")",
        hint=f"inv provision.{env.name} forms the swarm; check the managers are up",
    )


def read_state(host: Host) -> SwarmState:
    """The swarm as the manager host sees it (nodes, services), without IPVS."""
    output = host.run(STATE_SCRIPT, timeout=60).stdout
    if "@@end@@" not in output:
        raise HostError("reading the swarm gave no complete answer", where=host.name)
    return parse_state(host.name, output)


def read_ipvs(
    env: Environment, specs: Sequence[HostSpec], runner_factory: RunnerFactory | None = None
) -> dict[str, tuple[bool, str]]:
    """IPVS on each node that answers: (available, dockerd's line about it)."""
    found = {}
    for spec in specs:
        host = node_host(env, spec, runner_factory)
        try:
            found[spec.name] = parse_ipvs(host.run(IPVS_SCRIPT, check=False, timeout=30).stdout)
        except OpsError:
            continue  # an unreachable node is the nodes check's finding, not this one's
        finally:
            host.close()
    return found


def swarm_state(env: Environment, *, ipvs: bool = False, runner_factory: RunnerFactory | None = None) -> SwarmState:
    """The environment's swarm read on a manager; with ipvs, each node's IPVS too."""
    with manager_host(env, runner_factory) as host:
        state = read_state(host)
    if ipvs:
        found = read_ipvs(env, env.hosts, runner_factory)
        state = SwarmState(state.manager, state.nodes, state.services, found)
    return state
