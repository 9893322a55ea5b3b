"""The image delivery protocol: how a release's images reach one host (IMAGE_SOURCE). One
implementation per module (send, build, pull; ops.images.sources names them); deploy asks the
protocol, never which source it is. Nothing here chooses a source or touches a release's files.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ops.console import Reporter
from ops.errors import DeployError
from ops.stack.compose import Stack
from ops.transport import Host


@dataclass(frozen=True)
class ReleaseImages:
    """The images one release needs on one host."""

    refs: Mapping[str, str]  # service -> image reference, as the compose file names it
    local_ids: Mapping[str, str] = field(default_factory=dict)  # service -> ID on this machine (built here)
    compose: Callable[[str], str] = str  # compose arguments -> the release's `docker compose` command on the host


@dataclass(frozen=True)
class Delivered:
    """What a delivery left on the host: the image IDs the release pins, and the bytes it sent."""

    ids: dict[str, str]  # service -> image ID on the host
    sent: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # service -> registry@sha256:... it came from


class ImageDelivery(Protocol):
    """One way of bringing a release's images to a host."""

    name: str  # its IMAGE_SOURCE value

    def prepare_locally(
        self, compose_bin: Path, stack: Stack, env_path: Path, stamps: Path, reporter: Reporter
    ) -> dict[str, str]:
        """Work on this machine before any host is touched; service -> local image ID (or none)."""
        ...

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        """Make every service's image present on the host; the IDs found there afterwards."""
        ...


def host_image_ids(host: Host, refs: Mapping[str, str]) -> dict[str, str]:
    """service -> image ID on the host, for the refs it has."""
    if not refs:
        return {}
    names = " ".join(shlex.quote(ref) for ref in refs.values())
    result = host.run(f"docker image inspect --format '{{{{.Id}}}}' {names} 2>/dev/null; true")
    # inspect prints one line per found image, in order, and nothing for missing ones: ask one by one
    found = {}
    if len(result.stdout.split()) == len(refs):
        return dict(zip(refs, result.stdout.split(), strict=True))
    for service, ref in refs.items():
        single = host.run(f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(ref)}", check=False)
        if single.ok:
            found[service] = single.stdout.strip()
    return found


def present_after(host: Host, refs: Mapping[str, str], source: str) -> dict[str, str]:
    """service -> image ID on the host once a delivery ran; a DeployError names the images it lacks."""
    ids = host_image_ids(host, refs)
    lacking = sorted(set(refs) - set(ids))
    if lacking:
        raise DeployError(f"images missing after {source}: {', '.join(lacking)}", where=host.name)
    return ids
