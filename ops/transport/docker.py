"""Docker SDK clients: the operator's own engine, and a host's engine over its pinned SSH connection."""

from __future__ import annotations

import fcntl
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ops.errors import HostError, OpsError, connection_failure

if TYPE_CHECKING:
    import docker

    from ops.transport.runner import Runner


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One process at a time on this machine for `name`: two lab.up runs, or two test workers,
    building the same image or installing the same package wait for each other instead of racing.
    An flock, so a process that dies lets go of it."""
    path = os.path.join(tempfile.gettempdir(), f"opskit-{name}.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def local_client(timeout: int = 300) -> docker.DockerClient:
    """The engine on this machine (API version negotiated: the client may be newer)."""
    import docker

    return docker.from_env(version="auto", timeout=timeout)


def find_image(client: docker.DockerClient, name: str) -> Any:
    """The image called name on client's engine, or None when it has none."""
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


@contextmanager
def engine_calls(where: str, doing: str) -> Iterator[None]:
    """Docker SDK calls to a host's engine whose failures read as sentences: an error the engine
    answered is a HostError with its explanation; any other (requests, paramiko, socket) is the
    connection failing while doing. OpsErrors pass through."""
    import docker

    try:
        yield
    except OpsError:
        raise
    except docker.errors.APIError as error:
        raise HostError(f"{doing}: the Docker engine answered {error.explanation or error}", where=where) from None
    except Exception as error:
        raise connection_failure(doing, error, where=where) from None


def remote_client(runner: Runner, where: str) -> docker.DockerClient:
    """A Docker SDK client that speaks to the host's engine through the runner's SSH connection.

    docker-py's own SSH adapter opens a second connection that trusts ~/.ssh/known_hosts only;
    reusing our verified connection keeps one pinned identity per host.
    """
    import docker
    from docker.transport.sshconn import SSHHTTPAdapter

    ssh_client = runner.ssh_client()

    class PinnedSSHAdapter(SSHHTTPAdapter):  # type: ignore[misc]
        def _create_paramiko_client(self, base_url: str) -> None:
            self.ssh_client = ssh_client
            self.ssh_params: dict[str, Any] = {}

        def _connect(self) -> None:
            # Reconnecting would bypass host-key pinning; the runner owns the connection.
            if not ssh_client.get_transport():
                runner.ssh_client()

    api = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41")
    # Each pooled HTTP connection holds an SSH channel open; sshd allows 10 per connection
    # (MaxSessions) and our commands need some too.
    adapter = PinnedSSHAdapter(f"ssh://{where}", timeout=60, pool_connections=1, max_pool_size=3)
    api._custom_adapter = adapter
    api.mount("http+docker://ssh", adapter)
    api._unmount("http://", "https://")
    api.base_url = "http+docker://ssh"
    try:
        api._version = api._retrieve_server_version()
    except docker.errors.DockerException as error:
        raise HostError(
            f"Docker engine not reachable over SSH ({str(error).splitlines()[0][:160]})",
            where=where,
            hint="is Docker installed and is the user in the docker group? run inv provision",
        ) from None
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client


RECIPE_LABEL = "opskit.recipe"  # on images opskit builds from a recipe of its own: which version


def published_ports(container: Any) -> set[int]:
    """The ports on this machine a container publishes (from its HostConfig, running or not)."""
    bindings = container.attrs.get("HostConfig", {}).get("PortBindings") or {}
    return {int(binding["HostPort"]) for entries in bindings.values() for binding in entries or []}


def recipe_image(client: docker.DockerClient, tag: str, recipe: str) -> Any:
    """The local image `tag` if it was built from this recipe version, else None (missing or older)."""
    image = find_image(client, tag)
    return image if image is not None and image.labels.get(RECIPE_LABEL) == recipe else None


def build_recipe_image(
    client: docker.DockerClient,
    tag: str,
    files: Mapping[str, str | tuple[str, int]],
    recipe: str,
    *,
    labels: Mapping[str, str] | None = None,
    error: type[OpsError] = OpsError,
    hint: str = "check access to the Debian mirror",
) -> Any:
    """Build `tag` on client's engine from files held in memory (name -> text, or (text, mode)),
    labelled with the recipe version; a failed build is one `error` line with the build's last words."""
    with machine_lock(f"build-{tag.replace('/', '-').replace(':', '-')}"):
        built = recipe_image(client, tag, recipe)  # by another process while this one waited
        if built is not None:
            return built
        return _build(client, tag, files, recipe, labels or {}, error, hint)


def _build(
    client: docker.DockerClient,
    tag: str,
    files: Mapping[str, str | tuple[str, int]],
    recipe: str,
    labels: Mapping[str, str],
    error: type[OpsError],
    hint: str,
) -> Any:
    import docker

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, content in files.items():
            text, mode = content if isinstance(content, tuple) else (content, 0o644)
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        image, _ = client.images.build(
            fileobj=context, custom_context=True, tag=tag, labels={RECIPE_LABEL: recipe, **labels}, rm=True
        )
    except docker.errors.BuildError as failed:
        lines = [str(chunk.get("stream", chunk.get("error", ""))).strip() for chunk in failed.build_log]
        last = [line for line in lines if line][-1:] or ["no output"]
        raise error(f"building {tag} failed: {last[0][:300]}", hint=hint) from None
    except docker.errors.APIError as failed:
        raise error(f"building {tag} failed: {failed.explanation or failed}", hint=hint) from None
    return image
