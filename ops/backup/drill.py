"""The restore drill: a snapshot restored into a throwaway copy of the stack on one host, the copy
health-gated and each volume's recipe check run against it, the result kept in the snapshot's
drill.json. The copy is its own compose project (no published ports, no container names, its own
volumes and networks) and is removed whatever happens: the running stack is never touched."""

from __future__ import annotations

import copy as deepcopy
import json
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ops.backup.age import age_identity
from ops.backup.catalogue import find_snapshot, target_dir, write_drill
from ops.backup.facts import read_volume_facts
from ops.backup.model import ArchiveRecord, DrilledVolume, DrillResult, Snapshot
from ops.backup.recipes import recipe_named
from ops.backup.restore import RestoreTarget, restore_selection, restore_volume
from ops.backup.stores import ArchiveStore, snapshot_store
from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, Reporter
from ops.deploy.health import wait_healthy
from ops.deploy.releases import ReleaseStore
from ops.errors import BackupError, HealthGateError, OpsError
from ops.host.labels import PROJECT_LABEL
from ops.host.layout import ProjectLayout
from ops.stack.compose import duration_seconds
from ops.transport import Fleet, Host
from ops.transport.shell import last_line

COPY_FILE = "compose.json"
# A service's network attachment keeps its aliases; fixed addresses belong to the stack's networks.
FIXED_ADDRESSES = ("ipv4_address", "ipv6_address", "link_local_ips", "mac_address")


def drill_project(project: str, snapshot_id: str) -> str:
    """The copy's compose project, `<project>-drill-<snapshot id>` in compose's alphabet. The same
    for every drill of a snapshot, so that a drill first removes what a killed one left behind."""
    return f"{project}-drill-{re.sub(r'[^a-z0-9]', '', snapshot_id.lower())}"


@dataclass(frozen=True)
class CopyPlan:
    """A throwaway copy of the stack on a host, as compose will run it."""

    project: str  # the copy's compose project
    config: dict[str, Any]  # the copy's compose file (JSON is YAML)
    volumes: dict[str, str]  # compose volume name -> the copy's own engine volume
    services: tuple[str, ...]
    volume_services: tuple[str, ...]  # those that mount a drilled volume: up first, so dumps load
    timeout: float  # the health gate's patience (HEALTH_TIMEOUT, or longer for a start_period)

    @property
    def compose_file(self) -> str:
        return json.dumps(self.config, indent=2, sort_keys=True) + "\n"


def plan_copy(
    config: Mapping[str, Any], project: str, snapshot_id: str, volumes: Sequence[str], health_timeout: float
) -> CopyPlan:
    """The copy of a stack from its rendered config (`docker compose config --format json` of the
    current release): its own project name; no published ports, container names or fixed
    addresses; bind mounts read-only; every volume and network its own, with nothing kept that could
    name the stack's (name, external, driver options, ipam). volumes: the compose names to restore."""
    name = drill_project(project, snapshot_id)
    plan: dict[str, Any] = deepcopy.deepcopy(dict(config))
    plan["name"] = name
    services: dict[str, Any] = plan.get("services") or {}
    if not services:
        raise BackupError("the current release's compose config has no services")
    longest = 0.0
    for service, spec in services.items():
        spec.pop("ports", None)
        spec.pop("container_name", None)
        if spec.get("network_mode") == "host" or spec.get("pid") == "host":
            raise BackupError(
                f"service {service} shares the host's network or processes: a copy of it is not throwaway",
                hint="a drill needs every service on its own networks",
            )
        for mount in spec.get("volumes") or []:
            if mount.get("type") == "bind":
                mount["read_only"] = True  # the copy must never write into the stack's files
        networks = spec.get("networks")
        if isinstance(networks, dict):
            for attachment in networks.values():
                for key in FIXED_ADDRESSES:
                    (attachment or {}).pop(key, None)
        spec.pop("mac_address", None)
        health = spec.get("healthcheck") or {}
        longest = max(longest, duration_seconds(str(health.get("start_period", "0s"))))
    own = {key: f"{name}_{key}" for key in plan.get("volumes") or {}}
    plan["volumes"] = {key: {"name": engine} for key, engine in own.items()}
    plan["networks"] = {
        key: {"name": f"{name}_{key}", **({"internal": True} if (spec or {}).get("internal") else {})}
        for key, spec in (plan.get("networks") or {}).items()
    }
    missing = sorted(set(volumes) - set(own))
    if missing:
        raise BackupError(
            f"volume {', '.join(missing)} of the snapshot is not in the current release's compose files",
            hint="drill a snapshot taken with the release that runs now",
        )
    users = sorted(
        service
        for service, spec in services.items()
        if any(m.get("type") == "volume" and m.get("source") in volumes for m in spec.get("volumes") or [])
    )
    return CopyPlan(
        project=name,
        config=plan,
        volumes={key: own[key] for key in volumes},
        services=tuple(sorted(services)),
        volume_services=tuple(users),
        timeout=max(health_timeout, longest + 30),
    )


