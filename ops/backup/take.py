"""Taking a snapshot: which volumes, which recipe and hooks for each (the plan), then every host's
archives written into the store under the deploy lock, the catalogue entry last. A failed or
interrupted backup never looks complete; a live database is never tarred while it runs."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ops.backup.age import age_binary, age_recipient_args
from ops.backup.catalogue import (
    MANIFEST,
    PARTIAL,
    fsync_dir,
    host_dirname,
    manifest_text,
    new_snapshot_id,
    target_dir,
    write_manifest,
)
from ops.backup.commands import DEFAULT_LEVEL, EXTENSIONS, as_root, compression_level
from ops.backup.facts import read_volume_facts
from ops.backup.model import ArchiveRecord, BackupResult, ContainerFact, Snapshot, VolumeFact
from ops.backup.recipes import DEFAULT, RECIPES, ArchiveJob, Archiving, RecipeUnusable, detect, recipe_named
from ops.backup.stores import ArchiveStore, LocalStore, host_store
from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, Reporter
from ops.deploy.releases import ReleaseStore
from ops.errors import BackupError, OpsError
from ops.host.labels import BACKUP_POST_LABEL, BACKUP_PRE_LABEL, BACKUP_RECIPE_LABEL, BACKUP_STOP_LABEL
from ops.host.lock import held
from ops.transport import Fleet, Host
from ops.transport.shell import last_line


@dataclass(frozen=True)
class BackupOptions:
    hosts: list[str] | None = None
    volumes: list[str] | None = None  # limit to these (compose or engine names)
    compression: str | None = None  # default from BACKUP_COMPRESSION
    target: str | None = None  # local | host; default from BACKUP_TARGET
    lock_wait: float = 0  # seconds to wait for a deploy, rollback or restore holding the lock


@dataclass(frozen=True)
class VolumePlan:
    """How one volume is archived: recipe, hooks, containers to stop, and the archive command."""

    volume: VolumeFact
    services: tuple[str, ...]
    recipe: str  # a name in ops.backup.recipes.RECIPES
    recipe_container: str = ""  # container the recipe talks to
    recipe_service: str = ""  # ... and its service
    recipe_stop: str = ""  # ... and its opskit.backup.stop label ("" when unset)
    pre: tuple[tuple[str, str], ...] = ()  # (container, command)
    post: tuple[tuple[str, str], ...] = ()
    stop: tuple[str, ...] = ()  # containers stopped while archiving (always started again)
    compression: str = "zstd"

    @property
    def archive_name(self) -> str:
        return self.archive_name_for(self.recipe)

    def archive_name_for(self, recipe: str) -> str:
        return f"{self.volume.key}{RECIPES[recipe].suffix}{EXTENSIONS[self.compression]}"


def plan_volume(volume: VolumeFact, containers: Sequence[ContainerFact], compression: str = "zstd") -> VolumePlan:
    users = [c for c in containers if volume.name in c.mounts]
    stop = tuple(c.name for c in users if c.running and c.labels.get(BACKUP_STOP_LABEL, "").lower() == "true")
    live = [c for c in users if c.running and c.name not in stop]
    # A container recognised by its name or command first (the database), then by the volume's
    # contents (a sidecar mounting a database's volume is not the database).
    chosen = next(
        ((c, r) for seen in (None, volume) for c in live if (r := detect(c, seen)) is not DEFAULT),
        None,
    )
    return VolumePlan(
        volume=volume,
        services=tuple(sorted({c.service for c in users if c.service})),
        recipe=chosen[1].name if chosen else DEFAULT.name,
        recipe_container=chosen[0].name if chosen else "",
        recipe_service=chosen[0].service if chosen else "",
        recipe_stop=chosen[0].labels.get(BACKUP_STOP_LABEL, "").strip().lower() if chosen else "",
        pre=tuple((c.name, c.labels[BACKUP_PRE_LABEL]) for c in users if c.running and c.labels.get(BACKUP_PRE_LABEL)),
        post=tuple(
            (c.name, c.labels[BACKUP_POST_LABEL]) for c in users if c.running and c.labels.get(BACKUP_POST_LABEL)
        ),
        stop=stop,
        compression=compression,
    )


def select_volumes(volumes: Iterable[VolumeFact], include: Sequence[str], exclude: Sequence[str]) -> list[VolumeFact]:
    """Include (default all) minus exclude; names match the compose name or the engine's name."""

    def named(volume: VolumeFact, names: Sequence[str]) -> bool:
        return volume.key in names or volume.name in names

    chosen = [v for v in volumes if (not include or named(v, include)) and not named(v, exclude)]
    return sorted(chosen, key=lambda v: v.key)


