"""Images: how a stack's images reach hosts (send, build, pull) and the local builds behind them."""

from ops.images.delivery import SOURCES, build_if_changed, host_image_ids, send_images

__all__ = ["SOURCES", "build_if_changed", "host_image_ids", "send_images"]
