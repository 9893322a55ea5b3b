"""IMAGE_SOURCE=registry (the default): the images are built on this machine and pushed to a
registry; each host pulls them by repository digest, so only the layers a host lacks cross the wire.
The registry is this checkout's local one, pulled through a reverse SSH forward of its port on the
host's loopback (LocalRegistryOverSSH, here), or a team registry (ops.images.team_registry); both
are an ImageRegistry that RegistryImages is given. Nothing here writes a release; the digests
pulled are returned.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from ops.console import CHANGED, OK, Reporter
from ops.errors import RegistryError
from ops.images.delivery import Delivered, ReleaseImages, host_image_ids, present_after
from ops.images.local import build_if_changed
from ops.images.local_registry import LocalRegistry, PushedImage, ensure_registry, push_image
from ops.stack.compose import Stack
from ops.transport import Host
from ops.transport.forward import RemoteForward
from ops.transport.shell import q

PULL_TIMEOUT = 1800.0


class ImageRegistry(Protocol):
    """Where RegistryImages pushes the images built here, and how a host pulls them from there."""

    @property
    def address(self) -> str:
        """host[:port] as image references spell it."""
        ...

    push_before_hosts: bool  # push every built image before any host is touched (else: when a host lacks one)

    def repository(self, project: str, service: str) -> str:
        """The repository of one service's image in this registry."""
        ...

    def open(self, reporter: Reporter) -> None:
        """Ready to push: up and answering, logged in. Called once, before the first push."""
        ...

    def push(self, image: str, repository: str, reporter: Reporter) -> PushedImage:
        """Push a local image (name or ID) as repository; its repository digest."""
        ...

    def pull(self, host: Host, pulls: Mapping[str, str], reporter: Reporter) -> int:
        """On the host: pull each `ref@sha256:...` and tag it with its compose name (pulls: ref ->
        name); the bytes the host received, when known (0 otherwise)."""
        ...


def repository_for(project: str, service: str) -> str:
    """The registry repository of one service's image: <project>/<service>, lower-case."""
    return f"{project}/{service}".lower()


def pull_script(pulls: Mapping[str, str]) -> str:
    """Shell commands that pull each ref once and tag it with the compose name (services may share
    one); a ref with no name is only pulled (a swarm runs its images by digest)."""
    script = " && ".join(f"docker pull -q {q(ref)} >/dev/null" for ref in sorted(set(pulls)))
    return script + "".join(f" && docker tag {q(ref)} {q(name)}" for ref, name in sorted(pulls.items()) if name)


class LocalRegistryOverSSH:
    """This checkout's registry (ops.images.local_registry), started on demand; a host pulls from it
    through a reverse SSH forward of its port, up and answering before the first pull."""

    push_before_hosts = False  # a deploy whose hosts have every image never starts the registry

    def __init__(self, root: Path):
        self.registry = LocalRegistry(root)

    @property
    def address(self) -> str:
        return self.registry.address

    def repository(self, project: str, service: str) -> str:
        return repository_for(project, service)

    def open(self, reporter: Reporter) -> None:
        ensure_registry(self.registry, reporter)

    def push(self, image: str, repository: str, reporter: Reporter) -> PushedImage:
        return push_image(self.registry, image, repository, reporter)

    def pull(self, host: Host, pulls: Mapping[str, str], reporter: Reporter) -> int:
        port = self.registry.port
        forward = RemoteForward(host.runner.ssh_client(), port, "127.0.0.1", port, where=host.name)
        with forward, _progress(forward, reporter.transfer(host.name, f"pulling {len(set(pulls))} images")):
            forward.wait_until_answering()
            host.run(pull_script(pulls), timeout=PULL_TIMEOUT)
        return forward.bytes_to_host