def run_hooks(host: Host, hooks: Iterable[tuple[str, str]], what: str, reporter: Reporter) -> None:
    for container, hook in hooks:
        result = host.run(f"docker exec {shlex.quote(container)} sh -c {shlex.quote(hook)}", check=False, timeout=600)
        if not result.ok:
            raise BackupError(
                f"{what} hook of {container} exited {result.exit_code}: {last_line(result.stderr or result.stdout)}",
                where=host.name,
            )
        reporter.step(host.name, f"{what} hook", OK, container)


class VolumeRefused(BackupError):
    """A volume holding a live database its recipe cannot dump, whose container may not be stopped:
    not archived (the other volumes are)."""


def fallback_archive(
    host: Host, plan: VolumePlan, error: RecipeUnusable, job: ArchiveJob, reporter: Reporter
) -> tuple[str, Archiving]:
    """The recipe cannot run: stop its container and archive the files when that is allowed (the
    caller starts it again), else refuse the volume. Returns (the recipe recorded, what to archive)."""
    allowed = plan.recipe_stop == "true" or (error.stop_is_safe and plan.recipe_stop != "false")
    service = plan.recipe_service or plan.recipe_container
    if not allowed:
        raise VolumeRefused(
            f"volume {plan.volume.key} of service {service} holds a live {plan.recipe} database and "
            f"{error.message}: not archived while it runs",
            where=host.name,
            hint=f'label {service} opskit.backup.stop: "true" to stop it for the archive, or '
            f"{BACKUP_RECIPE_LABEL}: <a recipe that can run in it>",
        )
    host.run(f"docker stop {shlex.quote(plan.recipe_container)} >/dev/null", timeout=job.timeout)
    reporter.step(
        host.name, "stop", CHANGED, f"{plan.recipe_container} while {plan.volume.key} is archived ({error.message})"
    )
    # A recipe whose archive is a tar anyway (sqlite) keeps its name: it restores and checks it.
    recipe = plan.recipe if RECIPES[plan.recipe].suffix == DEFAULT.suffix else DEFAULT.name
    return recipe, DEFAULT.archive(job)


def archive_volume(
    host: Host,
    plan: VolumePlan,
    store: ArchiveStore,
    snapshot_id: str,
    reporter: Reporter,
    *,
    level: int = DEFAULT_LEVEL,
    timeout: float = 300,
    release: str = "",
    encrypted: bool = False,
) -> ArchiveRecord:
    """Archive one volume into the store (recipes and hooks around it); the partial file goes on failure."""
    started = time.monotonic()
    user = host.spec.user
    recipe = recipe_named(plan.recipe)
    cleanup = ""
    stopped: list[str] = []
    recipe_used = plan.recipe
    try:
        run_hooks(host, plan.pre, "pre", reporter)
        for container in plan.stop:
            host.run(f"docker stop {shlex.quote(container)} >/dev/null", timeout=timeout)
            stopped.append(container)
            reporter.step(host.name, "stop", CHANGED, f"{container} while {plan.volume.key} is archived")
        job = ArchiveJob(host, plan.volume, plan.recipe_container, plan.compression, level, timeout, reporter)
        try:
            archiving = recipe.archive(job)
        except RecipeUnusable as error:
            recipe_used, archiving = fallback_archive(host, plan, error, job, reporter)
            stopped.append(plan.recipe_container)
        cleanup = archiving.cleanup
        relative = f"{host_dirname(host.name)}/{plan.archive_name_for(recipe_used)}{'.age' if encrypted else ''}"
        progress = reporter.transfer(host.name, plan.volume.key)
        size, digest = store.write(host, archiving.command, snapshot_id, relative, progress)
    finally:
        if cleanup:
            host.run(as_root(f"rm -rf {shlex.quote(cleanup)}", user), check=False)
        for container in stopped:
            # Always started again, whatever happened while it was stopped.
            host.run(f"docker start {shlex.quote(container)} >/dev/null", check=False, timeout=timeout)
        if plan.post:
            try:
                run_hooks(host, plan.post, "post", reporter)
            except OpsError as error:
                reporter.step(host.name, "post hook", FAILED, error.line_for(host.name))
    seconds = time.monotonic() - started
    reporter.step(
        host.name,
        "archive",
        CHANGED,
        f"{plan.volume.key} ({recipe_used}) {size / 1e6:.1f} MB in {seconds:.1f} s",
    )
    return ArchiveRecord(
        host=host.name,
        volume=plan.volume.key,
        volume_name=plan.volume.name,
        services=plan.services,
        recipe=recipe_used,
        archive=relative,
        compression=plan.compression,
        bytes=size,
        sha256=digest,
        seconds=round(seconds, 2),
        release=release,
        encrypted="age" if encrypted else "",
    )


