"""Deploy a compose stack as an immutable, numbered release; roll back to any kept release.

Order of a deploy: validate the stack locally, lock every host, bring the images, write the
release directory, `compose up`, gate on health, switch `current`, audit, prune. A host whose
release fails its gate is put back on its previous release before the error is reported.
Deploy and rollback never touch volumes.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Reporter
from ops.deploy.health import ServiceHealth, wait_healthy
from ops.deploy.releases import OVERRIDE_FILE, Release, ReleaseStore, new_release_id, override_yaml
from ops.errors import DeployError, HealthGateError, HostError, OpsError
from ops.host import audit
from ops.host.lock import held, operator
from ops.images.delivery import build_if_changed, host_image_ids, send_images
from ops.stack.compose import Stack, archive, content_digest, env_file, file_sums, load_stack, render_env, stack_dir
from ops.transport import Fleet, Host

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class DeployOptions:
    version: str = "v1"
    hosts: list[str] | None = None
    batch: int = 0  # 0: all hosts at once
    dry_run: bool = False
    lock_wait: float = 0.0
    reason: str = ""


SUCCEEDED = ("deployed", "unchanged", "planned")  # a host's results that leave it as asked


@dataclass
class HostReport:
    """What happened on one host."""

    host: str
    result: str  # deployed | unchanged | rolled-back | failed | skipped | planned
    release: str = ""
    previous: str = ""
    seconds: float = 0.0
    error: str = ""
    failing: ServiceHealth | None = None
    images_sent: int = 0

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "failing"}
        if self.failing:
            data["failing_service"] = self.failing.service
            data["health_output"] = self.failing.health_output
        return data


@dataclass
class DeployResult:
    action: str
    environment: str
    version: str
    hosts: list[HostReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(report.result in SUCCEEDED for report in self.hosts)

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "environment": self.environment,
            "version": self.version,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "hosts": [report.as_dict() for report in self.hosts],
        }


@dataclass(frozen=True)
class Prepared:
    """Everything checked and built on the operator's machine before any host changes."""

    stack: Stack
    env_text: str
    archive: bytes
    refs: dict[str, str]  # service -> image reference
    local_ids: dict[str, str]  # service -> image ID on the local engine (send source)
    git_commit: str
    content: str = ""  # ops.stack.content_digest of the stack and its rendered .env
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 (ops.stack.file_sums)


def git_commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True)
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def image_source(env: Environment) -> str:
    return env.deploy.image_source


def prepare(env: Environment, reporter: Reporter, version: str, *, build: bool = True) -> Prepared:
    """Validate the stack with the real compose, and build images locally when sending them."""
    from ops.stack.toolbox import ensure_compose

    directory = stack_dir(env)
    compose_bin = ensure_compose(env.root, reporter)
    env_text = render_env(env, version, directory)
    with env_file(env_text) as rendered:
        stack = load_stack(directory, compose_bin, rendered)
        reporter.step("local", "validate stack", OK, f"{len(stack.services)} services in {directory.name}")
        refs = {name: service.image for name, service in stack.services.items()}
        local_ids: dict[str, str] = {}
        if image_source(env) == "send" and build:
            stamps = env.root / ".opskit" / "builds.json"
            local_ids, built = build_if_changed(compose_bin, stack, rendered, stamps)
            detail = f"{len(local_ids)} images" + ("" if built else ", unchanged since the last build")
            reporter.step("local", "build images", CHANGED if built else OK, detail)
    content = content_digest(directory, env_text)
    files = file_sums(directory, env_text)
    return Prepared(
        stack, env_text, archive(directory, env_text), refs, local_ids, git_commit(env.root), content, files
    )


_local: docker.DockerClient | None = None


def _local_engine() -> docker.DockerClient:
    global _local
    if _local is None:
        import docker

        _local = docker.from_env(version="auto", timeout=600)
    return _local


def health_timeout(env: Environment, stack: Stack) -> float:
    configured = env.deploy.health_timeout
    longest_start = max((service.start_period_s for service in stack.services.values()), default=0.0)
    return max(configured, longest_start + 30)


