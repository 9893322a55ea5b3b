"""The local registry: a Distribution registry on this machine, one per checkout, that hosts pull
from through a reverse SSH forward (only the layers they lack cross the wire).

It listens on 127.0.0.1 only, on a port derived from the checkout path, and keeps its blobs in a
named volume across runs. It talks only to the local engine; it never touches a host.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ops.console import CHANGED, OK, Reporter
from ops.errors import RegistryError
from ops.transport.docker import build_recipe_image, find_image, local_client, published_ports, recipe_image
from ops.transport.loopback import REGISTRY_OFFSET, port_block, port_free, port_free_soon

if TYPE_CHECKING:
    import docker

BASE_IMAGE = "debian:trixie-slim"
REGISTRY_IMAGE = "opskit/registry:trixie"
CONTAINER_PORT = 5000
DATA_DIR = "/var/lib/docker-registry"
LABEL = "opskit.registry"

# Debian's unit runs `/usr/bin/docker-registry serve /etc/docker/registry/config.yml` as the
# docker-registry user; ours does the same, with deletes on so that unreferenced blobs can be
# garbage-collected later (`docker-registry garbage-collect`).
REGISTRY_CONFIG = f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {DATA_DIR}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: :{CONTAINER_PORT}
  headers:
    X-Content-Type-Options: [nosniff]
"""

