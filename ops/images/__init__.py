"""Images: how a stack's images reach hosts (one ImageDelivery per IMAGE_SOURCE: registry, send,
build, pull; the registry one through this checkout's registry or a team registry), the local builds
behind them, and what the local registry may drop (gc; reading the hosts' kept releases for it is
ops.deploy.gc's part, so that ops.images never imports ops.deploy)."""

from ops.images.build import BuildOnHost
from ops.images.delivery import Delivered, ImageDelivery, ReleaseImages, host_image_ids
from ops.images.gc import GcPlan, GcResult, HostPins, Manifest, select_garbage
from ops.images.local import base_images, build_if_changed, build_locally, local_image_ids
from ops.images.pull import PullImages
from ops.images.registry import ImageRegistry, LocalRegistryOverSSH, RegistryImages
from ops.images.send import SendImages, send_if_missing, send_images
from ops.images.sources import DELIVERIES, SOURCES, delivery_for
from ops.images.team_registry import TeamRegistry

__all__ = [
    "DELIVERIES",
    "SOURCES",
    "BuildOnHost",
    "Delivered",
    "GcPlan",
    "GcResult",
    "HostPins",
    "ImageDelivery",
    "ImageRegistry",
    "LocalRegistryOverSSH",
    "Manifest",
    "PullImages",
    "RegistryImages",
    "ReleaseImages",
    "SendImages",
    "TeamRegistry",
    "base_images",
    "build_if_changed",
    "build_locally",
    "delivery_for",
    "host_image_ids",
    "local_image_ids",
    "select_garbage",
    "send_if_missing",
    "send_images",
]