def _compose(host: Host, store: ReleaseStore, release: Release, args: str, timeout: float = 600) -> None:
    host.run(store.compose_command(release, args), timeout=timeout)


def _bring_images(
    host: Host, env: Environment, prepared: Prepared, store: ReleaseStore, release: Release, reporter: Reporter
) -> tuple[dict[str, str], int]:
    """Make every service's image present on the host; returns (service -> image ID, bytes sent)."""
    source = image_source(env)
    sent = 0
    if source == "send":
        present = host_image_ids(host, prepared.refs)
        missing = sorted({prepared.refs[s] for s, image_id in prepared.local_ids.items() if present.get(s) != image_id})
        if missing:
            transfer = reporter.transfer(host.name, f"sending {len(missing)} images")
            sent = send_images(host, _local_engine(), missing, on_bytes=transfer)
            reporter.step(host.name, "images", CHANGED, f"sent {', '.join(missing)} ({sent / 1e6:.0f} MB)")
        else:
            reporter.step(host.name, "images", OK, "all present")
            return present, 0
    elif source == "build":
        _compose(host, store, release, "build --quiet", timeout=1800)
        reporter.step(host.name, "images", CHANGED, "built on host")
    else:
        _compose(host, store, release, "pull --quiet", timeout=1800)
        reporter.step(host.name, "images", CHANGED, "pulled")
    ids = host_image_ids(host, prepared.refs)
    lacking = sorted(set(prepared.refs) - set(ids))
    if lacking:
        raise DeployError(f"images missing after {source}: {', '.join(lacking)}", where=host.name)
    return ids, sent


def _write_release(host: Host, store: ReleaseStore, release: Release, prepared: Prepared) -> None:
    """The release's files and .env, unpacked on the host from stdin in one round trip."""
    path = shlex.quote(store.path(release.id))
    host.run(f"mkdir -p {path} && tar -xzf - -C {path} --no-same-owner", stdin=prepared.archive)


def _pin(host: Host, release: Release, refs: dict[str, str], ids: dict[str, str], project: str) -> Release:
    from ops.deploy.releases import pin_tag

    pins = {service: pin_tag(project, service, ids[service].split(":")[-1][:12]) for service in refs}
    script = " && ".join(f"docker tag {shlex.quote(ids[s])} {shlex.quote(pins[s])}" for s in sorted(refs))
    host.run(script)
    return Release(**{**release.__dict__, "images": ids, "pins": pins})


def _gate(host: Host, env: Environment, release: Release, timeout: float, reporter: Reporter) -> None:
    started = time.monotonic()
    wait_healthy(host, env.project, list(release.pins), timeout=timeout)
    reporter.step(
        host.name, "health gate", OK, f"{len(release.pins)} services healthy in {time.monotonic() - started:.1f} s"
    )


def _running_services(host: Host, project: str) -> set[str]:
    from ops.deploy.health import project_containers
    from ops.host.labels import SERVICE_LABEL

    running = [summary for summary in project_containers(host, project) if summary.get("State") == "running"]
    return {(summary.get("Labels") or {}).get(SERVICE_LABEL, "") for summary in running}


def _run_release(
    host: Host, env: Environment, store: ReleaseStore, release: Release, timeout: float, reporter: Reporter
) -> None:
    """compose up the release; running swappable services are swapped blue-green first.

    Every `compose up` here names its services without `--no-deps`: Compose (2.26) hashes a
    service's config without its depends_on under `--no-deps`, so mixing the two modes recreates
    the dependents (the proxy) on the next plain `up`. Swapping first and then one plain `up -d`
    leaves every container as a plain `docker compose up -d` of the release would: a later
    manual `up` changes nothing."""
    from ops.deploy.swap import swap_service

    to_swap = sorted(set(release.swappable) & _running_services(host, env.project))
    drain = env.deploy.swap_drain
    for service in to_swap:
        report = swap_service(host, store, release, service, timeout=timeout, drain=drain, reporter=reporter)
        if report.result == "failed":
            error = HealthGateError(report.error, where=host.name)
            error.service = report.failing
            raise error
    store.write_override(release)
    _compose(host, store, release, "up -d --no-build --remove-orphans --quiet-pull")
    swapped = f" (swapped {', '.join(to_swap)} blue-green)" if to_swap else ""
    reporter.step(host.name, "compose up", CHANGED, f"{release.id}{swapped}")
    _gate(host, env, release, timeout, reporter)


