"""Environments: env/<name>.env (plus secrets) read into a validated, typed Environment.

Every problem is reported as a ConfigError naming the file, the line and the key. This module
reads files and the mapping of process variables it is given; it never reads os.environ itself.
"""

from __future__ import annotations

import difflib
import functools
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ops.config.hosts import NAME_RE, HostSpec, parse_host
from ops.config.keys import KEYS
from ops.config.settings import BackupSettings, DeploySettings, NotifySettings, OrchestratorSettings, RegistrySettings
from ops.errors import ConfigError

ENV_DIR = "env"
ENV_SUFFIX = ".env"
SECRETS_SUFFIX = ".secrets.env"
# Secrets read from the process environment when set there, though nothing requires them: the
# notification URL and the S3 credentials (without both, boto3's own chain: profile, instance role).
# opskit's own secrets: never in a stack's .env on the hosts (the registry password included: hosts
# get it on stdin for one login, in a config removed afterwards).
OPERATOR_SECRETS = ("NOTIFY_URL", "REGISTRY_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")


class Secrets:
    """Secret values by name, with redaction of their values from any text."""

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def names(self) -> list[str]:
        return sorted(self._values)

    def get(self, name: str, default: str = "") -> str:
        return self._values.get(name, default)

    def redact(self, text: str) -> str:
        # Longest first so that a secret containing another is hidden whole.
        for value in sorted(self._values.values(), key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:
        return f"Secrets({self.names()})"


@dataclass(frozen=True)
class Environment:
    """One validated environment: where its hosts are and how to reach them."""

    name: str
    root: Path
    file: Path
    hosts: tuple[HostSpec, ...]
    deploy_user: str
    bootstrap_user: str
    identity_file: Path | None
    known_hosts: Path
    connect_timeout: int
    parallel: int
    stack_dir: Path | None
    project: str
    secrets: Secrets = field(repr=False)
    settings: Mapping[str, object] = field(repr=False, default_factory=dict)

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    @functools.cached_property
    def deploy(self) -> DeploySettings:
        return DeploySettings.from_values(self.settings)

    @functools.cached_property
    def registry(self) -> RegistrySettings:
        return RegistrySettings.from_values(self.settings)

    @functools.cached_property
    def orchestrator(self) -> OrchestratorSettings:
        return OrchestratorSettings.from_values(self.settings)

    @functools.cached_property
    def backup(self) -> BackupSettings:
        return BackupSettings.from_values(self.settings)

    @functools.cached_property
    def notify(self) -> NotifySettings:
        return NotifySettings.from_values(self.settings)

    def secret(self, name: str) -> str:
        """A secret's value, "" when it is not set."""
        return self.secrets.get(name)


def env_files(root: Path) -> list[str]:
    """Names of the environments defined in root/env (examples and secrets excluded)."""
    env_dir = root / ENV_DIR
    if not env_dir.is_dir():
        return []
    return sorted(
        path.name[: -len(ENV_SUFFIX)]
        for path in env_dir.glob(f"*{ENV_SUFFIX}")
        if not path.name.endswith(SECRETS_SUFFIX) and NAME_RE.match(path.name[: -len(ENV_SUFFIX)])
    )


def find_root(start: Path) -> Path:
    """The repository root: the nearest directory at or above start that holds env/."""
    for candidate in (start, *start.parents):
        if (candidate / ENV_DIR).is_dir():
            return candidate
    return start


def resolve_env_name(explicit: str | None, environ: Mapping[str, str], configured: str | None, root: Path) -> str:
    """Pick the environment: --env, then OPS_ENV, then invoke config, then the only one."""
    for candidate in (explicit, environ.get("OPS_ENV"), configured):
        if candidate:
            return candidate
    names = env_files(root)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(
            f"no environments in {root / ENV_DIR}",
            hint="create env/<name>.env from env/staging.env.example, or run `inv lab.up`",
        )
    raise ConfigError(
        f"several environments ({', '.join(names)}) and none chosen",
        hint="pass --env NAME or set OPS_ENV",
    )


def _read_dotenv(path: Path, display: str) -> list[tuple[str, str, int]]:
    """(key, value, line) for each assignment; a line that does not parse is a ConfigError."""
    from dotenv.parser import parse_stream

    entries = []
    newlines_before = 0  # dotenv's own line numbers drift over blank lines: count ourselves
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            text = binding.original.string
            start = len(text) - len(text.lstrip())
            line = newlines_before + text.count("\n", 0, start) + 1
            newlines_before += text.count("\n")
            if binding.error:
                raise ConfigError(
                    f"cannot parse {text.strip()!r}",
                    where=f"{display}:{line}",
                    hint="write KEY=value",
                )
            if binding.key is None:
                continue
            entries.append((binding.key, binding.value or "", line))
    return entries


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_secrets(
    path: Path,
    root: Path,
    required: Iterable[tuple[str, int]],
    env_display: str,
    environ: Mapping[str, str],
    needed_by: Mapping[str, str] | None = None,
) -> Secrets:
    """Secrets from the secrets file (must be 0600-ish) and the process environment.

    required: (name, line of the env file asking for it); needed_by: name -> the key that asks for
    it when that is not SECRETS (REGISTRY_USER asks for REGISTRY_PASSWORD)."""
    values: dict[str, str] = {}
    display = _display(path, root)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"is readable by group or others (mode {mode:04o})",
                where=display,
                hint=f"run: chmod 600 {display}",
            )
        values.update({key: value for key, value, _ in _read_dotenv(path, display)})
    for name in OPERATOR_SECRETS:
        if environ.get(name):
            values[name] = environ[name]
    for name, line in required:
        if name in environ:
            values[name] = environ[name]
        if not values.get(name):
            reason = (needed_by or {}).get(name)
            raise ConfigError(
                f"{reason} is set but secret {name} is not" if reason else f"SECRETS: secret {name} is not set",
                where=f"{env_display}:{line}",
                hint=f"add {name}=... to {display} (mode 0600) or export {name}",
            )
    return Secrets(values)