class StackCopy:
    """The copy on its host: written, run and removed through its own compose project only."""

    def __init__(self, host: Host, plan: CopyPlan, stack_project: str):
        self.host = host
        self.plan = plan
        self.directory = ProjectLayout(stack_project).drill(plan.project)

    def compose(self, args: str, timeout: float = 600) -> None:
        project, directory = shlex.quote(self.plan.project), shlex.quote(self.directory)
        done = self.host.run(
            f"cd {directory} && docker compose -p {project} -f {COPY_FILE} {args}", check=False, timeout=timeout
        )
        if not done.ok:
            raise BackupError(
                f"docker compose {args.split()[0]} of the copy exited {done.exit_code}: "
                f"{last_line(done.stderr or done.stdout)}"
            )

    def write(self) -> None:
        # The rendered config holds the stack's environment (secrets too): only the deploy user reads it.
        directory = shlex.quote(self.directory)
        self.host.run(
            f"umask 077 && mkdir -p {directory} && cat > {directory}/{COPY_FILE}", stdin=self.plan.compose_file
        )

    def remove(self) -> str:
        """Containers, networks and volumes of the copy's project, and its directory; never raises.
        Returns what is left ("" when nothing is)."""
        label = shlex.quote(f"label={PROJECT_LABEL}={self.plan.project}")
        named = " ".join(shlex.quote(volume) for volume in self.plan.volumes.values())
        script = (
            f'ids=$(docker ps -aq --filter {label}); [ -z "$ids" ] || docker rm -f -v $ids >/dev/null; '
            f'nets=$(docker network ls -q --filter {label}); [ -z "$nets" ] || docker network rm $nets >/dev/null; '
            f"vols=$(docker volume ls -q --filter {label}); "
            f"docker volume rm -f $vols {named} >/dev/null 2>&1; "
            f"rm -rf {shlex.quote(self.directory)}; "
            f"docker ps -aq --filter {label}; docker network ls -q --filter {label}; docker volume ls -q --filter {label}"
        )
        try:
            left = self.host.run(script, check=False, timeout=300)
        except OpsError as error:
            return error.one_line()
        return " ".join(left.stdout.split())


def drill(
    env: Environment, reporter: Reporter, snapshot_id: str | None = None, *, host: str | None = None
) -> DrillResult:
    """Restore a snapshot (default: the newest complete) into a throwaway copy of the stack on one
    host (default: the first that has archives in it), gate the copy's health, run each volume's
    recipe check, remove the copy, and record the result in the snapshot's drill.json."""
    started = time.monotonic()
    snapshot = find_snapshot(target_dir(env), snapshot_id)
    if snapshot.project and snapshot.project != env.project:
        raise BackupError(
            f"snapshot {snapshot.id} is of project {snapshot.project}, not {env.project}", where=str(snapshot.path)
        )
    records = restore_selection(snapshot, None, host or first_host(env, snapshot))
    if any(record.encrypted for record in records) and age_identity(env) is None:
        raise BackupError("the archives are encrypted and BACKUP_AGE_IDENTITY is not set", hint="nothing was started")
    store = snapshot_store(env, snapshot)
    name = records[0].host
    result = DrillResult(
        snapshot.id, name, drill_project(env.project, snapshot.id), datetime.now(UTC).isoformat(timespec="seconds")
    )
    with Fleet.connect(env, only=[name]) as fleet:
        try:
            run_drill(fleet.hosts[0], env, snapshot, store, records, reporter, result)
        except OpsError as error:
            result.error = error.one_line()
            reporter.step(name, "drill", FAILED, result.error)
    if result.left and not result.error:
        result.error = f"the copy {result.project} could not be removed on {name}: {result.left}"
    result.seconds = time.monotonic() - started
    write_drill(snapshot, result)
    return result