def _restore(
    host: Host, env: Environment, store: ReleaseStore, previous: Release | None, timeout: float, reporter: Reporter
) -> str:
    """Put the host back on its previous release after a failed one; returns the outcome."""
    if previous is None:
        reporter.step(host.name, "restore", SKIPPED, "no previous release to go back to")
        return "failed"
    try:
        _run_release(host, env, store, previous, timeout, reporter)
        store.activate(previous)
    except OpsError as error:
        reporter.step(host.name, "restore", FAILED, error.one_line())
        return "failed"
    reporter.step(host.name, "restore", CHANGED, f"back on {previous.id}")
    return "rolled-back"


def releases_to_prune(releases: list[Release], current_id: str | None, keep: int) -> list[Release]:
    """What a prune removes (oldest first): a release that is the same as a newer one (files,
    .env and images: nothing new to roll back to), then all but the newest `keep` of the rest that
    can be rolled back to, and failed releases older than those. Never the current release."""
    seen: set[object] = set()
    distinct: list[Release] = []  # newest first
    removed: list[Release] = []
    for release in reversed(releases):
        same = (release.content, tuple(sorted(release.images.items())))
        key = same if release.content and release.status != "failed" else release.id
        if key in seen and release.id != current_id:
            removed.append(release)
        else:
            seen.add(key)
            distinct.append(release)
    kept_good = [release for release in distinct if release.status != "failed"][:keep]
    oldest_kept = kept_good[-1].id if kept_good else ""
    for release in distinct:
        if release.id == current_id or release in kept_good:
            continue
        if release.status != "failed" or release.id < oldest_kept:
            removed.append(release)
    return sorted(removed, key=lambda release: release.id)


def prune(store: ReleaseStore, keep: int, reporter: Reporter) -> list[str]:
    """Keep the newest `keep` distinct releases (and the current one) and the images they pin."""
    releases = store.list()
    removed = releases_to_prune(releases, store.current_id(), keep)
    kept = {release.id for release in releases} - {release.id for release in removed}
    if not removed:
        return []
    kept_pins = {pin for release in releases if release.id in kept for pin in release.pins.values()}
    for release in removed:
        store.remove(release.id)
    stale = sorted({pin for release in removed for pin in release.pins.values()} - kept_pins)
    if stale:
        # rmi refuses images that containers use; that is the safety we want.
        store.host.run(f"docker rmi {' '.join(shlex.quote(pin) for pin in stale)} >/dev/null 2>&1; true")
    reporter.step(store.host.name, "prune", CHANGED, f"removed {len(removed)} old releases")
    return [release.id for release in removed]


