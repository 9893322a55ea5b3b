"""IMAGE_SOURCE=pull: each host pulls the release's images from the registry the compose file
names (`docker compose pull` in the release directory); nothing is built or sent from this machine.
"""

from __future__ import annotations

from pathlib import Path

from ops.console import CHANGED, Reporter
from ops.images.delivery import Delivered, ReleaseImages, present_after
from ops.stack.compose import Stack
from ops.transport import Host


class PullImages:
    """Pull on the host, from the registry in the compose file."""

    name = "pull"

    def prepare_locally(
        self, compose_bin: Path, stack: Stack, env_path: Path, stamps: Path, reporter: Reporter
    ) -> dict[str, str]:
        return {}

    def bring(self, host: Host, images: ReleaseImages, reporter: Reporter) -> Delivered:
        host.run(images.compose("pull --quiet"), timeout=1800)
        reporter.step(host.name, "images", CHANGED, "pulled")
        return Delivered(present_after(host, images.refs, self.name))
