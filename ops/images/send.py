"""IMAGE_SOURCE=send: the images are built on this machine and streamed to each host with no
registry at all, only those the host lacks (`docker save` from the local engine into the host's
`docker load` through the host's verified SSH connection; nothing written to disk on the way).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ops.console import CHANGED, OK, Reporter
from ops.errors import DeployError, HostError, connection_failure
from ops.images.delivery import Delivered, ReleaseImages, host_image_ids, present_after
from ops.images.local import build_if_changed
from ops.stack.compose import Stack
from ops.transport import Host
from ops.transport.docker import local_client

if TYPE_CHECKING:
    import docker

_local: docker.DockerClient | None = None


def local_engine() -> docker.DockerClient:
    """This machine's engine, opened once (sending waits long on big images: a long timeout)."""
    global _local
    if _local is None:
        _local = local_client(timeout=600)
    return _local


class SendImages:
    """Build here, send what the host lacks."""

    name = "send"

    def __init__(self, engine: Callable[[], docker.DockerClient] = local_engine):
        self.engine = engine

    def prepare_locally(
        self, compose_bin: Path, stack: Stack, env_path: Path, stamps: Path, reporter: Reporter
    ) -> dict[str, str]:
        local_ids, built = build_if_changed(compose_bin, stack, env_path, stamps)
        detail = f"{len(local_ids)} images" + ("" if built else ", unchanged since the last build")
        reporter.step("local", "build images", CHANGED if built else OK, detail)
        return local_ids

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        present = host_image_ids(host, images.refs)
        missing = sorted({images.refs[s] for s, image_id in images.local_ids.items() if present.get(s) != image_id})
        if not missing:
            reporter.step(host.name, "images", OK, "all present")
            return Delivered(present)
        transfer = reporter.transfer(host.name, f"sending {len(missing)} images")
        sent = send_images(host, self.engine(), missing, on_bytes=transfer)
        reporter.step(host.name, "images", CHANGED, f"sent {', '.join(missing)} ({sent / 1e6:.0f} MB)")
        return Delivered(present_after(host, images.refs, self.name), sent)


def send_if_missing(
    host: Host, image: str, reporter: Reporter, engine: Callable[[], docker.DockerClient] = local_engine
) -> None:
    """An image the host lacks is sent from this machine's engine when it has it (`inv swap --image`)."""
    import docker

    if host.run(f"docker image inspect {shlex.quote(image)}", check=False).ok:
        return
    try:
        engine().images.get(image)
    except docker.errors.DockerException:
        raise DeployError(
            f"image {image} is neither on the host nor on this machine",
            where=host.name,
            hint="build it, or use --version",
        ) from None
    sent = send_images(host, engine(), [image], on_bytes=reporter.transfer(host.name, f"sending {image}"))
    reporter.step(host.name, "images", CHANGED, f"sent {image} ({sent / 1e6:.0f} MB)")


def send_images(
    host: Host,
    local: docker.DockerClient,
    refs: list[str],
    on_bytes: Callable[[int], None] | None = None,
    chunk_size: int = 1 << 20,
) -> int:
    """Stream `docker save refs` from the local engine into the host's `docker load`."""
    if not refs:
        return 0
    response = local.api._get(local.api._url("/images/get"), params={"names": refs}, stream=True)
    local.api._raise_for_status(response)
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for chunk in response.iter_content(chunk_size):
            sent += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
            yield chunk

    import docker

    try:
        remote = host.docker()
        result = remote.api._post(remote.api._url("/images/load"), data=chunks(), params={"quiet": True}, stream=False)
        remote.api._raise_for_status(result)
    except HostError:
        raise
    except docker.errors.APIError as error:  # the host's engine answered: not a transport failure
        raise DeployError(
            f"the host's Docker engine refused the images: {error.explanation or error}", where=host.name
        ) from None
    except Exception as error:  # requests, paramiko, socket: the connection itself
        raise connection_failure("sending images", error, where=host.name) from None
    finally:
        response.close()
    return sent