def deploy_host(host: Host, env: Environment, prepared: Prepared, version: str, reporter: Reporter) -> HostReport:
    started = time.monotonic()
    store = ReleaseStore(host, env.project)
    previous = store.current()
    previous_id = previous.id if previous else None
    timeout = health_timeout(env, prepared.stack)
    if previous is not None and previous.status == "active" and previous.content == prepared.content:
        converged = _converge_unchanged(host, env, prepared, store, previous, timeout, reporter)
        if converged is not None:
            converged.seconds = time.monotonic() - started
            return converged
    release = Release(
        id=new_release_id(version),
        version=version,
        git_commit=prepared.git_commit,
        who=operator(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        compose_files=prepared.stack.compose_files,
        swappable=tuple(sorted(name for name, service in prepared.stack.services.items() if service.swappable)),
        content=prepared.content,
    )
    report = HostReport(host.name, "failed", release.id, previous_id or "")
    _write_release(host, store, release, prepared)
    reporter.step(host.name, "release", CHANGED, f"wrote {store.path(release.id)}")
    try:
        ids, report.images_sent = _bring_images(host, env, prepared, store, release, reporter)
        release = _pin(host, release, prepared.refs, ids, env.project)
        store.write_metadata(release)
        _run_release(host, env, store, release, timeout, reporter)
    except (HealthGateError, HostError, DeployError) as error:
        if isinstance(error, HostError) and not _reachable(host):
            raise  # the host is gone; nothing can be restored on it now
        reporter.step(host.name, "deploy", FAILED, error.one_line())
        store.write_metadata(release.with_status("failed"))
        report.error = error.one_line()
        report.failing = getattr(error, "service", None)
        report.result = _restore(host, env, store, previous, timeout, reporter)
        report.seconds = time.monotonic() - started
        return report
    store.activate(release)
    reporter.step(host.name, "current", CHANGED, f"-> {release.id}")
    prune(store, env.deploy.keep_releases, reporter)
    report.result = "deployed"
    report.seconds = time.monotonic() - started
    return report


def _converge_unchanged(
    host: Host,
    env: Environment,
    prepared: Prepared,
    store: ReleaseStore,
    current: Release,
    timeout: float,
    reporter: Reporter,
) -> HostReport | None:
    """The host's current release already is this one (same files, .env and image IDs): no new
    release directory. When every container already runs it as compose would, nothing is done;
    otherwise the images are brought, `compose up` converges what drifted, and the gate runs.
    None when the images turn out to differ (a new release is needed after all)."""
    report = HostReport(host.name, "failed", current.id, current.id)
    # Sending: the release recorded the IDs of the images this machine has now; the host is asked
    # for its images only when something drifted.
    known = image_source(env) == "send" and prepared.local_ids == current.images
    if not known:
        ids, report.images_sent = _bring_images(host, env, prepared, store, current, reporter)
        if ids != current.images:
            return None
    files_match, in_sync = _current_state(host, store, current, prepared)
    if not files_match:
        reporter.step(host.name, "release", CHANGED, f"{current.id} was edited on the host: a new release replaces it")
        return None
    reporter.step(host.name, "release", OK, f"unchanged: {current.id} has the same files, .env and images")
    if in_sync:
        reporter.step(host.name, "compose up", OK, "every container runs this release as compose would, healthy")
        report.result = "unchanged"
        return report
    if known:
        _, report.images_sent = _bring_images(host, env, prepared, store, current, reporter)
    try:
        _run_release(host, env, store, current, timeout, reporter)
    except (HealthGateError, HostError, DeployError) as error:
        reporter.step(host.name, "deploy", FAILED, error.one_line())
        report.error = error.one_line()
        report.failing = getattr(error, "service", None)
        return report
    report.result = "unchanged"
    return report


_CONTAINER_FIELDS = (
    '{{.Label "com.docker.compose.service"}}\t{{.Label "com.docker.compose.config-hash"}}'
    "\t{{.Image}}\t{{.State}}\t{{.Status}}"
)


def _current_state(host: Host, store: ReleaseStore, release: Release, prepared: Prepared) -> tuple[bool, bool]:
    """(files_match, in_sync) of the host's current release, in one round trip, no Docker SDK.

    files_match: the release directory holds exactly the files this deploy would write and the
    override pinning its images (nobody edited them on the host).
    in_sync: `compose up -d` of the release would change nothing and its gate would pass: each
    service has its number of running, healthy containers, made from the pinned image with the
    config hash compose computes for the release (compose's own test for recreating), and no
    container of a service the release lacks."""
    from ops.deploy.health import summary_state
    from ops.host.labels import PROJECT_LABEL

    files_marker, containers_marker = "--- opskit files ---", "--- opskit containers ---"
    done = host.run(
        f"cd {shlex.quote(store.path(release.id))} && find . -type f ! -name 'release.json*' -print0 | xargs -0r sha256sum"
        f" && echo {shlex.quote(files_marker)} && "
        + store.compose_command(release, "config --hash '*'")
        + f" && echo {shlex.quote(containers_marker)} && docker ps -a --no-trunc"
        + f" --filter label={PROJECT_LABEL}={shlex.quote(store.project)} --format {shlex.quote(_CONTAINER_FIELDS)}",
        check=False,
    )
    sums, listed, rest = done.stdout.partition(files_marker + "\n")
    if not listed:
        return False, False
    on_host = {}
    for line in sums.splitlines():  # sha256sum: "DIGEST  ./relative/path"
        digest, _, name = line.partition("  ")
        on_host[name.removeprefix("./")] = digest
    # The override opskit wrote beside them pins the images: it is checked as well.
    override = hashlib.sha256(override_yaml(release, store.project).encode()).hexdigest()
    if on_host != {**prepared.files, OVERRIDE_FILE: override}:
        return False, False
    hashes, _, listing = rest.partition(containers_marker + "\n")
    expected = dict(line.split(None, 1) for line in hashes.splitlines() if len(line.split()) == 2)
    if not done.ok or set(expected) != set(release.pins):
        return True, False
    by_service: dict[str, list[list[str]]] = {}
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) != 5:
            return True, False
        by_service.setdefault(fields[0], []).append(fields)
    if set(by_service) != set(expected):
        return True, False
    for service, containers in by_service.items():
        wanted = prepared.stack.services[service].replicas if service in prepared.stack.services else 0
        if len(containers) != wanted:
            return True, False
        for _, config_hash, image, state, status in containers:
            healthy = summary_state({"State": state, "Status": status}) in ("healthy", "running")
            if config_hash != expected[service] or image != release.pins[service] or not healthy:
                return True, False
    return True, True


