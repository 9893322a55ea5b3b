"""The compose orchestrator: on one host, deploy a prepared release with `docker compose`, converge
a release that is already current, and roll back to a kept one.

Order on a host: write the release directory, bring the images (the image delivery), pin them,
`compose up` (running swappable services swapped blue-green first), gate on health, switch
`current`, prune. A host whose release fails its gate is put back on its previous release before
the error is reported. Never touches volumes; never takes the lock (the rollout holds it).
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Reporter
from ops.deploy.health import health_timeout, project_containers, summary_state, wait_healthy
from ops.deploy.orchestrator import HostDeployReport
from ops.deploy.prepare import Prepared
from ops.deploy.releases import (
    OVERRIDE_FILE,
    Release,
    ReleaseStore,
    new_release_id,
    override_yaml,
    pin_tag,
    prune,
    rollback_target,
)
from ops.deploy.swap import swap_service
from ops.errors import ConnectionLost, DeployError, HealthGateError, HostError, OpsError, connection_failure
from ops.host.labels import CONFIG_HASH_LABEL, PROJECT_LABEL, SERVICE_LABEL
from ops.host.lock import operator, read_lock
from ops.images import Delivered, ImageDelivery, delivery_for, host_image_ids
from ops.transport import Host


class ComposeOrchestrator:
    """Releases run by `docker compose` on each host (implements ops.deploy.orchestrator.Orchestrator).

    The image delivery, clocks and sleep are the real ones unless a caller (a test) passes its own."""

    def __init__(
        self,
        env: Environment,
        reporter: Reporter,
        *,
        delivery: ImageDelivery | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.env = env
        self.reporter = reporter
        self.delivery = delivery or delivery_for(env)
        self.clock = clock  # durations and the health gate's deadline
        self.sleep = sleep
        self.now = now  # release ids and their creation time

    def current(self, host: Host) -> Release | None:
        return ReleaseStore(host, self.env.project).current()

    def deploy_host(self, host: Host, prepared: Prepared) -> HostDeployReport:
        env, reporter = self.env, self.reporter
        started = self.clock()
        store = ReleaseStore(host, env.project)
        previous = store.current()
        previous_id = previous.id if previous else None
        timeout = health_timeout(env, prepared.stack)
        if previous is not None and previous.status == "active" and previous.content == prepared.content:
            converged = self._converge_unchanged(host, prepared, store, previous, timeout)
            if converged is not None:
                converged.seconds = self.clock() - started
                return converged
        made = self.now()
        release = Release(
            id=new_release_id(prepared.version, made),
            version=prepared.version,
            git_commit=prepared.git_commit,
            who=operator(),
            created=made.isoformat(timespec="seconds"),
            compose_files=prepared.stack.compose_files,
            swappable=tuple(sorted(name for name, service in prepared.stack.services.items() if service.swappable)),
            content=prepared.content,
        )
        report = HostDeployReport(host.name, "failed", release.id, previous_id or "")
        try:
            _write_release(host, store, release, prepared)
        except HostError as error:
            if not _reachable(host):
                raise host_gone(host, "writing the release", error) from None
            raise
        reporter.step(host.name, "release", CHANGED, f"wrote {store.path(release.id)}")
        stage = "bringing the images"
        try:
            delivered = self._bring_images(host, prepared, store, release)
            report.images_sent = delivered.sent
            stage = "pinning the images"
            release = _pin(host, release, prepared.refs, delivered, env.project)
            store.write_metadata(release)
            stage = "compose up and the health gate"
            self._run_release(host, store, release, timeout)
        except (HealthGateError, HostError, DeployError) as error:
            if isinstance(error, HostError) and not _reachable(host):
                # the host is gone; nothing can be restored on it now
                raise host_gone(host, stage, error) from None
            reporter.step(host.name, "deploy", FAILED, error.line_for(host.name))
            store.write_metadata(release.with_status("failed"))
            report.error = error.line_for(host.name)
            report.failing = getattr(error, "service", None)
            report.result = self._restore(host, store, previous, timeout)
            report.seconds = self.clock() - started
            return report
        store.activate(release)
        reporter.step(host.name, "current", CHANGED, f"-> {release.id}")
        prune(store, env.deploy.keep_releases, reporter)
        report.result = "deployed"
        report.seconds = self.clock() - started
        return report

    def plan_host(self, host: Host, prepared: Prepared) -> HostDeployReport:
        reporter = self.reporter
        store = ReleaseStore(host, self.env.project)
        current = store.current_id() or "none"
        holder = read_lock(host, self.env.project)
        if holder:
            reporter.step(host.name, "lock", FAILED, holder.describe())
        present = host_image_ids(host, prepared.refs)
        wanted = sorted(service for service in prepared.refs if service not in present)
        reporter.step(
            host.name, "images", WOULD_CHANGE if wanted else OK, f"would bring: {', '.join(wanted) or 'nothing'}"
        )
        reporter.step(
            host.name, "release", WOULD_CHANGE, f"would write a new release (current: {current}) and compose up"
        )
        return HostDeployReport(host.name, "planned", previous=current)

    def rollback_host(self, host: Host, to: str | None) -> HostDeployReport:
        """Go back to the previous (or named) release with its own compose files, env and images."""
        begun = self.clock()
        timeout = self.env.deploy.health_timeout
        store = ReleaseStore(host, self.env.project)
        releases = store.list()
        current_id = store.current_id()
        target = rollback_target(releases, current_id, to, host)
        report = HostDeployReport(host.name, "failed", target.id, current_id or "")
        try:
            self._run_release(host, store, target, timeout)
        except (HealthGateError, HostError) as error:
            if isinstance(error, HostError) and not _reachable(host):
                raise host_gone(host, f"going back to {target.id}", error) from None
            self.reporter.step(host.name, "rollback", FAILED, error.line_for(host.name))
            report.error = error.line_for(host.name)
            report.failing = getattr(error, "service", None)
            current = store.get(current_id) if current_id else None
            outcome = self._restore(host, store, current, timeout)
            report.result = "failed" if outcome == "failed" else "rolled-back"
            report.seconds = self.clock() - begun
            return report
        store.activate(target)
        self.reporter.step(host.name, "current", CHANGED, f"-> {target.id}")
        report.result = "deployed"
        report.seconds = self.clock() - begun
        return report

    def _bring_images(self, host: Host, prepared: Prepared, store: ReleaseStore, release: Release) -> Delivered:
        """Every service's image present on the host, by the environment's image delivery."""
        images = prepared.images(lambda args: store.compose_command(release, args))
        return self.delivery.bring(host, images, self.reporter)

    def _gate(self, host: Host, release: Release, timeout: float) -> None:
        started = self.clock()
        wait_healthy(host, self.env.project, list(release.pins), timeout=timeout, clock=self.clock, sleep=self.sleep)
        self.reporter.step(
            host.name, "health gate", OK, f"{len(release.pins)} services healthy in {self.clock() - started:.1f} s"
        )

    def _run_release(self, host: Host, store: ReleaseStore, release: Release, timeout: float) -> None:
        """compose up the release; running swappable services are swapped blue-green first.

        Every `compose up` here names its services without `--no-deps`: Compose (2.26) hashes a
        service's config without its depends_on under `--no-deps`, so mixing the two modes recreates
        the dependents (the proxy) on the next plain `up`. Swapping first and then one plain `up -d`
        leaves every container as a plain `docker compose up -d` of the release would: a later
        manual `up` changes nothing."""
        env, reporter = self.env, self.reporter
        to_swap = sorted(set(release.swappable) & _running_services(host, env.project))
        drain = env.deploy.swap_drain
        for service in to_swap:
            report = swap_service(
                host,
                store,
                release,
                service,
                timeout=timeout,
                drain=drain,
                reporter=reporter,
                clock=self.clock,
                sleep=self.sleep,
            )
            if report.result == "failed":
                error = HealthGateError(report.error, where=host.name)
                error.service = report.failing
                raise error
        store.write_override(release)
        host.run(store.compose_command(release, "up -d --no-build --remove-orphans --quiet-pull"), timeout=600)
        swapped = f" (swapped {', '.join(to_swap)} blue-green)" if to_swap else ""
        reporter.step(host.name, "compose up", CHANGED, f"{release.id}{swapped}")
        self._gate(host, release, timeout)

    def _restore(self, host: Host, store: ReleaseStore, previous: Release | None, timeout: float) -> str:
        """Put the host back on its previous release after a failed one; returns the outcome."""
        reporter = self.reporter
        if previous is None:
            reporter.step(host.name, "restore", SKIPPED, "no previous release to go back to")
            return "failed"
        try:
            self._run_release(host, store, previous, timeout)
            store.activate(previous)
        except OpsError as error:
            reporter.step(host.name, "restore", FAILED, error.line_for(host.name))
            return "failed"
        reporter.step(host.name, "restore", CHANGED, f"back on {previous.id}")
        return "rolled-back"

    def _converge_unchanged(
        self, host: Host, prepared: Prepared, store: ReleaseStore, current: Release, timeout: float
    ) -> HostDeployReport | None:
        """The host's current release already is this one (same files, .env and image IDs): no new
        release directory. When every container already runs it as compose would, nothing is done;
        otherwise the images are brought, `compose up` converges what drifted, and the gate runs.
        None when the images turn out to differ (a new release is needed after all)."""
        reporter = self.reporter
        report = HostDeployReport(host.name, "failed", current.id, current.id)
        # Images built here (sending): the release recorded the IDs of the images this machine has
        # now; the host is asked for its images only when something drifted.
        known = bool(prepared.local_ids) and prepared.local_ids == current.images
        if not known:
            delivered = self._bring_images(host, prepared, store, current)
            report.images_sent = delivered.sent
            if delivered.ids != current.images:
                return None
        files_match, in_sync = _current_state(host, store, current, prepared)
        if not files_match:
            reporter.step(
                host.name, "release", CHANGED, f"{current.id} was edited on the host: a new release replaces it"
            )
            return None
        reporter.step(host.name, "release", OK, f"unchanged: {current.id} has the same files, .env and images")
        if in_sync:
            reporter.step(host.name, "compose up", OK, "every container runs this release as compose would, healthy")
            report.result = "unchanged"
            return report
        if known:
            report.images_sent = self._bring_images(host, prepared, store, current).sent
        try:
            self._run_release(host, store, current, timeout)
        except (HealthGateError, HostError, DeployError) as error:
            if isinstance(error, HostError) and not _reachable(host):
                raise host_gone(host, "converging the current release", error) from None
            reporter.step(host.name, "deploy", FAILED, error.line_for(host.name))
            report.error = error.line_for(host.name)
            report.failing = getattr(error, "service", None)
            return report
        report.result = "unchanged"
        return report


def _write_release(host: Host, store: ReleaseStore, release: Release, prepared: Prepared) -> None:
    """The release's files and .env, unpacked on the host from stdin in one round trip."""
    path = shlex.quote(store.path(release.id))
    host.run(f"mkdir -p {path} && tar -xzf - -C {path} --no-same-owner", stdin=prepared.archive)


