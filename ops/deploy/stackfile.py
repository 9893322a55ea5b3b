"""A release's compose file turned into a swarm stack file (what `docker stack deploy` runs).

Pure: takes the stack as `docker compose config` resolved it and the image each service runs
(pinned by digest), returns the stack file and the notes a user should read. Keys that stack deploy
would silently ignore are refused with one line naming the service and key, or dropped with a note
where nothing is lost. Never talks to a host.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import StackError
from ops.stack.compose import duration_seconds

STACK_FILE = "stack.opskit.json"  # JSON is YAML: `docker stack deploy -c` reads it as it is
SCHEMA_VERSION = "3.8"  # the compose-file schema every docker CLI since 19.03 validates stack files with
DEFAULT_MONITOR_S = 5.0  # Docker's own update monitor, for a service without a healthcheck

# Service keys a stack file carries as compose resolved them.
KEPT = frozenset(
    {
        "cap_add",
        "cap_drop",
        "command",
        "credential_spec",
        "dns",
        "dns_search",
        "entrypoint",
        "environment",
        "expose",
        "extra_hosts",
        "healthcheck",
        "hostname",
        "init",
        "isolation",
        "labels",
        "logging",
        "read_only",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "user",
        "working_dir",
    }
)
# Dropped: a swarm does their work another way, nothing the service runs with is lost.
DROPPED = {
    "build": "images come from the release, pinned by digest",
    "depends_on": "a swarm starts services in no order: each must wait for what it needs",
    "pull_policy": "every node pulls the release's images by digest before the update",
    "env_file": "compose already merged it into environment",
    "profiles": "compose already chose the services",
}
# Refused: stack deploy ignores them, and the service would run differently from what the file says.
REFUSED = {
    "container_name": "a swarm names its tasks itself; drop container_name",
    "network_mode": "swarm services join overlay networks; use networks",
    "links": "use the service name on a shared network",
    "external_links": "use the service name on a shared network",
    "devices": "not available to swarm services",
    "privileged": "not available to swarm services",
    "security_opt": "not available to swarm services",
    "pid": "not available to swarm services",
    "ipc": "not available to swarm services",
    "userns_mode": "not available to swarm services",
    "cgroup_parent": "not available to swarm services",
    "shm_size": "mount a tmpfs at /dev/shm instead",
    "mac_address": "not available to swarm services",
    "volumes_from": "share a named volume instead",
    "runtime": "not available to swarm services",
    "mem_limit": "use deploy.resources.limits.memory",
    "memswap_limit": "use deploy.resources.limits.memory",
    "mem_reservation": "use deploy.resources.reservations.memory",
    "cpus": "use deploy.resources.limits.cpus",
    "cpu_shares": "use deploy.resources.limits.cpus",
    "cpuset": "not available to swarm services",
    "oom_kill_disable": "not available to swarm services",
    "oom_score_adj": "not available to swarm services",
}
RESTART_CONDITIONS = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}


@dataclass(frozen=True)
class StackFile:
    """The stack file of one release, the files it names beside it, and what the conversion noted."""

    spec: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content (secrets from the .env)
    notes: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return json.dumps(self.spec, indent=2, sort_keys=True) + "\n"

    def services(self) -> list[str]:
        return sorted(self.spec["services"])


def refuse(service: str, key: str, why: str) -> StackError:
    return StackError(f"service {service}: {key} is not supported by docker stack deploy", hint=why)


def monitor_seconds(healthcheck: Mapping[str, Any] | None) -> float:
    """How long an update watches a new task: its health check's start period plus interval x retries
    (Docker's defaults: 30 s, 3), at least Docker's own 5 s."""
    if not healthcheck or healthcheck.get("disable") or healthcheck.get("test") == ["NONE"]:
        return DEFAULT_MONITOR_S
    interval = duration_seconds(str(healthcheck.get("interval") or "30s"))
    start = duration_seconds(str(healthcheck.get("start_period") or "0s"))
    retries = int(healthcheck.get("retries") or 3)
    return max(DEFAULT_MONITOR_S, start + interval * retries)


def seconds_text(seconds: float) -> str:
    return f"{seconds:g}s"


def restart_policy(service: str, restart: str) -> dict[str, Any]:
    condition, _, attempts = restart.partition(":")
    if condition not in RESTART_CONDITIONS:
        raise refuse(service, f"restart: {restart}", "use no, always, unless-stopped or on-failure[:N]")
    policy: dict[str, Any] = {"condition": RESTART_CONDITIONS[condition]}
    if attempts:
        policy["max_attempts"] = int(attempts)
    return policy


def _without_empty(data: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping without null values and empty mappings (compose config prints `placement: {}`)."""
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = _without_empty(value)
        if value is None or value == {}:
            continue
        kept[key] = value
    return kept


def _update_config(given: Mapping[str, Any] | None, monitor: float, exclusive: bool) -> dict[str, Any]:
    """start-first (stop-first for a service two tasks of which cannot run side by side: see
    _exclusive), rollback on failure, monitored long enough for a health check to fail; what the
    stack sets wins."""
    defaults = {
        "parallelism": 1,
        "order": "stop-first" if exclusive else "start-first",
        "failure_action": "rollback",
        "monitor": seconds_text(monitor),
    }
    return {**defaults, **dict(given or {})}


def _exclusive(ports: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> bool:
    """Two tasks of the service cannot overlap: a port published on the node itself (the second
    could not bind it), or a volume or bind mount (two writers of one database's files)."""
    return any(port["mode"] == "host" for port in ports) or any(v.get("type") in ("volume", "bind") for v in volumes)


def _deploy(name: str, spec: Mapping[str, Any], exclusive: bool) -> dict[str, Any]:
    deploy = _without_empty(spec.get("deploy") or {})
    resources = deploy.get("resources") or {}
    for section in ("limits", "reservations"):
        if isinstance(resources.get(section), Mapping) and "cpus" in resources[section]:
            # The 3.x schema wants cpus as a string; compose config prints a number.
            resources[section]["cpus"] = str(resources[section]["cpus"])
    if "scale" in spec and "replicas" not in deploy:
        deploy["replicas"] = int(spec["scale"])
    if "restart" in spec and "restart_policy" not in deploy:
        deploy["restart_policy"] = restart_policy(name, str(spec["restart"]))
    monitor = monitor_seconds(spec.get("healthcheck"))
    deploy["update_config"] = _update_config(deploy.get("update_config"), monitor, exclusive)
    rollback = {k: v for k, v in deploy["update_config"].items() if k in ("parallelism", "order", "monitor")}
    deploy["rollback_config"] = {**rollback, "failure_action": "pause", **dict(deploy.get("rollback_config") or {})}
    return deploy


def _ports(name: str, ports: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for port in ports:
        host_ip = str(port.get("host_ip") or "")
        if host_ip not in ("", "0.0.0.0", "::"):  # noqa: S104  # nosec B104 - the address we refuse
            raise refuse(
                name,
                f"ports: {host_ip}:{port.get('published')}",
                "a swarm publishes on every address of a node: drop the address, firewall the port",
            )
        published = str(port.get("published") or "")
        if published and not published.isdigit():
            raise refuse(name, f"ports: {published}", "publish one port per entry")
        entry: dict[str, Any] = {"target": int(port["target"]), "protocol": port.get("protocol") or "tcp"}
        if published:
            entry["published"] = int(published)
        entry["mode"] = port.get("mode") or "ingress"
        converted.append(entry)
    return converted


def _volumes(name: str, volumes: list[Mapping[str, Any]], stack_dir: Path) -> list[dict[str, Any]]:
    converted = []
    for volume in volumes:
        entry = _without_empty({k: v for k, v in volume.items() if k != "bind"})
        bind = {k: v for k, v in (volume.get("bind") or {}).items() if k == "propagation"}
        if bind:
            entry["bind"] = bind
        source = str(volume.get("source") or "")
        if volume.get("type") == "bind" and Path(source).is_relative_to(stack_dir):
            raise refuse(
                name,
                f"volumes: {Path(source).relative_to(stack_dir)}",
                "a file of the stack exists on no node: give it to the service as a config",
            )
        converted.append(entry)
    return converted


def _networks(networks: Mapping[str, Any] | list[str] | None) -> Any:
    if not networks:
        return None
    if isinstance(networks, list):
        return networks
    if all(not value or not value.get("aliases") for value in networks.values()):
        return sorted(networks)
    return {
        key: ({"aliases": value["aliases"]} if value and value.get("aliases") else None)
        for key, value in networks.items()
    }


def _service(name: str, spec: Mapping[str, Any], image: str, stack_dir: Path, notes: list[str]) -> dict[str, Any]:
    converted: dict[str, Any] = {"image": image}
    handled = {"image", "ports", "volumes", "networks", "deploy", "restart", "scale", "secrets", "configs"}
    for key, value in spec.items():
        if key in handled or value is None:
            continue
        if key in REFUSED:
            raise refuse(name, key, REFUSED[key])
        if key in DROPPED:
            if key == "depends_on":
                notes.append(f"service {name}: depends_on dropped ({DROPPED[key]})")
            continue
        if key not in KEPT and not key.startswith("x-"):
            raise refuse(name, key, "remove it, or run this stack with ORCHESTRATOR=compose")
        converted[key] = value
    ports = _ports(name, list(spec.get("ports") or []))
    if ports:
        converted["ports"] = ports
    volumes = _volumes(name, list(spec.get("volumes") or []), stack_dir)
    if volumes:
        converted["volumes"] = volumes
    networks = _networks(spec.get("networks"))
    if networks:
        converted["networks"] = networks
    for key in ("secrets", "configs"):
        if spec.get(key):
            converted[key] = [_without_empty(entry) if isinstance(entry, Mapping) else entry for entry in spec[key]]
    converted["deploy"] = _deploy(name, spec, _exclusive(ports, volumes))
    return converted


def _top_level(kind: str, project: str, entries: Mapping[str, Any]) -> dict[str, Any]:
    """Networks and volumes: compose's default names dropped (the stack's namespace gives the same)."""
    converted = {}
    for key, value in entries.items():
        entry = _without_empty(dict(value or {}))
        if entry.get("name") == f"{project}_{key}" and not entry.get("external"):
            del entry["name"]
        if kind == "networks" and entry.get("driver") == "bridge":
            raise StackError(f"network {key}: a swarm stack's networks are overlay", hint="drop driver: bridge")
        converted[key] = entry
    return converted


def _named_by_content(
    kind: str,
    project: str,
    entries: Mapping[str, Any],
    read: Callable[[str], bytes],
    env_values: Mapping[str, str],
    files: dict[str, bytes],
) -> dict[str, Any]:
    """Secrets and configs named after their content: a changed one is a new object, and the
    services using it roll (a swarm cannot update one in place)."""
    converted = {}
    for key, value in entries.items():
        entry = dict(value or {})
        if entry.get("external"):
            converted[key] = {"external": True, **({"name": entry["name"]} if entry.get("name") else {})}
            continue
        if "file" in entry:
            content, path = read(str(entry["file"])), str(entry["file"])
        elif "environment" in entry:
            variable = str(entry["environment"])
            if variable not in env_values:
                raise StackError(
                    f"{kind[:-1]} {key}: {variable} is not in the release's .env", hint="add it to SECRETS"
                )
            content, path = env_values[variable].encode(), f".opskit-{kind}/{key}"
            files[path] = content
        elif "content" in entry:
            content, path = str(entry["content"]).encode(), f".opskit-{kind}/{key}"
            files[path] = content
        else:
            raise StackError(f"{kind[:-1]} {key} has no file, environment or content", hint="give it one")
        digest = hashlib.sha256(content).hexdigest()[:12]
        converted[key] = {"file": path, "name": f"{project}_{key}_{digest}"}
    return converted


def stack_file(
    config: Mapping[str, Any],
    images: Mapping[str, str],
    *,
    project: str,
    stack_dir: Path,
    env_values: Mapping[str, str] | None = None,
) -> StackFile:
    """The stack file for `config` (compose config's JSON), each service running images[service].

    stack_dir: where the stack's files are on this machine (compose config prints absolute paths);
    env_values: the release's .env, for secrets and configs taken from an environment variable."""
    notes: list[str] = []
    files: dict[str, bytes] = {}
    compose_project = str(config.get("name") or project)

    def read(path: str) -> bytes:
        source = Path(path)
        if not source.is_relative_to(stack_dir) or not source.is_file():
            raise StackError(f"{path} is not a file of the stack", where=str(stack_dir), hint="keep it in the stack")
        return source.read_bytes()

    def relative(entries: dict[str, Any]) -> dict[str, Any]:
        for entry in entries.values():
            if "file" in entry and Path(entry["file"]).is_absolute():
                entry["file"] = f"./{Path(entry['file']).relative_to(stack_dir)}"
        return entries

    services = config.get("services") or {}
    missing = sorted(set(services) - set(images))
    if missing:
        raise StackError(f"no pinned image for service {missing[0]}", hint="deliver the release's images first")
    spec: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "services": {name: _service(name, services[name], images[name], stack_dir, notes) for name in sorted(services)},
    }
    for kind in ("networks", "volumes"):
        if config.get(kind):
            spec[kind] = _top_level(kind, compose_project, config[kind])
    for kind in ("secrets", "configs"):
        if config.get(kind):
            named = _named_by_content(kind, project, config[kind], read, env_values or {}, files)
            spec[kind] = relative(named)
    return StackFile(spec, files, tuple(notes))