def _reachable(host: Host) -> bool:
    try:
        return host.run("true", check=False, timeout=10).ok
    except OpsError:
        return False


def _audit(env: Environment, action: str, version: str, reports: list[HostReport], hosts: list[Host]) -> None:
    """One audit line per host report, on its host (all hosts at once) or, when unreachable, locally."""
    by_name = {host.name: host for host in hosts}

    def record(report: HostReport) -> None:
        line = audit.AuditRecord(
            action=action,
            environment=env.name,
            host=report.host,
            result=report.result,
            who=operator(),
            release=report.release,
            version=version,
            duration_s=round(report.seconds, 2),
            detail=report.error,
        )
        try:
            audit.append(by_name[report.host], env.project, line, env.redact, env.root)
        except OpsError:
            audit.append_local(env.root, env.name, line.line(env.redact))

    with ThreadPoolExecutor(max_workers=max(1, min(env.parallel, len(reports)))) as pool:
        list(pool.map(record, reports))


def _batches(hosts: list[Host], size: int) -> list[list[Host]]:
    size = size if size > 0 else len(hosts)
    return [hosts[index : index + size] for index in range(0, len(hosts), size)]


def _run_batches(
    env: Environment,
    fleet: Fleet,
    batch: int,
    work: Callable[[Host], HostReport],
    reporter: Reporter,
) -> list[HostReport]:
    reports: list[HostReport] = []
    batches = _batches(fleet.hosts, batch)
    for number, hosts in enumerate(batches):
        outcome = Fleet(hosts, env.parallel).map(work)
        for item in outcome.outcomes:
            if item.value is not None:
                reports.append(item.value)
            else:
                message = item.error.one_line() if item.error else "failed"
                reporter.step(item.host, "deploy", FAILED, message)
                reports.append(HostReport(item.host, "failed", error=message, seconds=item.seconds))
        if any(report.result not in SUCCEEDED for report in reports) and number < len(batches) - 1:
            for later in batches[number + 1 :]:
                for host in later:
                    reporter.step(host.name, "deploy", SKIPPED, "an earlier batch failed: left on its release")
                    reports.append(HostReport(host.name, "skipped"))
            break
    return reports