def _check_registry(
    values: Mapping[str, object], lines: Mapping[str, int], display: str, existing_path: Callable[[str], Path | None]
) -> dict[str, str]:
    """The team registry keys hang together; the secrets they need (secret -> the key asking)."""
    for key in ("REGISTRY_USER", "REGISTRY_CA"):
        if values[key] and not values["REGISTRY"]:
            raise ConfigError(
                f"{key} is set but REGISTRY is empty",
                where=f"{display}:{lines[key]}",
                hint="set REGISTRY=host[:port]/path of the team registry, or remove " + key,
            )
    existing_path("REGISTRY_CA")
    return {"REGISTRY_PASSWORD": "REGISTRY_USER"} if str(values["REGISTRY_USER"]).strip() else {}


def _check_swarm(
    values: Mapping[str, object], lines: Mapping[str, int], display: str, hosts: tuple[HostSpec, ...]
) -> None:
    """ORCHESTRATOR=swarm needs a manager; SWARM_ADVERTISE_ADDR names hosts of HOSTS, and only for swarm."""
    swarm = values["ORCHESTRATOR"] == "swarm"
    advertise = values["SWARM_ADVERTISE_ADDR"]
    if advertise and not swarm:
        raise ConfigError(
            "SWARM_ADVERTISE_ADDR is set but ORCHESTRATOR is not swarm",
            where=f"{display}:{lines['SWARM_ADVERTISE_ADDR']}",
            hint="set ORCHESTRATOR=swarm, or remove SWARM_ADVERTISE_ADDR",
        )
    names = [spec.name for spec in hosts]
    for host, _ in advertise:  # type: ignore[attr-defined]
        if host not in names:
            raise ConfigError(
                f"SWARM_ADVERTISE_ADDR: {host!r} is not one of HOSTS",
                where=f"{display}:{lines['SWARM_ADVERTISE_ADDR']}",
                hint=f"name a host as HOSTS does: {', '.join(names)}",
            )
    if swarm and not any(spec.manager for spec in hosts):
        raise ConfigError(
            "ORCHESTRATOR=swarm but no host has the manager role",
            where=f"{display}:{lines['HOSTS'] or lines['ORCHESTRATOR']}",
            hint="mark one host (or 3, an odd number) with /manager, e.g. HOSTS=10.0.0.1/manager,10.0.0.2",
        )


