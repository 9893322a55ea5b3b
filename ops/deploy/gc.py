"""Collecting the local registry's garbage (`inv images.gc`): read what the kept releases on every
host pin, under the deploy lock of every host that pushes to this checkout's registry, and let
ops.images.gc delete every manifest none of them pins, then free the blobs.

A host whose releases cannot be read means nothing is deleted: what it pins is unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ops.config import Environment, HostSpec, env_files, load_environment
from ops.console import FAILED, OK, Reporter
from ops.deploy.releases import ReleaseStore
from ops.errors import ConfigError, HostError, OpsError
from ops.host import audit
from ops.host.lock import held, operator
from ops.images.gc import GcResult, HostPins, apply_plan, read_listing, registry_container, select_garbage
from ops.images.local_registry import LocalRegistry, ensure_registry
from ops.images.registry_api import RegistryApi
from ops.transport import Fleet, Host
from ops.transport.docker import local_client
from ops.transport.runner import Runner

if TYPE_CHECKING:
    import docker

LOCK_REASON = "images.gc: collecting the local registry's garbage"


def registry_environments(env: Environment, environ: Mapping[str, str]) -> list[Environment]:
    """env and every other environment of its checkout that delivers images through the same
    local registry (IMAGE_SOURCE=registry): their kept releases pin its manifests too."""
    found = [env]
    for name in env_files(env.root):
        if name == env.name:
            continue
        try:
            other = load_environment(name, env.root, environ)
        except ConfigError as error:
            raise ConfigError(
                f"environment {name} could not be loaded ({error.message}): what its releases pin is unknown,"
                " so nothing was deleted",
                where=error.where,
                hint=error.hint,
            ) from None
        if other.deploy.image_source == "registry":
            found.append(other)
    return found


@dataclass(frozen=True)
class ProjectHosts:
    """The hosts one project is deployed to, each once, across the environments read."""

    project: str
    fleet: Fleet


def project_hosts(fleets: Sequence[tuple[Environment, Fleet]]) -> list[ProjectHosts]:
    """Per project (in name order: the locks are taken in a fixed order), its distinct hosts."""
    by_project: dict[str, dict[tuple[str, int], Host]] = {}
    parallel = max((env.parallel for env, _ in fleets), default=1)
    for env, fleet in fleets:
        hosts = by_project.setdefault(env.project, {})
        for host in fleet.hosts:
            hosts.setdefault((host.spec.address, host.spec.port), host)
    return [
        ProjectHosts(project, Fleet(list(hosts.values()), parallel)) for project, hosts in sorted(by_project.items())
    ]


def read_pins(targets: Sequence[ProjectHosts], reporter: Reporter) -> list[HostPins]:
    """What the kept releases pin on every host (all hosts at once); an unreadable host is a
    HostPins with its error, never an empty set of pins."""
    pins: list[HostPins] = []
    for target in targets:

        def read(host: Host, project: str = target.project) -> HostPins:
            releases = ReleaseStore(host, project).list()
            refs = frozenset(ref for release in releases for ref in release.digests.values())
            return HostPins(host.name, project, len(releases), refs)

        for outcome in target.fleet.map(read).outcomes:
            if outcome.value is not None:
                found = outcome.value
                detail = f"{found.releases} kept releases of {found.project} pin {len(found.digests)} digests"
                reporter.step(found.host, "kept releases", OK, detail)
                pins.append(found)
            else:
                message = outcome.error.message if outcome.error else "failed"
                reporter.step(outcome.host, "kept releases", FAILED, message)
                pins.append(HostPins(outcome.host, target.project, error=message))
    return pins


@contextmanager
def _locked(targets: Sequence[ProjectHosts], reporter: Reporter) -> Iterator[None]:
    """Every project's deploy lock on all its hosts. garbage-collect is only safe while nothing
    pushes (a blob uploaded but not yet named by a manifest looks like garbage), and deploys and
    swaps push only while holding this lock; it also keeps a deploy from pinning, meanwhile, a
    manifest this collection is about to delete."""
    with ExitStack() as stack:
        for target in targets:
            try:
                stack.enter_context(held(target.fleet, target.project, LOCK_REASON, reporter))
            except HostError as error:
                raise HostError(
                    f"cannot take the deploy lock ({error.message}): its kept releases are unknown, so nothing"
                    " was deleted",
                    where=error.where,
                    hint="bring the host back or take it out of HOSTS, then run images.gc again",
                ) from None
        yield


def collect_garbage(
    environments: Sequence[Environment],
    reporter: Reporter,
    *,
    dry_run: bool = False,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
    client: docker.DockerClient | None = None,
    api: RegistryApi | None = None,
) -> GcResult:
    """Delete from the checkout's registry every manifest no kept release of these environments
    pins, free the blobs, and remove the local tags push_image left for them; with dry_run, say
    what would go and delete nothing (and take no lock).

    environments must all be of one checkout (they share its registry): see registry_environments.
    """
    if not environments:
        raise ConfigError("no environment to read kept releases from")
    roots = {env.root.resolve() for env in environments}
    if len(roots) != 1:
        raise ConfigError("environments of different checkouts use different registries", hint="collect one at a time")
    registry = LocalRegistry(environments[0].root)
    started = time.monotonic()
    engine = client or local_client()
    try:
        container = registry_container(registry, engine)
        if container is None:
            return GcResult(registry.address, dry_run, note="this checkout has no local registry: nothing to collect")
        if container.status != "running":
            ensure_registry(registry, reporter, client=engine)
            container = registry_container(registry, engine)
        api = api or RegistryApi(registry.url)
        with ExitStack() as stack:
            fleets = [
                (env, stack.enter_context(Fleet.connect(env, runner_factory=runner_factory))) for env in environments
            ]
            targets = project_hosts(fleets)
            if not dry_run:
                stack.enter_context(_locked(targets, reporter))
            pins = read_pins(targets, reporter)
            plan = select_garbage(pins, read_listing(api))
            if plan.unknown:
                first = plan.unknown[0]
                raise HostError(
                    f"cannot read its kept releases ({first.error}): what they pin is unknown, so nothing was deleted",
                    where=first.host,
                    hint="bring the host back or take it out of HOSTS, then run images.gc again",
                )
            try:
                result = apply_plan(registry, plan, container, reporter, client=engine, api=api, dry_run=dry_run)
            except OpsError as error:
                if not dry_run:
                    record_audit(environments, "failed", error.one_line(), time.monotonic() - started)
                raise
            if not dry_run:
                record_audit(environments, "ok", summary(result), time.monotonic() - started)
    finally:
        if client is None:
            engine.close()
    result.hosts = pins
    result.seconds = time.monotonic() - started
    return result


def summary(result: GcResult) -> str:
    freed = f", {result.bytes_freed} bytes freed" if result.bytes_freed is not None else ""
    return f"registry {result.registry}: {len(result.deleted)} manifests deleted, {len(result.kept)} kept{freed}"


def record_audit(environments: Sequence[Environment], result: str, detail: str, seconds: float) -> None:
    """One line in each environment's local audit log: the registry is this machine's, not a host's."""
    for env in environments:
        record = audit.AuditRecord(
            action="images.gc",
            environment=env.name,
            host="local",
            result=result,
            who=operator(),
            duration_s=round(seconds, 2),
            detail=detail,
        )
        audit.append_local(env.root, env.name, record.line(env.redact))
