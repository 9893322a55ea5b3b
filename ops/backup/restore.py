"""Restoring a snapshot: stop the services of each chosen volume, put the archive back (its recipe
says how), start them again and wait until the whole project is healthy. Under the deploy lock;
services come back even when a restore fails. A RestoreTarget points one volume's restore at
another project (a drill's copy) instead of the stack."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ops.backup.age import age_identity
from ops.backup.catalogue import find_snapshot, target_dir
from ops.backup.facts import read_volume_facts
from ops.backup.model import ArchiveRecord, ContainerFact, RestoreResult, Snapshot, VolumeFact, by_host
from ops.backup.recipes import recipe_named
from ops.backup.recipes.files import restore_command
from ops.backup.recipes.postgres import psql_restore_command
from ops.backup.stores import ArchiveStore, snapshot_store
from ops.backup.swarm_tasks import scaled_down, swarm_services
from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, Reporter
from ops.deploy.health import gate_error, project_health
from ops.deploy.releases import ReleaseStore
from ops.errors import BackupError
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL, VOLUME_LABEL
from ops.host.lock import held
from ops.transport import Fleet, Host

__all__ = [
    "RestoreTarget",
    "psql_restore_command",
    "restore",
    "restore_command",
    "restore_selection",
    "restore_volume",
    "stack_target",
]


def restore_selection(snapshot: Snapshot, volume: str | None, host: str | None) -> list[ArchiveRecord]:
    """The archives to restore; unknown volume or host names are errors listing what exists."""
    records = snapshot.archives
    if host:
        records = [r for r in records if r.host == host or r.host.split(":")[0] == host]
        if not records:
            hosts = sorted({r.host for r in snapshot.archives})
            raise BackupError(f"snapshot {snapshot.id} has no host {host!r}", hint=f"hosts: {', '.join(hosts)}")
    if volume:
        records = [r for r in records if volume in (r.volume, r.volume_name)]
        if not records:
            volumes = sorted({r.volume for r in snapshot.archives})
            raise BackupError(f"snapshot {snapshot.id} has no volume {volume!r}", hint=f"volumes: {', '.join(volumes)}")
    return records


def restore(
    env: Environment,
    reporter: Reporter,
    snapshot_id: str,
    *,
    volume: str | None = None,
    host: str | None = None,
) -> RestoreResult:
    """Put archived volumes back: stop their services, replace the contents, start, health-gate."""

    started = time.monotonic()
    snapshot = find_snapshot(target_dir(env), snapshot_id)
    if snapshot.project and snapshot.project != env.project:
        raise BackupError(
            f"snapshot {snapshot.id} is of project {snapshot.project}, not {env.project}", where=str(snapshot.path)
        )
    records = restore_selection(snapshot, volume, host)
    if any(record.encrypted for record in records) and age_identity(env) is None:
        raise BackupError("the archives are encrypted and BACKUP_AGE_IDENTITY is not set", hint="nothing was changed")
    store = snapshot_store(env, snapshot)
    for record in records:
        if not snapshot.host_dir and not (snapshot.path / record.archive).is_file():
            raise BackupError(f"archive {record.archive} is missing from {snapshot.path}", hint="inv backup.verify")
    result = RestoreResult(snapshot)
    records_on = by_host(records)
    timeout = env.deploy.health_timeout

    # A swarm's tasks are scaled down and up through its first manager.
    manager_spec = next((spec for spec in env.hosts if spec.manager), None) if env.orchestrator.swarm else None
    managers = Fleet.connect(env, only=[manager_spec.name]) if manager_spec else Fleet([])
    manager = managers.hosts[0] if managers.hosts else None

    def one(target: Host) -> list[str]:
        done = []
        for record in records_on[target.name]:
            restore_volume(target, env, snapshot, store, record, reporter, stack_target(target, env.project, manager))
            done.append(f"{target.name} {record.volume}")
        if manager is None:  # a swarm's services were gated as they were scaled back
            gate_project(target, env.project, timeout)
        reporter.step(target.name, "health gate", OK, "every service healthy")
        return done

    with (
        managers,
        Fleet.connect(env, only=sorted(records_on)) as fleet,
        held(fleet, env.project, f"restore {snapshot.id}", reporter),
    ):
        outcome = fleet.map(one)
    for item in outcome.outcomes:
        result.restored.extend(item.value or [])
        if item.error is not None:
            result.errors.append(item.error.one_line())
            reporter.step(item.host, "restore", FAILED, item.error.line_for(item.host))
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class RestoreTarget:
    """The compose project archives go back into on a host: the stack itself, or a drill's copy of
    it. volume_names maps a compose volume name to the engine's name there (a volume not in it keeps
    the name it was archived from); start brings up services that have no container (None: none)."""

    project: str
    volume_names: Mapping[str, str] = field(default_factory=dict)
    start: Callable[[list[str]], None] | None = None
    manager: Host | None = None  # a swarm's manager: the stack's tasks are scaled through it

    def volume_name(self, record: ArchiveRecord) -> str:
        return self.volume_names.get(record.volume, record.volume_name)


def stack_target(host: Host, project: str, manager: Host | None = None) -> RestoreTarget:
    """The running stack: its own volumes, missing services started from its current release."""

    def start(services: list[str]) -> None:
        releases = ReleaseStore(host, project)
        current = releases.get(releases.current_id() or "")
        if current is not None:
            # Without --no-deps: under it Compose hashes a service without its depends_on, and the
            # next plain `up` (a deploy) would recreate it.
            host.run(
                releases.compose_command(current, f"up -d --no-build {' '.join(map(shlex.quote, services))}"),
                check=False,
                timeout=600,
            )

    return RestoreTarget(project, start=start, manager=manager)


@dataclass
class VolumeRestore:
    """One archive going back into its volume on a host (the Restoring a recipe is handed)."""

    host: Host
    target: RestoreTarget
    snapshot: Snapshot
    store: ArchiveStore
    record: ArchiveRecord
    reporter: Reporter
    volumes: list[VolumeFact]
    users: list[ContainerFact]
    services: list[str]
    timeout: float = 300.0  # for a swarm's tasks to stop and come back

    def feed(self, command: str) -> None:
        self.store.feed(self.host, command, self.snapshot, self.record, self.reporter, "restore")

    def into_volume(self, command: Callable[[str], str]) -> None:
        host, target, record, reporter = self.host, self.target, self.record, self.reporter
        volume_name = target.volume_name(record)
        tasks = swarm_services(self.users) if target.manager else []
        if tasks and target.manager:
            with scaled_down(target.manager, host, target.project, tasks, reporter, self.timeout):
                self._replace(volume_name, command)
            return
        running = [c.name for c in self.users if c.running]
        if running:
            host.run(f"docker stop {' '.join(map(shlex.quote, running))} >/dev/null", timeout=300)
            reporter.step(host.name, "stop", CHANGED, ", ".join(running))
        try:
            self._replace(volume_name, command)
        finally:
            # Services come back whether or not the archive went in: a failed restore must not leave them down.
            if running:
                host.run(f"docker start {' '.join(map(shlex.quote, running))} >/dev/null", check=False, timeout=300)
            missing = sorted(set(self.services) - {c.service for c in self.users})
            if missing and target.start is not None:
                target.start(missing)

    def _replace(self, volume_name: str, command: Callable[[str], str]) -> None:
        host, target, record, reporter = self.host, self.target, self.record, self.reporter
        existing = {v.name: v for v in self.volumes}
        if volume_name not in existing:
            labels = f"--label {PROJECT_LABEL}={shlex.quote(target.project)} --label {VOLUME_LABEL}={shlex.quote(record.volume)}"
            host.run(f"docker volume create {labels} {shlex.quote(volume_name)} >/dev/null")
            reporter.step(host.name, "volume", CHANGED, f"created {volume_name}")
        mountpoint = host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {shlex.quote(volume_name)}").stdout
        self.feed(command(mountpoint.strip()))


def restore_volume(
    host: Host,
    env: Environment,
    snapshot: Snapshot,
    store: ArchiveStore,
    record: ArchiveRecord,
    reporter: Reporter,
    target: RestoreTarget | None = None,
) -> None:
    """One archive back into its volume on the host (the stack's, or target's: a drill's copy), by
    its recipe, after its checksum is checked where it is stored on the host."""
    target = target or stack_target(host, env.project)
    volumes, containers = read_volume_facts(host, target.project)
    volume_name = target.volume_name(record)
    users = [c for c in containers if volume_name in c.mounts]
    services = sorted(set(record.services) | {c.service for c in users if c.service})
    if snapshot.host_dir and store.checksum(host, snapshot, record, reporter) != (record.bytes, record.sha256):
        raise BackupError(
            f"archive {record.archive} on the host is missing or does not match its sha256; nothing was changed",
            where=f"{host.name}:{snapshot.host_dir}/{snapshot.id}",
            hint="inv backup.verify",
        )
    job = VolumeRestore(
        host, target, snapshot, store, record, reporter, volumes, users, services, env.deploy.health_timeout
    )
    reporter.step(host.name, "restore", CHANGED, recipe_named(record.recipe).restore(job))


def gate_project(host: Host, project: str, timeout: float) -> None:
    """Every service of the project healthy again (dependants may turn unhealthy while a volume's
    service was down; they get the whole timeout to recover instead of failing at once)."""
    containers = host.docker().containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    services = sorted({c.labels.get(SERVICE_LABEL, "") for c in containers} - {""})
    deadline = time.monotonic() + timeout
    while True:
        report = project_health(host, project, services)
        if all(service.ok for service in report):
            return
        if time.monotonic() >= deadline:
            bad = next(service for service in report if not service.ok)
            what = bad.describe() if bad.failed else f"service {bad.service} is still {bad.state}"
            raise gate_error(host, bad, f"{what} {timeout:.0f} s after the restore")
        time.sleep(1)