REGISTRY_DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry \\
 && rm -rf /var/lib/apt/lists/* \\
 && install -d -o docker-registry -g docker-registry {DATA_DIR}
COPY config.yml /etc/docker/registry/config.yml
USER docker-registry
EXPOSE {CONTAINER_PORT}
VOLUME {DATA_DIR}
CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""
# A change to the recipe rebuilds the image once (and recreates the container); otherwise both are reused.
RECIPE_VERSION = hashlib.sha256((REGISTRY_DOCKERFILE + REGISTRY_CONFIG).encode()).hexdigest()[:12]

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
PULL_REF = re.compile(r"^(?P<address>127\.0\.0\.1:\d{1,5})/(?P<repository>[^@:]+)@(?P<digest>sha256:[0-9a-f]{64})$")


class Addressed(Protocol):
    """A registry as push_image needs it: the host[:port] its image references start with."""

    @property
    def address(self) -> str: ...


@dataclass(frozen=True)
class LocalRegistry:
    """The registry of one checkout: its container, volume and 127.0.0.1 port, all from the path.

    Its port is offset 0 of the block the path hashes to (ops.transport.loopback), which no lab
    port ever uses: a registry never collides with any checkout's lab, and two checkouts collide
    only when their paths hash to the same block (then ensure_registry says so).
    """

    checkout: Path

    @property
    def _digest(self) -> str:
        return hashlib.sha256(f"{self.checkout.resolve()}:registry".encode()).hexdigest()

    @property
    def registry_id(self) -> str:
        return f"registry-{self._digest[:6]}"

    @property
    def port(self) -> int:
        return port_block(f"{self.checkout.resolve()}:registry") + REGISTRY_OFFSET

    @property
    def container(self) -> str:
        return f"opskit-{self.registry_id}"

    @property
    def volume(self) -> str:
        return f"opskit-{self.registry_id}-data"

    @property
    def address(self) -> str:
        """host:port as image names spell it (the same on hosts, through their forward)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass(frozen=True)
class PushedImage:
    """An image in the local registry, named by its repository digest."""

    registry: str  # 127.0.0.1:PORT
    repository: str
    digest: str  # sha256:...
    layers_pushed: int = 0
    layers_present: int = 0

    @property
    def ref(self) -> str:
        """What a host pulls: `127.0.0.1:PORT/<repository>@sha256:...`."""
        return pull_ref(self.registry, self.repository, self.digest)


def pull_ref(address: str, repository: str, digest: str) -> str:
    """`address/repository@digest`, checked: a malformed ref would fail later, on every host."""
    if not DIGEST.match(digest):
        raise RegistryError(f"not a repository digest: {digest!r}", hint="expected sha256: and 64 hex digits")
    if not REPOSITORY.match(repository):
        raise RegistryError(
            f"not a valid repository name: {repository!r}",
            hint="lower-case letters, digits, and . _ - separators, path parts joined by /",
        )
    return f"{address}/{repository}@{digest}"


def parse_pull_ref(ref: str) -> tuple[str, str, str]:
    """(address, repository, digest) of a ref made by pull_ref."""
    match = PULL_REF.match(ref)
    if not match:
        raise RegistryError(
            f"not a local registry ref: {ref!r}", hint="expected 127.0.0.1:PORT/<repository>@sha256:<64 hex digits>"
        )
    return match["address"], match["repository"], match["digest"]


# ---------------------------------------------------------------- the push stream


@dataclass
class PushProgress:
    """Reads docker's push stream: bytes sent per layer, layers pushed or already there, the digest."""

    advance: Callable[[int], None] = lambda count: None
    digest: str | None = None
    pushed: int = 0
    present: int = 0

    def __post_init__(self) -> None:
        self._sent: dict[str, int] = {}

    def feed(self, event: Mapping[str, Any]) -> None:
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            message = str(event.get("error") or detail.get("message") or "unknown error")
            raise RegistryError(f"push failed: {message.strip()[:300]}")
        aux = event.get("aux")
        if isinstance(aux, Mapping) and "Digest" in aux:
            self.digest = str(aux["Digest"])
        status = str(event.get("status", ""))
        layer = str(event.get("id", ""))
        if status == "Pushing" and layer:
            current = int((event.get("progressDetail") or {}).get("current") or 0)
            delta = current - self._sent.get(layer, 0)
            if delta > 0:
                self._sent[layer] = current
                self.advance(delta)
        elif status == "Pushed":
            self.pushed += 1
        elif status == "Layer already exists":
            self.present += 1

    def result(self, address: str, repository: str) -> PushedImage:
        if self.digest is None or not DIGEST.match(self.digest):
            raise RegistryError(
                f"push of {repository} ended without a repository digest",
                where=address,
                hint="the engine's push stream had no aux Digest; check `docker push` by hand",
            )
        return PushedImage(address, repository, self.digest, self.pushed, self.present)


def read_push_stream(
    events: Iterable[Mapping[str, Any]], address: str, repository: str, advance: Callable[[int], None]
) -> PushedImage:
    """The pushed image from docker's decoded push stream; a stream error is a RegistryError."""
    progress = PushProgress(advance)
    try:
        for event in events:
            progress.feed(event)
    except RegistryError as error:
        raise RegistryError(error.message, where=address, hint=_push_hint(error.message)) from None
    return progress.result(address, repository)


def _push_hint(message: str) -> str:
    if "connection refused" in message or "no such host" in message:
        return "the local registry stopped answering; run it again (ensure_registry) and retry"
    if "no space left" in message:
        return "this machine's disk is full: free space for the registry volume"
    return "see the registry's log: docker logs <its container>"


# ---------------------------------------------------------------- the container


def answers(url: str, timeout: float = 2) -> bool:
    """A Distribution registry answers GET /v2/ at url (its API header, not just any HTTP server)."""
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=timeout) as response:  # noqa: S310  # nosec B310 (http on loopback)
            return bool(response.headers.get("Docker-Distribution-Api-Version", "").startswith("registry/2"))
    except urllib.error.HTTPError as error:
        # 401 is an answer too (a registry with auth); a plain 404 server is not a registry.
        with error:
            return bool(error.headers.get("Docker-Distribution-Api-Version", "").startswith("registry/2"))
    except (OSError, ValueError):
        return False


def ensure_registry_image(client: docker.DockerClient, reporter: Reporter) -> Any:
    """opskit/registry:trixie (Debian's docker-registry), built once per recipe; the image."""
    image = recipe_image(client, REGISTRY_IMAGE, RECIPE_VERSION)
    if image is not None:
        reporter.step("local", "registry image", OK, REGISTRY_IMAGE)
        return image
    if find_image(client, BASE_IMAGE) is None:
        raise RegistryError(
            f"base image {BASE_IMAGE} is missing on this machine",
            hint="make it with `inv lab.up` (debootstrap, no public registry needed)",
        )
    reporter.step("local", "registry image", CHANGED, f"building {REGISTRY_IMAGE} (docker-registry from Debian)")
    files = {"Dockerfile": REGISTRY_DOCKERFILE, "config.yml": REGISTRY_CONFIG}
    return build_recipe_image(client, REGISTRY_IMAGE, files, RECIPE_VERSION, error=RegistryError)


def _labels(registry: LocalRegistry) -> dict[str, str]:
    return {LABEL: registry.registry_id, "opskit.checkout": str(registry.checkout.resolve())}


def _start_container(client: docker.DockerClient, registry: LocalRegistry) -> Any:
    import docker

    try:
        client.volumes.get(registry.volume)
    except docker.errors.NotFound:
        client.volumes.create(registry.volume, labels=_labels(registry))
    return client.containers.run(
        REGISTRY_IMAGE,
        name=registry.container,
        detach=True,
        init=True,
        ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", registry.port)},
        volumes={registry.volume: {"bind": DATA_DIR, "mode": "rw"}},
        restart_policy={"Name": "unless-stopped"},
        # Signs upload state between requests; without one the registry makes its own and warns.
        environment={"REGISTRY_HTTP_SECRET": secrets.token_hex(16)},
        labels=_labels(registry),
    )


def _port_taken(registry: LocalRegistry) -> RegistryError:
    return RegistryError(
        f"port {registry.address} (this checkout's registry port) is taken by another program",
        where=str(registry.checkout),
        hint="stop that program, or work from another checkout path: the port follows the path",
    )


def ensure_registry(
    registry: LocalRegistry, reporter: Reporter, *, client: docker.DockerClient | None = None, timeout: float = 30
) -> LocalRegistry:
    """The checkout's registry up and answering GET /v2/: built, created, or started again as needed.

    Its volume is kept whatever happens here, so blobs pushed by earlier runs stay.
    """
    import docker

    own_client = client is None
    engine = client or local_client()
    try:
        image = ensure_registry_image(engine, reporter)
        try:
            container = engine.containers.get(registry.container)
        except docker.errors.NotFound:
            container = None
        if container is not None and container.image.id != image.id:
            reporter.step("local", "registry", CHANGED, "image changed: recreating (its volume is kept)")
            container.remove(force=True)
            container = None
        if container is not None and published_ports(container) != {registry.port}:
            reporter.step(
                "local", "registry", CHANGED, f"port moved to {registry.port}: recreating (its volume is kept)"
            )
            container.remove(force=True)
            container = None
        if container is None:
            if not port_free_soon(registry.port):
                raise _port_taken(registry)
            container = _start_container(engine, registry)
            reporter.step("local", "registry", CHANGED, f"created on {registry.address}, blobs in {registry.volume}")
        elif container.status != "running":
            if not port_free(registry.port):
                raise _port_taken(registry)
            container.start()
            reporter.step("local", "registry", CHANGED, f"started again on {registry.address}")
        else:
            reporter.step("local", "registry", OK, f"running on {registry.address}")
        _wait_until_answering(registry, container, timeout)
    except docker.errors.APIError as error:
        raise RegistryError(
            f"the local engine refused: {error.explanation or error}", where=registry.container
        ) from None
    finally:
        if own_client:
            engine.close()
    return registry


def _wait_until_answering(registry: LocalRegistry, container: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(registry.url):
            return
        container.reload()
        if container.status not in ("running", "created", "restarting"):
            break
        time.sleep(0.2)
    logs = container.logs(tail=5).decode(errors="replace").strip().splitlines() or ["no log output"]
    raise RegistryError(
        f"the registry on {registry.address} did not answer GET /v2/ within {timeout:.0f} s"
        f" (container {container.status}): {logs[-1][:200]}",
        where=registry.container,
        hint=f"see `docker logs {registry.container}`",
    )


def push_image(
    registry: Addressed,
    image: str,
    repository: str,
    reporter: Reporter,
    *,
    tag: str | None = None,
    client: docker.DockerClient | None = None,
    auth_config: Mapping[str, str] | None = None,
) -> PushedImage:
    """Push the local image (name or ID) to the registry as repository; its repository digest.

    The registry must be up (ensure_registry). Only blobs the registry lacks are sent. The image
    keeps a local tag `ADDRESS/repository:tag` (tag: the image ID's first 12 digits). auth_config
    (username, password) goes to the engine in the request's header, never on a command line.
    """
    import docker

    pull_ref(registry.address, repository, "sha256:" + "0" * 64)  # checks the repository name early
    own_client = client is None
    engine = client or local_client()
    try:
        found = find_image(engine, image)
        if found is None:
            raise RegistryError(f"no image {image} on this machine's engine", hint="build it first")
        tag = tag or found.id.removeprefix("sha256:")[:12]
        target = f"{registry.address}/{repository}"
        found.tag(target, tag)
        advance = reporter.transfer("local", f"push {repository}")
        credentials = dict(auth_config) if auth_config else None
        events = engine.api.push(target, tag=tag, stream=True, decode=True, auth_config=credentials)
        pushed = read_push_stream(events, registry.address, repository, advance)
    except docker.errors.APIError as error:
        raise RegistryError(f"push of {image} failed: {error.explanation or error}", where=registry.address) from None
    finally:
        if own_client:
            engine.close()
    status = CHANGED if pushed.layers_pushed else OK
    reporter.step(
        "local",
        f"push {repository}",
        status,
        f"{pushed.digest[:19]} ({pushed.layers_pushed} layers sent, {pushed.layers_present} already there)",
    )
    return pushed


def remove_registry(registry: LocalRegistry, *, client: docker.DockerClient | None = None) -> bool:
    """Remove the checkout's registry container and its volume, blobs included (the next deploy
    pushes everything again); True when there was something to remove."""
    import docker

    own_client = client is None
    engine = client or local_client()
    removed = False
    try:
        try:
            engine.containers.get(registry.container).remove(force=True)
            removed = True
        except docker.errors.NotFound:
            pass
        try:
            engine.volumes.get(registry.volume).remove(force=True)
            removed = True
        except docker.errors.NotFound:
            pass
    finally:
        if own_client:
            engine.close()
    return removed