def first_host(env: Environment, snapshot: Snapshot) -> str:
    """The first of the environment's hosts that has archives in the snapshot."""
    held = {record.host for record in snapshot.archives}
    return next((spec.name for spec in env.hosts if spec.name in held), snapshot.archives[0].host)


def check_archives(
    host: Host, snapshot: Snapshot, store: ArchiveStore, records: Sequence[ArchiveRecord], reporter: Reporter
) -> None:
    """Every archive's size and sha256 where it is stored, before anything is started."""
    for record in records:
        found = store.checksum(host, snapshot, record, reporter)
        if found != (record.bytes, record.sha256):
            what = "is missing" if found is None else "does not match its sha256 (corrupted)"
            raise BackupError(f"{record.volume}: archive {record.archive} {what}; no copy was started")
        reporter.step(host.name, "checksum", OK, record.archive)


def run_drill(
    host: Host,
    env: Environment,
    snapshot: Snapshot,
    store: ArchiveStore,
    records: Sequence[ArchiveRecord],
    reporter: Reporter,
    result: DrillResult,
) -> None:
    check_archives(host, snapshot, store, records, reporter)
    releases = ReleaseStore(host, env.project)
    current = releases.current()
    if current is None:
        raise BackupError(f"no current release of {env.project} on {host.name}: the copy runs the current one")
    rendered = host.run(releases.compose_command(current, "config --format json"), check=False, timeout=120)
    try:
        config = json.loads(rendered.stdout) if rendered.ok else None
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict):
        raise BackupError(
            f"docker compose config of release {current.id} failed: {last_line(rendered.stderr or rendered.stdout)}"
        )
    plan = plan_copy(config, env.project, snapshot.id, [r.volume for r in records], env.deploy.health_timeout)
    copy = StackCopy(host, plan, env.project)
    try:
        copy.remove()  # what a killed drill of this snapshot left behind
        copy.write()
        copy.compose(f"up -d --no-build {' '.join(map(shlex.quote, plan.volume_services))}")
        reporter.step(host.name, "copy", CHANGED, f"{plan.project}: release {current.id}, no published ports")
        gate(host, plan, plan.volume_services, "before the restore", reporter)
        target = RestoreTarget(plan.project, plan.volumes)
        took: dict[str, float] = {}
        for record in records:
            began = time.monotonic()
            try:
                restore_volume(host, env, snapshot, store, record, reporter, target)
            except OpsError as error:
                raise BackupError(f"{record.volume}: restore failed: {error.message}") from None
            took[record.volume] = time.monotonic() - began
        copy.compose("up -d --no-build")
        gate(host, plan, plan.services, "after the restore", reporter)
        volumes, containers = read_volume_facts(host, plan.project)
        mountpoints = {volume.name: volume.mountpoint for volume in volumes}
        for record in records:
            began = time.monotonic()
            engine = plan.volumes[record.volume]
            users = [c for c in containers if engine in c.mounts and c.running]
            users.sort(key=lambda c: c.service not in record.services)  # the service archived first
            try:
                summary = recipe_named(record.recipe).check(host, users[0].name if users else "", mountpoints[engine])
            except (OpsError, KeyError) as error:
                cause = error.message if isinstance(error, OpsError) else f"volume {engine} is gone"
                raise BackupError(f"{record.volume} ({record.recipe}): check failed: {cause}") from None
            seconds = took[record.volume] + time.monotonic() - began
            result.volumes.append(DrilledVolume(host.name, record.volume, record.recipe, summary, round(seconds, 2)))
            reporter.step(host.name, "check", OK, f"{record.volume} ({record.recipe}): {summary}")
    finally:
        left = copy.remove()
        result.left = left
        if left:
            reporter.step(host.name, "copy", FAILED, f"{plan.project} not removed: {left}")
        else:
            reporter.step(host.name, "copy", CHANGED, f"removed {plan.project}")


def gate(host: Host, plan: CopyPlan, services: Sequence[str], when: str, reporter: Reporter) -> None:
    began = time.monotonic()
    try:
        wait_healthy(host, plan.project, services, timeout=plan.timeout)
    except HealthGateError as error:
        raise BackupError(f"the copy did not become healthy {when}: {error.message}", hint=error.hint) from None
    reporter.step(
        host.name,
        "health gate",
        OK,
        f"{len(services)} services of the copy healthy in {time.monotonic() - began:.1f} s",
    )