def host_versions(host: Host, project: str) -> dict[str, str]:
    result = host.run(
        "docker version --format '{{.Server.Version}}' 2>/dev/null; zstd --version 2>/dev/null | head -1; "
        "tar --version 2>/dev/null | head -1",
        check=False,
    ).stdout.splitlines()
    store = ReleaseStore(host, project)
    current = store.current_id() or ""
    release = store.get(current) if current else None
    return {
        "release": current,
        "version": release.version if release else "",
        "docker": result[0].strip() if result else "",
        "zstd": result[1].strip() if len(result) > 1 else "",
        "tar": result[2].strip() if len(result) > 2 else "",
    }


def backup_all(env: Environment, reporter: Reporter, options: BackupOptions | None = None) -> BackupResult:
    """Back up every selected volume of the stack on every host into a new snapshot."""
    options = options or BackupOptions()
    started = time.monotonic()
    compression = options.compression or env.backup.compression
    if compression not in EXTENSIONS:
        raise BackupError(f"unknown compression {compression!r}", hint="zstd or gzip")
    level = compression_level(env, compression)
    timeout = env.backup.timeout
    include = list(options.volumes or env.backup.include)
    exclude = list(env.backup.exclude)
    recipient = env.backup.age_recipient
    encrypt_to = age_recipient_args(recipient, env.root) if recipient else None
    on_host = host_store(env, options.target)
    if encrypt_to and on_host:
        raise BackupError(
            "BACKUP_AGE_RECIPIENT encrypts on this machine: it needs the local target",
            where=str(env.file.name),
            hint="unset BACKUP_AGE_RECIPIENT or use BACKUP_TARGET=local",
        )
    if encrypt_to:
        age_binary()
    target = target_dir(env)
    store: ArchiveStore = on_host or LocalStore(target, encrypt_to=encrypt_to)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot create {target}: {error.strerror}", hint="check BACKUP_DIR") from None
    snapshot_id = new_snapshot_id()
    while (target / snapshot_id).exists() or (target / f"{snapshot_id}{PARTIAL}").exists():
        time.sleep(1)
        snapshot_id = new_snapshot_id()
    partial = target / f"{snapshot_id}{PARTIAL}"
    partial.mkdir()
    snapshot = Snapshot(
        snapshot_id,
        partial,
        complete=False,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=env.name,
        project=env.project,
        host_dir=on_host.base if on_host else "",
    )
    if on_host:
        # Says where the hosts' `<id>.partial` directories are, should this run be killed before
        # it can clean up: backup.prune removes them with this one once it is stale.
        snapshot.hosts = {spec.name: {} for spec in env.hosts if not options.hosts or spec.name in options.hosts}
        (partial / MANIFEST).write_text(manifest_text(snapshot, env))
    reporter.info(f"snapshot {snapshot_id} -> {f'{on_host.base} on each host' if on_host else target}")
    hosts_info: dict[str, dict[str, str]] = {}
    refused: list[str] = []  # one line per volume not archived (see VolumeRefused)

    def one(host: Host) -> list[ArchiveRecord]:
        volumes, containers = read_volume_facts(host, env.project)
        chosen = select_volumes(volumes, include, exclude)
        if options.volumes:
            missing = sorted(set(options.volumes) - {v.key for v in chosen} - {v.name for v in chosen})
            # A swarm stack's volume is on the one node that runs its task: elsewhere is nothing to do.
            if missing and not chosen and not env.orchestrator.swarm:
                raise BackupError(
                    f"no volume {', '.join(missing)} of project {env.project}",
                    where=host.name,
                    hint=f"volumes: {', '.join(v.key for v in volumes) or 'none'}",
                )
        info = host_versions(host, env.project)
        hosts_info[host.name] = info
        if not chosen:
            reporter.step(host.name, "volumes", OK, "nothing to back up")
            return []
        (partial / host_dirname(host.name)).mkdir(exist_ok=True)
        store.begin(host, snapshot_id, host_dirname(host.name))
        records = []
        for volume in chosen:
            plan = plan_volume(volume, containers, compression)
            try:
                record = archive_volume(
                    host,
                    plan,
                    store,
                    snapshot_id,
                    reporter,
                    level=level,
                    timeout=timeout,
                    release=info["release"],
                    encrypted=bool(encrypt_to),
                )
            except VolumeRefused as error:
                refused.append(error.one_line())
                reporter.step(host.name, "refused", FAILED, error.line_for(host.name))
                continue
            records.append(record)
        return records

    errors: list[str] = []
    try:
        fleet = Fleet.connect(env, only=options.hosts)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

    def abandon() -> None:
        """Remove the partial snapshot. While a host's part could not be removed (host gone), the
        catalogue here stays incomplete, so that backup.prune removes that part later."""
        try:
            store.discard(fleet.hosts, snapshot_id, partial=True)
        except Exception:  # the original error is what the operator must see; prune cleans up later
            return
        shutil.rmtree(partial, ignore_errors=True)

    with fleet:
        try:
            # No deploy, rollback or restore changes the volumes under the archive (a backup of a
            # half-restored volume would look complete).
            with held(fleet, env.project, f"backup {snapshot_id}", reporter, wait=options.lock_wait):
                outcome = fleet.map(one)
            for item in outcome.outcomes:
                if item.error is not None:
                    errors.append(item.error.one_line())
                    reporter.step(item.host, "backup", FAILED, item.error.line_for(item.host))
                snapshot.archives.extend(item.value or [])
            found = {record.volume for record in snapshot.archives} | {r.volume_name for r in snapshot.archives}
            lacking = sorted(set(options.volumes or ()) - found)
            if lacking and env.orchestrator.swarm and not errors and not refused:
                errors.append(f"no node runs a task with volume {', '.join(lacking)} of stack {env.project}")
            if not snapshot.archives and refused:
                errors.extend(refused)
            elif not errors and not snapshot.archives:
                errors.append("no volume to back up on any host (check BACKUP_INCLUDE / BACKUP_EXCLUDE)")
            if errors:
                abandon()
                return BackupResult(None, errors, time.monotonic() - started)
            snapshot.hosts = hosts_info
            files = write_manifest(snapshot, partial, env)
            # The archives' own copies are complete first; the catalogue here is the last step.
            store.finish([h for h in fleet.hosts if h.name in hosts_info], snapshot_id, files)
            final = target / snapshot_id
            os.rename(partial, final)
            fsync_dir(target)
        except BaseException:
            abandon()
            raise
    snapshot.path = final
    # Complete even with a volume refused: every archive it lists is whole and restorable, and
    # retention keeps an older snapshot's copy of the refused volume (the last copy of a volume is
    # never pruned). The result is not ok: the run exits 1 naming each refused volume.
    snapshot.complete = True
    return BackupResult(snapshot, refused, time.monotonic() - started)
