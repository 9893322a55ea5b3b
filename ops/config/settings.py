"""Typed settings per capability, read from an environment's validated key values.

The env file is validated once (ops.config.env); these views give each capability its keys as
typed fields with their defaults in one place, so no module repeats `HEALTH_TIMEOUT or 120`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from ops.config.keys import KEYS


def _value(values: Mapping[str, object], key: str) -> object:
    """The validated value of key, or its parsed default when the mapping lacks it."""
    if key in values:
        return values[key]
    default = KEYS[key].default
    return KEYS[key].parse(default) if default is not None else None


def _int(values: Mapping[str, object], key: str) -> int:
    return int(cast("int", _value(values, key)))


def _str(values: Mapping[str, object], key: str) -> str:
    return str(_value(values, key) or "")


def _words(values: Mapping[str, object], key: str) -> tuple[str, ...]:
    return cast("tuple[str, ...]", _value(values, key) or ())


@dataclass(frozen=True)
class DeploySettings:
    """How releases reach hosts and when they count as healthy."""

    image_source: str
    health_timeout: float
    swap_drain: float
    keep_releases: int
    stack_vars: tuple[tuple[str, str], ...]

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> DeploySettings:
        return cls(
            image_source=_str(values, "IMAGE_SOURCE"),
            health_timeout=float(_int(values, "HEALTH_TIMEOUT")),
            swap_drain=float(_int(values, "SWAP_DRAIN")),
            keep_releases=_int(values, "KEEP_RELEASES"),
            stack_vars=cast("tuple[tuple[str, str], ...]", _value(values, "STACK_VARS") or ()),
        )


@dataclass(frozen=True)
class OrchestratorSettings:
    """Compose on each host, or one Docker Swarm of the hosts (roles: /manager, the rest workers)."""

    orchestrator: str
    advertise: tuple[tuple[str, str], ...]  # (host as HOSTS names it, IP) from SWARM_ADVERTISE_ADDR

    @property
    def swarm(self) -> bool:
        return self.orchestrator == "swarm"

    def advertise_address(self, host: str) -> str:
        """The address SWARM_ADVERTISE_ADDR gives host, or "" (then the host's route decides)."""
        return dict(self.advertise).get(host, "")

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> OrchestratorSettings:
        return cls(
            orchestrator=_str(values, "ORCHESTRATOR"),
            advertise=cast("tuple[tuple[str, str], ...]", _value(values, "SWARM_ADVERTISE_ADDR") or ()),
        )


@dataclass(frozen=True)
class RegistrySettings:
    """The team registry IMAGE_SOURCE=registry goes through; empty: this checkout's own registry,
    pulled over SSH. Its password is a secret (REGISTRY_PASSWORD in env.secrets), never here."""

    registry: str  # host[:port][/path], as REGISTRY gives it
    user: str
    ca: str  # CA file as REGISTRY_CA gives it (relative to the repository)

    @property
    def host(self) -> str:
        """host[:port]: what `docker login` takes and /etc/docker/certs.d/ names a directory after."""
        return self.registry.partition("/")[0]

    @property
    def path(self) -> str:
        """The repository prefix under the host (the team), may be empty."""
        return self.registry.partition("/")[2]

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> RegistrySettings:
        return cls(
            registry=_str(values, "REGISTRY"),
            user=_str(values, "REGISTRY_USER").strip(),
            ca=_str(values, "REGISTRY_CA").strip(),
        )


@dataclass(frozen=True)
class BackupSettings:
    """Where snapshots go, how archives are made, kept and copied offsite."""

    dir: str
    target: str
    host_dir: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    compression: str
    level: int
    timeout: float
    age_recipient: str
    age_identity: str
    offsite: str  # s3://BUCKET/PREFIX or [user@]host[:port]:/path
    s3_endpoint: str
    s3_region: str
    keep_last: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    max_age_hours: int
    drill_max_age_days: int

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> BackupSettings:
        return cls(
            dir=_str(values, "BACKUP_DIR"),
            target=_str(values, "BACKUP_TARGET"),
            host_dir=_str(values, "BACKUP_HOST_DIR"),
            include=_words(values, "BACKUP_INCLUDE"),
            exclude=_words(values, "BACKUP_EXCLUDE"),
            compression=_str(values, "BACKUP_COMPRESSION"),
            level=_int(values, "BACKUP_LEVEL"),
            timeout=float(_int(values, "BACKUP_TIMEOUT")),
            age_recipient=_str(values, "BACKUP_AGE_RECIPIENT"),
            age_identity=_str(values, "BACKUP_AGE_IDENTITY"),
            offsite=_str(values, "BACKUP_OFFSITE"),
            s3_endpoint=_str(values, "S3_ENDPOINT"),
            s3_region=_str(values, "S3_REGION").strip(),
            keep_last=_int(values, "BACKUP_KEEP_LAST"),
            keep_daily=_int(values, "BACKUP_KEEP_DAILY"),
            keep_weekly=_int(values, "BACKUP_KEEP_WEEKLY"),
            keep_monthly=_int(values, "BACKUP_KEEP_MONTHLY"),
            max_age_hours=_int(values, "BACKUP_MAX_AGE_HOURS"),
            drill_max_age_days=_int(values, "BACKUP_DRILL_MAX_AGE_DAYS"),
        )


@dataclass(frozen=True)
class NotifySettings:
    """How notifications are posted. Where to is the secret NOTIFY_URL (env.secrets), never here."""

    format: str  # slack | json
    timeout: float  # seconds per attempt

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> NotifySettings:
        return cls(format=_str(values, "NOTIFY_FORMAT"), timeout=float(_int(values, "NOTIFY_TIMEOUT")))
