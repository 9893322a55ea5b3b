"""IMAGE_SOURCE=build: each host builds the release's images itself (`docker compose build` in
the release directory); nothing is built or sent from this machine.
"""

from __future__ import annotations

from pathlib import Path

from ops.console import CHANGED, Reporter
from ops.images.delivery import Delivered, ReleaseImages, present_after
from ops.stack.compose import Stack
from ops.transport import Host


class BuildOnHost:
    """Build on the host."""

    name = "build"

    def prepare_locally(
        self, compose_bin: Path, stack: Stack, env_path: Path, stamps: Path, reporter: Reporter
    ) -> dict[str, str]:
        return {}

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        host.run(images.compose("build --quiet"), timeout=1800)
        reporter.step(host.name, "images", CHANGED, "built on host")
        return Delivered(present_after(host, images.refs, self.name))
