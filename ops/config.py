"""Environments: env/<name>.env (plus secrets) read into a validated, typed Environment.

Every problem is reported as a ConfigError naming the file, the line and the key. This module
reads files and the mapping of process variables it is given; it never reads os.environ itself.
"""

from __future__ import annotations

import difflib
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ops.errors import ConfigError

ENV_DIR = "env"
ENV_SUFFIX = ".env"
SECRETS_SUFFIX = ".secrets.env"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# user@host:port/role+role; user, port and roles optional. IPv6 addresses go in brackets.
HOST_RE = re.compile(
    r"^(?:(?P<user>[a-z_][a-z0-9_.-]*)@)?"
    r"(?P<address>\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:/(?P<roles>[a-z0-9_-]+(?:\+[a-z0-9_-]+)*))?$"
)


@dataclass(frozen=True)
class HostSpec:
    """One server of an environment, as written in HOSTS."""

    address: str
    port: int = 22
    user: str = "deploy"
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The short name used in output: host:port (port left out when 22)."""
        return self.address if self.port == 22 else f"{self.address}:{self.port}"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def as_user(self, user: str) -> HostSpec:
        return HostSpec(self.address, self.port, user, self.roles)


def parse_host(text: str, default_user: str = "deploy") -> HostSpec:
    """Parse `user@host:port/role+role`; raises ValueError with the reason."""
    match = HOST_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not [user@]host[:port][/role+role]")
    port = int(match["port"]) if match["port"] else 22
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r} has port {port}, outside 1-65535")
    roles = tuple(match["roles"].split("+")) if match["roles"] else ()
    return HostSpec(match["address"].strip("[]"), port, match["user"] or default_user, roles)


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

    def redact(self, text: str) -> str:
        # Longest first so that a secret containing another is hidden whole.
        for value in sorted(self._values.values(), key=len, reverse=True):
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:
        return f"Secrets({self.names()})"


@dataclass(frozen=True)
class Key:
    """One key an env file may set: its parser, its default and what it means."""

    parse: Callable[[str], object]
    default: str | None
    doc: str


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not true/false")


def _name(text: str) -> str:
    if text and not NAME_RE.match(text):
        raise ValueError(f"{text!r} must be lowercase letters, digits, '-' or '_'")
    return text


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in re.split(r"[\s,]+", text.strip()) if word)


def _hosts(text: str) -> tuple[str, ...]:
    entries = _words(text)
    if not entries:
        raise ValueError("no hosts given")
    for entry in entries:
        parse_host(entry)
    if len(set(entries)) != len(entries):
        raise ValueError("a host is listed twice")
    return entries


def _text(text: str) -> str:
    return text


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for word in _words(text):
        key, sep, value = word.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValueError(f"{word!r} is not NAME=value")
        pairs.append((key, value))
    return tuple(pairs)


# Every key an env file may set. Later capabilities add theirs here so that an unknown key is
# always caught; env/*.env.example documents each one (a unit test keeps them in step).
KEYS: dict[str, Key] = {
    "HOSTS": Key(_hosts, None, "servers, [user@]host[:port][/role+role], comma or space separated"),
    "DEPLOY_USER": Key(_name, "deploy", "everyday login user on the hosts, created by provisioning"),
    "BOOTSTRAP_USER": Key(_name, "root", "user that provisioning logs in as on fresh servers (root or sudo)"),
    "SSH_IDENTITY_FILE": Key(_text, "", "private key for SSH (path, relative to the repository)"),
    "SSH_KNOWN_HOSTS": Key(_text, "", "pinned host keys (default env/<name>.known_hosts)"),
    "SSH_CONNECT_TIMEOUT": Key(_int(1, 300), "10", "seconds to wait for an SSH connection"),
    "PARALLEL": Key(_int(1, 100), "10", "hosts worked on at once"),
    "STACK_DIR": Key(_text, "", "compose stack directory (relative to the repository)"),
    "PROJECT": Key(_name, "", "compose project name, also /opt/<project> on hosts"),
    "SECRETS": Key(_words, "", "names of secrets that must be set (secrets file or environment)"),
    "STACK_VARS": Key(_pairs, "", "variables for the stack's .env, NAME=value, comma separated"),
    "IMAGE_SOURCE": Key(_choice("send", "build", "pull"), "send", "how images reach hosts: send, build, pull"),
    "HEALTH_TIMEOUT": Key(_int(5, 3600), "120", "seconds a release may take to become healthy"),
    "SWAP_DRAIN": Key(_int(0, 600), "2", "seconds old containers drain after leaving rotation in a swap"),
    "KEEP_RELEASES": Key(_int(1, 100), "5", "releases kept per host (with their images)"),
    # Backups (ops/backup.py).
    "BACKUP_DIR": Key(
        _text, "", "snapshot directory on this machine (default backups/<env>, relative to the repository)"
    ),
    "BACKUP_TARGET": Key(
        _choice("local", "host"), "local", "where archives go: local (BACKUP_DIR here) or host (BACKUP_HOST_DIR)"
    ),
    "BACKUP_HOST_DIR": Key(
        _text, "", "snapshot directory on each host for BACKUP_TARGET=host (default /var/backups/opskit/<env>)"
    ),
    "BACKUP_INCLUDE": Key(_words, "", "volumes to back up (compose names, e.g. redis-data); default all"),
    "BACKUP_EXCLUDE": Key(_words, "", "volumes never backed up"),
    "BACKUP_COMPRESSION": Key(_choice("zstd", "gzip"), "zstd", "archive compression on the host: zstd or gzip"),
    "BACKUP_LEVEL": Key(
        _int(-10, 19), "1", "compression level: zstd 1-19, or -1..-10 for zstd --fast=N (quicker, larger); gzip 1-9"
    ),
    "BACKUP_TIMEOUT": Key(_int(5, 86400), "300", "seconds a hook, a Redis BGSAVE or a stop may take"),
    "BACKUP_AGE_RECIPIENT": Key(
        _text, "", "encrypt archives on this machine to this age public key (age1...) or recipients file"
    ),
    "BACKUP_AGE_IDENTITY": Key(
        _text, "", "age identity (private key) file for verify and restore of encrypted archives"
    ),
    "BACKUP_OFFSITE": Key(
        _text, "", "offsite copy over SSH: [user@]host[:port]:/path (host key pinned in the env's known_hosts)"
    ),
    "BACKUP_KEEP_LAST": Key(_int(0, 10000), "3", "prune keeps the newest N snapshots"),
    "BACKUP_KEEP_DAILY": Key(_int(0, 10000), "7", "prune keeps the newest snapshot of each of the last N days"),
    "BACKUP_KEEP_WEEKLY": Key(_int(0, 10000), "4", "prune keeps the newest snapshot of each of the last N weeks"),
    "BACKUP_KEEP_MONTHLY": Key(_int(0, 10000), "6", "prune keeps the newest snapshot of each of the last N months"),
    "BACKUP_MAX_AGE_HOURS": Key(
        _int(1, 8760), "26", "ops.doctor fails when the newest complete snapshot is older than this"
    ),
    # Provisioning (ops/provision.py; documented in env/*.env.example).
    "PROVISION_SKIP": Key(
        _words,
        "",
        "provisioning steps to leave out: apt packages docker deploy-user firewall "
        "unattended-upgrades fail2ban time swap sysctl project-dir ssh",
    ),
    "DOCKER_SOURCE": Key(
        _choice("auto", "distro", "docker"),
        "auto",
        "auto|distro|docker: Docker from the OS's packages or Docker's apt repository",
    ),
    "APT_CACHE_MAX_AGE": Key(_int(0, 31536000), "3600", "seconds before provisioning refreshes the apt cache"),
    "BASELINE_PACKAGES": Key(_words, "ca-certificates curl gnupg zstd", "packages every host gets"),
    "FIREWALL_ALLOW_PORTS": Key(_words, "80,443", "ports ufw lets in besides SSH: PORT[/tcp|udp], LOW:HIGH/proto"),
    "SWAP_SIZE_MB": Key(_int(0, 1048576), "0", "swap file size in MB (0: no swap file)"),
    "DOCKER_LOG_MAX_SIZE": Key(_text, "10m", "json-file log size before rotation (daemon.json log-opts max-size)"),
    "DOCKER_LOG_MAX_FILE": Key(_int(1, 100), "3", "json-file log files kept per container (log-opts max-file)"),
    "ROOT_LOGIN": Key(
        _choice("no", "prohibit-password"), "no", "sshd PermitRootLogin after provisioning: no|prohibit-password"
    ),
    "DEPLOY_SUDO": Key(
        _bool, "true", "deploy user gets passwordless sudo (needed to re-provision once root is closed)"
    ),
    "DEPLOY_AUTHORIZED_KEYS": Key(
        _text, "", "file of extra public keys for the deploy user (relative to the repository)"
    ),
    "TIME_SYNC": Key(_choice("auto", "chrony", "timesyncd"), "auto", "auto|chrony|timesyncd: time sync daemon"),
    "SYSCTL": Key(_words, "vm.overcommit_memory=1", "kernel settings key=value, persisted in /etc/sysctl.d"),
}


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
) -> Secrets:
    """Secrets from the secrets file (must be 0600-ish) and the process environment."""
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
    for name, line in required:
        if name in environ:
            values[name] = environ[name]
        if not values.get(name):
            raise ConfigError(
                f"SECRETS: secret {name} is not set",
                where=f"{env_display}:{line}",
                hint=f"add {name}=... to {display} (mode 0600) or export {name}",
            )
    return Secrets(values)


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
    required = [(secret, lines["SECRETS"]) for secret in values["SECRETS"]]  # type: ignore[attr-defined]
    secrets = read_secrets(root / ENV_DIR / f"{name}{SECRETS_SUFFIX}", root, required, display, environ)
    return Environment(
        name=name,
        root=root,
        file=path,
        hosts=tuple(parse_host(entry, deploy_user) for entry in values["HOSTS"]),  # type: ignore[attr-defined]
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