class RegistryImages:
    """Build here; push to the registry (once per image and run: before any host is touched, or
    when the first host lacks it, as the registry asks) and let each host pull it by digest."""

    name = "registry"

    def __init__(self, project: str, registry: ImageRegistry):
        self.registry = registry
        self.project = project
        self._pushed: dict[str, PushedImage] = {}  # local image ID -> pushed
        self._registry_open = False
        self._lock = threading.Lock()

    @classmethod
    def local(cls, root: Path, project: str) -> RegistryImages:
        """Through this checkout's own registry over SSH."""
        return cls(project, LocalRegistryOverSSH(root))

    def prepare_locally(
        self, compose_bin: Path, stack: Stack, env_path: Path, stamps: Path, reporter: Reporter
    ) -> dict[str, str]:
        local_ids, built = build_if_changed(compose_bin, stack, env_path, stamps)
        detail = f"{len(local_ids)} images" + ("" if built else ", unchanged since the last build")
        reporter.step("local", "build images", CHANGED if built else OK, detail)
        if self.registry.push_before_hosts:
            self.push(local_ids, reporter)
        return local_ids

    def _open(self, reporter: Reporter) -> None:
        with self._lock:
            if not self._registry_open:
                self.registry.open(reporter)
                self._registry_open = True

    def push(self, images: dict[str, str], reporter: Reporter) -> dict[str, PushedImage]:
        """service -> pushed image, for service -> local image ID; each image pushed once per run."""
        if images:
            self._open(reporter)
        with self._lock:  # hosts bring in parallel: the first one that needs an image pushes it
            for service, image_id in sorted(images.items()):
                if image_id not in self._pushed:
                    repository = self.registry.repository(self.project, service)
                    self._pushed[image_id] = self.registry.push(image_id, repository, reporter)
            return {service: self._pushed[image_id] for service, image_id in images.items()}

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        address = self.registry.address
        present = host_image_ids(host, images.refs)
        missing = sorted(s for s, image_id in images.local_ids.items() if present.get(s) != image_id)
        if not missing:
            reporter.step(host.name, "images", OK, "all present")
            return Delivered(present, digests=host_repo_digests(host, images.refs, address))
        pushed = self.push({s: images.local_ids[s] for s in missing}, reporter)
        pulls = {pushed[s].ref: images.refs[s] for s in missing}
        received = self.registry.pull(host, pulls, reporter)
        names = ", ".join(sorted(set(pulls.values())))
        shown = f" ({received / 1e6:.1f} MB)" if received else f" from {address}"
        reporter.step(host.name, "images", CHANGED, f"pulled {names}{shown}")
        ids = present_after(host, images.refs, self.name)
        return Delivered(ids, received, host_repo_digests(host, images.refs, address))

    def bring_missing(self, host: Host, pins: Mapping[str, str], reporter: Reporter) -> int:
        """Pull the images of service -> `registry/repository@sha256:...` (a release's pins) the host
        lacks: a node that joined, was cleaned, or was down while that release was deployed. How
        many it lacked; RegistryError when one is still missing after the pull."""
        lacking = sorted(set(pins) - set(host_image_ids(host, pins)))
        if not lacking:
            return 0
        self._open(reporter)
        received = self.registry.pull(host, dict.fromkeys(sorted({pins[s] for s in lacking}), ""), reporter)
        shown = f" ({received / 1e6:.1f} MB)" if received else f" from {self.registry.address}"
        count = f"{len(lacking)} missing image" + ("s" if len(lacking) != 1 else "")
        reporter.step(host.name, "images", CHANGED, f"pulled {count} of the release{shown}")
        still = sorted(set(pins) - set(host_image_ids(host, pins)))
        if still:
            raise RegistryError(f"still lacks the images of {', '.join(still)} after pulling them", where=host.name)
        return len(lacking)


def host_repo_digests(host: Host, refs: Mapping[str, str], address: str) -> dict[str, str]:
    """service -> `address/repository@sha256:...` the host's image was pulled by, where it was."""
    if not refs:
        return {}
    names = " ".join(q(ref) for ref in refs.values())
    listing = host.run(f"docker image inspect --format '{{{{json .RepoDigests}}}}' {names} 2>/dev/null; true")
    lines = [line for line in listing.stdout.splitlines() if line.strip()]
    if len(lines) != len(refs):  # an image is missing: no line to match it with
        return {}
    found: dict[str, str] = {}
    for service, line in zip(refs, lines, strict=True):
        try:
            digests = json.loads(line) or []
        except json.JSONDecodeError:
            continue
        ours = [digest for digest in digests if str(digest).startswith(address + "/")]
        if ours:
            found[service] = str(ours[0])
    return found


@contextmanager
def _progress(forward: RemoteForward, advance: Callable[[int], None], every: float = 0.5) -> Iterator[None]:
    """Advance a transfer bar by the bytes the forward carries to the host, until the block ends."""
    done = threading.Event()
    shown = 0

    def watch() -> None:
        nonlocal shown
        while not done.wait(every):
            now = forward.bytes_to_host
            advance(now - shown)
            shown = now

    watcher = threading.Thread(target=watch, name="pull-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