def _pin(host: Host, release: Release, refs: dict[str, str], delivered: Delivered, project: str) -> Release:
    ids = delivered.ids
    pins = {service: pin_tag(project, service, ids[service].split(":")[-1][:12]) for service in refs}
    script = " && ".join(f"docker tag {shlex.quote(ids[s])} {shlex.quote(pins[s])}" for s in sorted(refs))
    host.run(script)
    return Release(**{**release.__dict__, "images": ids, "pins": pins, "digests": dict(delivered.digests)})


def _running_services(host: Host, project: str) -> set[str]:
    running = [summary for summary in project_containers(host, project) if summary.get("State") == "running"]
    return {(summary.get("Labels") or {}).get(SERVICE_LABEL, "") for summary in running}


def host_gone(host: Host, stage: str, error: HostError) -> ConnectionLost:
    """The error of a host that stopped answering while stage was under way, as a sentence."""
    return connection_failure(stage, error, where=host.name)


def _reachable(host: Host) -> bool:
    try:
        return host.run("true", check=False, timeout=10).ok
    except OpsError:
        return False


# `docker ps --format` fields: service, config hash, image, state, status (tab-separated).
_CONTAINER_FIELDS = "\t".join(
    (
        f'{{{{.Label "{SERVICE_LABEL}"}}}}',
        f'{{{{.Label "{CONFIG_HASH_LABEL}"}}}}',
        "{{.Image}}",
        "{{.State}}",
        "{{.Status}}",
    )
)


def _current_state(host: Host, store: ReleaseStore, release: Release, prepared: Prepared) -> tuple[bool, bool]:
    """(files_match, in_sync) of the host's current release, in one round trip, no Docker SDK.

    files_match: the release directory holds exactly the files this deploy would write and the
    override pinning its images (nobody edited them on the host).
    in_sync: `compose up -d` of the release would change nothing and its gate would pass: each
    service has its number of running, healthy containers, made from the pinned image with the
    config hash compose computes for the release (compose's own test for recreating), and no
    container of a service the release lacks."""
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
