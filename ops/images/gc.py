"""Garbage in the local registry: which manifests no kept release pins (a pure choice from the
pins read on every host and the registry's listing), deleting them, and the registry's own
garbage-collect that then frees their blobs.

Nothing here reads a host or takes a lock: the caller (ops.deploy.gc) does, and must hold every
deploy lock of the hosts that push here while apply_plan runs. A digest any kept release pins is
never chosen, and when any host's pins are unknown nothing is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ops.console import CHANGED, OK, WOULD_CHANGE, Reporter
from ops.errors import RegistryError
from ops.images.local_registry import DATA_DIR, DIGEST, LocalRegistry
from ops.images.registry_api import INDEX_TYPES, RegistryApi

if TYPE_CHECKING:
    import docker

CONFIG_PATH = "/etc/docker/registry/config.yml"  # where the registry image's Dockerfile puts it
_ELIGIBLE = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")


@dataclass(frozen=True)
class Manifest:
    """A manifest in the registry: its repository, digest, the tags naming it and its media type."""

    repository: str
    digest: str
    tags: tuple[str, ...] = ()
    media_type: str = ""

    def ref(self, address: str) -> str:
        return f"{address}/{self.repository}@{self.digest}"

    def local_names(self, address: str) -> list[str]:
        """The names a push leaves on this machine's engine for it: `address/repository:tag` and
        the repository digest `address/repository@sha256:...`."""
        return [*(f"{address}/{self.repository}:{tag}" for tag in self.tags), self.ref(address)]


@dataclass(frozen=True)
class HostPins:
    """What the kept releases of one project on one host pin (their release.json `digests`
    refs), or why that is unknown (error)."""

    host: str
    project: str
    releases: int = 0
    refs: frozenset[str] = frozenset()
    error: str | None = None

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(digest for ref in self.refs if DIGEST.match(digest := ref.rpartition("@")[2]))


@dataclass(frozen=True)
class GcPlan:
    """What a collection keeps and deletes. `unknown` hosts mean nothing is deleted at all."""

    keep: tuple[Manifest, ...]
    delete: tuple[Manifest, ...]
    pinned: frozenset[str]
    unknown: tuple[HostPins, ...] = ()
    delete_untagged: bool = False


def select_garbage(pins: Sequence[HostPins], listing: Iterable[Manifest]) -> GcPlan:
    """The manifests to delete: those whose digest no kept release on any host pins.

    A digest is protected in every repository whatever registry address the release names (a
    digest is the content: keeping one more manifest costs nothing, deleting a pinned one would
    break a host that still needs to pull it). When any host's pins are unknown (unreachable),
    nothing is deleted.

    `delete_untagged` says whether garbage-collect may also drop manifests that no tag names (the
    tag listing cannot see those, so only that flag frees them): only when every pinned digest was
    seen through a tag (a pinned manifest whose tag moved would be dropped) and there is no index
    (garbage-collect --delete-untagged in Distribution 2.8 drops an index's untagged children).
    """
    manifests = sorted(listing, key=lambda m: (m.repository, m.digest))
    pinned = frozenset().union(*(host.digests for host in pins))
    unknown = tuple(host for host in pins if host.error is not None)
    if unknown:
        return GcPlan(tuple(manifests), (), pinned, unknown)
    keep = tuple(m for m in manifests if m.digest in pinned)
    delete = tuple(m for m in manifests if m.digest not in pinned)
    tagged = {m.digest for m in manifests if m.tags}
    untagged_ok = pinned <= tagged and not any(m.media_type in INDEX_TYPES for m in manifests)
    return GcPlan(keep, delete, pinned, (), untagged_ok)


@dataclass
class GcResult:
    """What a collection did (or, with dry_run, would do)."""

    registry: str  # 127.0.0.1:PORT
    dry_run: bool
    hosts: list[HostPins] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # refs
    deleted: list[str] = field(default_factory=list)  # refs (dry run: would be deleted)
    local_names: list[str] = field(default_factory=list)  # removed from this engine (dry run: would be)
    bytes_before: int | None = None
    bytes_after: int | None = None
    blobs_deleted: int = 0
    delete_untagged: bool = False
    seconds: float = 0.0
    note: str = ""

    @property
    def bytes_freed(self) -> int | None:
        if self.bytes_before is None or self.bytes_after is None:
            return None
        return max(0, self.bytes_before - self.bytes_after)

    @property
    def releases(self) -> int:
        return sum(host.releases for host in self.hosts)

    def as_dict(self) -> dict[str, object]:
        return {
            "registry": self.registry,
            "dry_run": self.dry_run,
            "hosts": [
                {"host": h.host, "project": h.project, "releases": h.releases, "digests": sorted(h.digests)}
                for h in self.hosts
            ],
            "manifests_kept": self.kept,
            "manifests_deleted": self.deleted,
            "local_names_removed": self.local_names,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "bytes_freed": self.bytes_freed,
            "blobs_deleted": self.blobs_deleted,
            "delete_untagged": self.delete_untagged,
            "seconds": round(self.seconds, 2),
            "note": self.note,
        }


# ---------------------------------------------------------------- reading the registry


def read_listing(api: RegistryApi) -> list[Manifest]:
    """Every tagged manifest of every repository, one entry per (repository, digest)."""
    found: dict[tuple[str, str], Manifest] = {}
    for repository in api.repositories():
        for tag in api.tags(repository):
            head = api.manifest(repository, tag)
            if head is None:  # the tag went between the listing and the HEAD
                continue
            key = (repository, head.digest)
            before = found.get(key)
            tags = (*before.tags, tag) if before else (tag,)
            found[key] = Manifest(repository, head.digest, tags, head.media_type.split(";")[0].strip())
    return sorted(found.values(), key=lambda m: (m.repository, m.digest))


def registry_container(registry: LocalRegistry, client: docker.DockerClient) -> Any | None:
    """The registry's container, or None when this checkout never had one."""
    import docker

    try:
        return client.containers.get(registry.container)
    except docker.errors.NotFound:
        return None


def volume_bytes(container: Any) -> int:
    """Bytes the registry's storage takes on disk (`du` inside its container)."""
    code, output = container.exec_run(["du", "-s", "-B1", DATA_DIR])
    text = output.decode(errors="replace").strip() if isinstance(output, bytes) else str(output)
    try:
        return int(text.split()[0]) if code == 0 else _du_failed(text)
    except (IndexError, ValueError):
        return _du_failed(text)


def _du_failed(text: str) -> int:
    raise RegistryError(f"could not measure the registry's storage: {text[:200] or 'no output'}")


# ---------------------------------------------------------------- applying a plan


def run_garbage_collect(container: Any, *, delete_untagged: bool) -> int:
    """The registry's own garbage-collect in its container; the number of blobs it deleted.

    Only safe while nothing pushes: a blob uploaded but not yet named by a manifest looks like
    garbage to it. The caller holds the deploy locks, and deploys push only while holding theirs.
    """
    command = ["docker-registry", "garbage-collect", CONFIG_PATH]
    if delete_untagged:
        command.append("--delete-untagged")
    code, output = container.exec_run(command)
    text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    if code != 0:
        last = [line for line in text.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise RegistryError(
            f"docker-registry garbage-collect failed (exit {code}): {last[0][:200]}",
            where=container.name,
            hint="the unpinned manifests are already deleted; run images.gc again to free their blobs",
        )
    match = _ELIGIBLE.search(text)
    return int(match.group(2)) if match else 0


def restart(registry: LocalRegistry, container: Any, api: RegistryApi, timeout: float = 30) -> None:
    """Restart the registry and wait until it answers again: it caches blob descriptors in memory
    (`blobdescriptor: inmemory`) and, after a collection, would otherwise tell a later push that a
    collected layer "already exists" (distribution#1803), leaving manifests that point at nothing."""
    container.restart(timeout=10)
    deadline = time.monotonic() + timeout
    while not api.answers():
        if time.monotonic() > deadline:
            raise RegistryError(
                f"the registry did not answer within {timeout:.0f} s of its restart after garbage-collect",
                where=registry.container,
                hint=f"see `docker logs {registry.container}`; run ensure_registry (any deploy does) to start it",
            )
        time.sleep(0.2)


def remove_local_names(client: docker.DockerClient, names: Iterable[str], *, dry_run: bool) -> list[str]:
    """Remove (or, dry run, list) those of names this engine has; an image a container uses keeps
    its name (the engine refuses, which is the safety wanted)."""
    import docker

    removed = []
    for name in sorted(set(names)):
        try:
            if dry_run:
                client.images.get(name)
            else:
                client.images.remove(name)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError:
            continue  # in use: the engine keeps it
        removed.append(name)
    return removed


def apply_plan(
    registry: LocalRegistry,
    plan: GcPlan,
    container: Any,
    reporter: Reporter,
    *,
    client: docker.DockerClient,
    api: RegistryApi | None = None,
    dry_run: bool = False,
) -> GcResult:
    """Delete the plan's manifests, free their blobs, remove their names on this engine; the result.

    The caller holds the deploy locks (see run_garbage_collect). The registry is restarted after
    its garbage-collect (see restart).
    """
    if plan.unknown:
        raise RegistryError("a plan with unknown hosts deletes nothing", hint="read every host first")
    api = api or RegistryApi(registry.url)
    started = time.monotonic()
    result = GcResult(
        registry.address,
        dry_run,
        kept=[m.ref(registry.address) for m in plan.keep],
        deleted=[m.ref(registry.address) for m in plan.delete],
        delete_untagged=plan.delete_untagged,
    )
    result.bytes_before = volume_bytes(container)
    names = [name for m in plan.delete for name in m.local_names(registry.address)]
    if dry_run:
        result.local_names = remove_local_names(client, names, dry_run=True)
        for ref in result.deleted:
            reporter.step("local", "registry gc", WOULD_CHANGE, f"would delete {ref}")
        result.seconds = time.monotonic() - started
        return result
    for manifest in plan.delete:
        api.delete_manifest(manifest.repository, manifest.digest)
        reporter.step("local", "registry gc", CHANGED, f"deleted {manifest.ref(registry.address)}")
    # Run even with no manifest to delete: blobs of an interrupted push are garbage too.
    try:
        result.blobs_deleted = run_garbage_collect(container, delete_untagged=plan.delete_untagged)
    finally:
        restart(registry, container, api)
    status = CHANGED if result.blobs_deleted else OK
    reporter.step("local", "registry gc", status, f"garbage-collect deleted {result.blobs_deleted} blobs")
    result.bytes_after = volume_bytes(container)
    result.local_names = remove_local_names(client, names, dry_run=False)
    result.seconds = time.monotonic() - started
    return result