def _check_s3_credentials(secrets: Secrets, lines: Mapping[str, int], display: str) -> None:
    """S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY come as a pair (neither: boto3's own credentials)."""
    given = [name for name in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY") if secrets.get(name)]
    if len(given) == 1:
        missing = "S3_SECRET_ACCESS_KEY" if given == ["S3_ACCESS_KEY_ID"] else "S3_ACCESS_KEY_ID"
        raise ConfigError(
            f"secret {given[0]} is set but {missing} is not",
            where=f"{display}:{lines['BACKUP_OFFSITE']}" if lines.get("BACKUP_OFFSITE") else display,
            hint="set both (secrets file or environment), or neither to use boto3's own credentials",
        )


def load_environment(name: str, root: Path, environ: Mapping[str, str]) -> Environment:
    """Read and validate env/<name>.env; every problem is one ConfigError with file:line."""
    if not NAME_RE.match(name):
        raise ConfigError(f"environment name {name!r} is not valid", hint="use lowercase letters, digits, - or _")
    path = root / ENV_DIR / f"{name}{ENV_SUFFIX}"
    display = _display(path, root)
    if not path.is_file():
        known = env_files(root)
        hint = f"known: {', '.join(known)}" if known else "create it from env/staging.env.example"
        raise ConfigError(f"environment {name!r} not found ({display} is missing)", hint=hint)

    raw: dict[str, tuple[str, int]] = {}
    for key, value, line in _read_dotenv(path, display):
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f"did you mean {close[0]}?" if close else "see env/staging.env.example for the keys"
            raise ConfigError(f"unknown key {key}", where=f"{display}:{line}", hint=hint)
        raw[key] = (value, line)

    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    for key, spec in KEYS.items():
        text, line = raw.get(key, (spec.default, 0))
        lines[key] = line
        if text is None:
            raise ConfigError(f"{key} is required", where=display, hint=f"add {key}=... ({spec.doc})")
        try:
            values[key] = spec.parse(text)
        except ValueError as error:
            raise ConfigError(f"{key}: {error}", where=f"{display}:{line}", hint=spec.doc) from None

    def existing_path(key: str, must_be_dir: bool = False) -> Path | None:
        text = str(values[key])
        if not text:
            return None
        candidate = Path(text).expanduser()
        resolved = candidate if candidate.is_absolute() else root / candidate
        ok = resolved.is_dir() if must_be_dir else resolved.is_file()
        if not ok:
            kind = "directory" if must_be_dir else "file"
            raise ConfigError(
                f"{key}: {kind} {text} does not exist",
                where=f"{display}:{lines[key]}",
                hint=f"create it or correct {key}",
            )
        return resolved

    deploy_user = str(values["DEPLOY_USER"]) or "deploy"
    identity_file = existing_path("SSH_IDENTITY_FILE")
    stack_dir = existing_path("STACK_DIR", must_be_dir=True)
    known_text = str(values["SSH_KNOWN_HOSTS"]) or f"{ENV_DIR}/{name}.known_hosts"
    known_hosts = Path(known_text).expanduser()
    if not known_hosts.is_absolute():
        known_hosts = root / known_hosts
    project = str(values["PROJECT"]) or (stack_dir.name if stack_dir else name)
    hosts = tuple(parse_host(entry, deploy_user) for entry in values["HOSTS"])  # type: ignore[attr-defined]
    _check_swarm(values, lines, display, hosts)
    required = [(secret, lines["SECRETS"]) for secret in values["SECRETS"]]  # type: ignore[attr-defined]
    needed_by = _check_registry(values, lines, display, existing_path)
    listed = set(values["SECRETS"])  # type: ignore[call-overload]
    required += [(secret, lines[key]) for secret, key in needed_by.items() if secret not in listed]
    secrets = read_secrets(
        root / ENV_DIR / f"{name}{SECRETS_SUFFIX}", root, required, display, environ, needed_by=needed_by
    )
    _check_s3_credentials(secrets, lines, display)
    return Environment(
        name=name,
        root=root,
        file=path,
        hosts=hosts,
        deploy_user=deploy_user,
        bootstrap_user=str(values["BOOTSTRAP_USER"]),
        identity_file=identity_file,
        known_hosts=known_hosts,
        connect_timeout=values["SSH_CONNECT_TIMEOUT"],  # type: ignore[arg-type]
        parallel=values["PARALLEL"],  # type: ignore[arg-type]
        stack_dir=stack_dir,
        project=project if NAME_RE.match(project) else name,
        secrets=secrets,
        settings=values,
    )
