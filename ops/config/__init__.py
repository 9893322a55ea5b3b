"""Configuration: env/<name>.env (plus secrets) validated once into an Environment with typed
settings per capability. Nothing here reads os.environ; callers pass the mapping."""

from ops.config.env import (
    ENV_DIR,
    ENV_SUFFIX,
    OPERATOR_SECRETS,
    SECRETS_SUFFIX,
    Environment,
    Secrets,
    env_files,
    find_root,
    load_environment,
    read_secrets,
    resolve_env_name,
)
from ops.config.hosts import NAME_RE, HostSpec, parse_host
from ops.config.keys import KEYS, Key
from ops.config.settings import BackupSettings, DeploySettings, NotifySettings, OrchestratorSettings, RegistrySettings

__all__ = [
    "ENV_DIR",
    "ENV_SUFFIX",
    "KEYS",
    "NAME_RE",
    "OPERATOR_SECRETS",
    "SECRETS_SUFFIX",
    "BackupSettings",
    "DeploySettings",
    "Environment",
    "HostSpec",
    "Key",
    "NotifySettings",
    "OrchestratorSettings",
    "RegistrySettings",
    "Secrets",
    "env_files",
    "find_root",
    "load_environment",
    "parse_host",
    "read_secrets",
    "resolve_env_name",
]
