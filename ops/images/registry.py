"""IMAGE_SOURCE=registry (the default): the images are built on this machine and pushed to this
checkout's local registry (ops.images.local_registry); each host pulls them by repository digest
through a reverse SSH forward of the registry's port on its own loopback, so only the layers a
host lacks cross the wire. Nothing here writes a release; the digests pulled are returned.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ops.console import CHANGED, OK, Reporter
from ops.images.delivery import Delivered, ReleaseImages, host_image_ids, present_after
from ops.images.local import build_if_changed
from ops.images.local_registry import LocalRegistry, PushedImage, ensure_registry, push_image
from ops.stack.compose import Stack
from ops.transport import Host
from ops.transport.forward import RemoteForward
from ops.transport.shell import q

PULL_TIMEOUT = 1800.0


def repository_for(project: str, service: str) -> str:
    """The registry repository of one service's image: <project>/<service>, lower-case."""
    return f"{project}/{service}".lower()


class RegistryImages:
    """Build here; when a host lacks an image, push it to this checkout's registry (once per
    deploy, whichever host needs it first) and let the host pull it by digest."""

    name = "registry"

    def __init__(self, root: Path, project: str):
        self.registry = LocalRegistry(root)
        self.project = project
        self._pushed: dict[str, PushedImage] = {}  # local image ID -> pushed
        self._registry_up = False
        self._lock = threading.Lock()

    def prepare_locally(
        self, compose_bin: Path, stack: Stack, env_path: Path, stamps: Path, reporter: Reporter
    ) -> dict[str, str]:
        local_ids, built = build_if_changed(compose_bin, stack, env_path, stamps)
        detail = f"{len(local_ids)} images" + ("" if built else ", unchanged since the last build")
        reporter.step("local", "build images", CHANGED if built else OK, detail)
        return local_ids

    def push(self, images: dict[str, str], reporter: Reporter) -> dict[str, PushedImage]:
        """service -> pushed image, for service -> local image ID; each image pushed once per run."""
        with self._lock:  # hosts bring in parallel: the first one that needs an image pushes it
            if not self._registry_up:
                ensure_registry(self.registry, reporter)
                self._registry_up = True
            for service, image_id in sorted(images.items()):
                if image_id not in self._pushed:
                    repository = repository_for(self.project, service)
                    self._pushed[image_id] = push_image(self.registry, image_id, repository, reporter)
            return {service: self._pushed[image_id] for service, image_id in images.items()}

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        present = host_image_ids(host, images.refs)
        missing = sorted(s for s, image_id in images.local_ids.items() if present.get(s) != image_id)
        if not missing:
            reporter.step(host.name, "images", OK, "all present")
            return Delivered(present, digests=host_repo_digests(host, images.refs, self.registry.address))
        pushed = self.push({s: images.local_ids[s] for s in missing}, reporter)
        pulls = {pushed[s].ref: images.refs[s] for s in missing}
        # One pull per image, then the name the compose file gives it (services may share one).
        script = " && ".join(f"docker pull -q {q(ref)} >/dev/null" for ref in sorted(set(pulls)))
        script += "".join(f" && docker tag {q(ref)} {q(name)}" for ref, name in sorted(pulls.items()))
        forward = RemoteForward(
            host.runner.ssh_client(), self.registry.port, "127.0.0.1", self.registry.port, where=host.name
        )
        with forward, _progress(forward, reporter.transfer(host.name, f"pulling {len(set(pulls))} images")):
            forward.wait_until_answering()
            host.run(script, timeout=PULL_TIMEOUT)
        received = forward.bytes_to_host
        names = ", ".join(sorted(set(pulls.values())))
        reporter.step(host.name, "images", CHANGED, f"pulled {names} ({received / 1e6:.1f} MB)")
        ids = present_after(host, images.refs, self.name)
        return Delivered(ids, received, host_repo_digests(host, images.refs, self.registry.address))


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
