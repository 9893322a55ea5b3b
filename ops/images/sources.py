"""The image deliveries by IMAGE_SOURCE name. A new source is one module implementing
ops.images.delivery.ImageDelivery plus one line here; nothing else branches on the name.
"""

from __future__ import annotations

from collections.abc import Callable

from ops.errors import ConfigError
from ops.images.build import BuildOnHost
from ops.images.delivery import ImageDelivery
from ops.images.pull import PullImages
from ops.images.send import SendImages

DELIVERIES: dict[str, Callable[[], ImageDelivery]] = {
    "send": SendImages,
    "build": BuildOnHost,
    "pull": PullImages,
}
SOURCES = tuple(DELIVERIES)


def delivery_for(source: str) -> ImageDelivery:
    """The delivery IMAGE_SOURCE names."""
    try:
        return DELIVERIES[source]()
    except KeyError:
        raise ConfigError(
            f"unknown image source {source!r}", hint=f"IMAGE_SOURCE is one of: {', '.join(SOURCES)}"
        ) from None