def deploy(env: Environment, reporter: Reporter, options: DeployOptions) -> DeployResult:
    """Deploy options.version of the environment's stack to its hosts."""
    started = time.monotonic()
    result = DeployResult("deploy", env.name, options.version)
    with Fleet.connect(env, only=options.hosts) as fleet:
        # The SSH handshakes run while the stack is checked (and built) here; no host changes
        # before the stack passed.
        with ThreadPoolExecutor(max_workers=1) as background:
            opening = background.submit(fleet.open_connections)
            try:
                prepared = prepare(env, reporter, options.version, build=not options.dry_run)
            finally:
                opening.result()
        if options.dry_run:
            result.hosts = [_plan(host, env, prepared, reporter) for host in fleet.hosts]
            return result
        with held(fleet, env.project, options.reason or f"deploy {options.version}", reporter, wait=options.lock_wait):
            result.hosts = _run_batches(
                env,
                fleet,
                options.batch,
                lambda host: deploy_host(host, env, prepared, options.version, reporter),
                reporter,
            )
            _audit(env, "deploy", options.version, result.hosts, fleet.hosts)
    result.seconds = time.monotonic() - started
    return result


def _plan(host: Host, env: Environment, prepared: Prepared, reporter: Reporter) -> HostReport:
    from ops.host.lock import read_lock

    store = ReleaseStore(host, env.project)
    current = store.current_id() or "none"
    holder = read_lock(host, env.project)
    if holder:
        reporter.step(host.name, "lock", FAILED, holder.describe())
    present = host_image_ids(host, prepared.refs)
    wanted = sorted(service for service in prepared.refs if service not in present)
    reporter.step(host.name, "images", WOULD_CHANGE if wanted else OK, f"would bring: {', '.join(wanted) or 'nothing'}")
    reporter.step(host.name, "release", WOULD_CHANGE, f"would write a new release (current: {current}) and compose up")
    return HostReport(host.name, "planned", previous=current)


def rollback(
    env: Environment, reporter: Reporter, *, to: str | None = None, hosts: list[str] | None = None, lock_wait: float = 0
) -> DeployResult:
    """Go back to the previous (or named) release with its own compose files, env and images."""
    started = time.monotonic()
    result = DeployResult("rollback", env.name, to or "previous")
    timeout = env.deploy.health_timeout

    def one(host: Host) -> HostReport:
        begun = time.monotonic()
        store = ReleaseStore(host, env.project)
        releases = store.list()
        current_id = store.current_id()
        target = _rollback_target(releases, current_id, to, host)
        report = HostReport(host.name, "failed", target.id, current_id or "")
        try:
            _run_release(host, env, store, target, timeout, reporter)
        except (HealthGateError, HostError) as error:
            report.error = error.one_line()
            report.failing = getattr(error, "service", None)
            current = store.get(current_id) if current_id else None
            outcome = _restore(host, env, store, current, timeout, reporter)
            report.result = "failed" if outcome == "failed" else "rolled-back"
            report.seconds = time.monotonic() - begun
            return report
        store.activate(target)
        reporter.step(host.name, "current", CHANGED, f"-> {target.id}")
        report.result = "deployed"
        report.seconds = time.monotonic() - begun
        return report

    reason = f"rollback to {to or 'previous'}"
    with Fleet.connect(env, only=hosts) as fleet, held(fleet, env.project, reason, reporter, wait=lock_wait):
        result.hosts = _run_batches(env, fleet, 0, one, reporter)
        _audit(env, "rollback", to or "previous", result.hosts, fleet.hosts)
    result.seconds = time.monotonic() - started
    return result


