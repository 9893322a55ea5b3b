"""The image deliveries by IMAGE_SOURCE name. A new source is one module implementing
ops.images.delivery.ImageDelivery plus one line here; nothing else branches on the name.
"""

from __future__ import annotations

from collections.abc import Callable

from ops.config import Environment
from ops.errors import ConfigError
from ops.images.build import BuildOnHost
from ops.images.delivery import ImageDelivery
from ops.images.pull import PullImages
from ops.images.registry import LocalRegistryOverSSH, RegistryImages
from ops.images.send import SendImages
from ops.images.team_registry import TeamRegistry


def registry_images(env: Environment) -> RegistryImages:
    """IMAGE_SOURCE=registry: through the team registry when REGISTRY names one, else through this
    checkout's own registry over SSH."""
    registry = TeamRegistry.from_env(env) if env.registry.registry else LocalRegistryOverSSH(env.root)
    return RegistryImages(env.project, registry)


DELIVERIES: dict[str, Callable[[Environment], ImageDelivery]] = {
    "registry": registry_images,
    "send": lambda env: SendImages(),
    "build": lambda env: BuildOnHost(),
    "pull": lambda env: PullImages(),
}
SOURCES = tuple(DELIVERIES)


def delivery_for(env: Environment, source: str | None = None) -> ImageDelivery:
    """The delivery IMAGE_SOURCE (or source) names, for this environment."""
    source = source or env.deploy.image_source
    try:
        return DELIVERIES[source](env)
    except KeyError:
        raise ConfigError(
            f"unknown image source {source!r}", hint=f"IMAGE_SOURCE is one of: {', '.join(SOURCES)}"
        ) from None