def _rollback_target(releases: list[Release], current_id: str | None, to: str | None, host: Host) -> Release:
    """The named release (id, id prefix or version; the newest match), else the one before current."""
    usable = [release for release in releases if release.status != "failed" and release.pins]
    if to:
        matches = [r for r in releases if r.id == to or r.id.startswith(to) or r.version == to]
        if not matches:
            kept = ", ".join(f"{release.id} ({release.version})" for release in usable) or "none"
            raise DeployError(f"no release {to!r}", where=host.name, hint=f"kept: {kept}")
        if matches[-1] not in usable:
            raise DeployError(f"release {matches[-1].id} failed its gate; refusing to roll back to it", where=host.name)
        return matches[-1]
    older = [release for release in usable if current_id is None or release.id < current_id]
    if not older:
        raise DeployError("no earlier release to roll back to", where=host.name, hint="see inv releases")
    current = next((release for release in releases if release.id == current_id), None)
    # A release the same as the current one is no place to roll back to: skip identical ones.
    different = [r for r in older if current is None or (r.version, r.images) != (current.version, current.images)]
    if not different:
        raise DeployError(
            "every earlier release runs the same version and images as the current one",
            where=host.name,
            hint="name one with --to (see inv releases), or deploy the version you want",
        )
    return different[-1]


def swap(
    env: Environment,
    reporter: Reporter,
    service: str,
    *,
    version: str | None = None,
    image: str | None = None,
    timeout: float | None = None,
    drain: float | None = None,
    hosts: list[str] | None = None,
    batch: int = 0,
    lock_wait: float = 0,
) -> DeployResult:
    """Swap one service blue-green on every host (in batches) to a new version or image."""
    from ops.deploy.swap import swap_to_image

    if bool(version) == bool(image):
        raise DeployError("give exactly one of --version and --image")
    started = time.monotonic()
    result = DeployResult("swap", env.name, version or image or "")
    prepared = prepare(env, reporter, version) if version else None
    if prepared is not None:
        spec = prepared.stack.service(service)
        if spec.container_name or spec.published_ports:
            raise DeployError(
                f"service {service} has a container_name or published ports: two cannot run side by side",
                hint="publish through a proxy service and drop container_name",
            )
        target = prepared.refs[service]
    else:
        target = str(image)
    gate_timeout = timeout or env.deploy.health_timeout
    drain_s = drain if drain is not None else env.deploy.swap_drain

    def one(host: Host) -> HostReport:
        begun = time.monotonic()
        if prepared is not None:
            store = ReleaseStore(host, env.project)
            current = store.get(store.current_id() or "")
            if current is None:
                raise DeployError("no current release on this host", where=host.name, hint="run inv deploy first")
            _bring_images(host, env, _only(prepared, service), store, current, reporter)
        else:
            _send_if_missing(host, target, reporter)
        swapped = swap_to_image(
            host,
            env.project,
            service,
            target,
            version=version,
            timeout=gate_timeout,
            drain=drain_s,
            grace=10,
            reporter=reporter,
        )
        outcome = "deployed" if swapped.result in ("swapped", "unchanged") else "failed"
        return HostReport(
            host.name, outcome, error=swapped.error, failing=swapped.failing, seconds=time.monotonic() - begun
        )

    reason = f"swap {service} to {version or image}"
    with Fleet.connect(env, only=hosts) as fleet, held(fleet, env.project, reason, reporter, wait=lock_wait):
        result.hosts = _run_batches(env, fleet, batch, one, reporter)
        _audit(env, f"swap {service}", version or str(image), result.hosts, fleet.hosts)
    result.seconds = time.monotonic() - started
    return result


def _send_if_missing(host: Host, image: str, reporter: Reporter) -> None:
    """An --image the host lacks is sent from this machine's engine when it has it."""
    import docker

    if host.run(f"docker image inspect {shlex.quote(image)}", check=False).ok:
        return
    try:
        _local_engine().images.get(image)
    except docker.errors.DockerException:
        raise DeployError(
            f"image {image} is neither on the host nor on this machine",
            where=host.name,
            hint="build it, or use --version",
        ) from None
    sent = send_images(host, _local_engine(), [image], on_bytes=reporter.transfer(host.name, f"sending {image}"))
    reporter.step(host.name, "images", CHANGED, f"sent {image} ({sent / 1e6:.0f} MB)")


def _only(prepared: Prepared, service: str) -> Prepared:
    local = {service: prepared.local_ids[service]} if service in prepared.local_ids else {}
    return replace(prepared, refs={service: prepared.refs[service]}, local_ids=local)
