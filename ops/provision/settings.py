"""What provisioning should make of a host: the environment's PROVISION keys read and validated
once into ProvisionSettings, and the public keys the deploy user accepts. Reads files, never a host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ops.config import Environment
from ops.errors import ConfigError

# The words PROVISION_SKIP accepts (documented with it in ops/config/keys.py and env/*.env.example);
# each step belongs to one of them, the OS check to none (tests/unit/test_provision.py ties the two).
STEP_KEYS = (
    "apt",
    "packages",
    "docker",
    "registry-ca",
    "deploy-user",
    "firewall",
    "unattended-upgrades",
    "fail2ban",
    "time",
    "swap",
    "sysctl",
    "project-dir",
    "ssh",
)
PORT_RE = re.compile(r"^(?P<port>[0-9]{1,5}(?::[0-9]{1,5})?)(?:/(?P<proto>tcp|udp))?$")
SYSCTL_RE = re.compile(r"^(?P<key>[a-z0-9_.]+)=(?P<value>[^\s=]+)$")
SIZE_RE = re.compile(r"^[0-9]+[kmg]?$")
REGISTRY_CERTS_DIR = "/etc/docker/certs.d"


@dataclass(frozen=True)
class ProvisionSettings:
    """What provisioning should make of a host, read from the environment's PROVISION keys."""

    deploy_user: str = "deploy"
    project: str = ""
    authorized_keys: tuple[str, ...] = ()
    deploy_sudo: bool = True
    skip: frozenset[str] = frozenset()
    docker_source: str = "auto"
    apt_cache_max_age: int = 3600
    baseline_packages: tuple[str, ...] = ("ca-certificates", "curl", "gnupg")
    firewall_ports: tuple[tuple[str, str], ...] = (("80", "tcp"), ("443", "tcp"))
    swap_mb: int = 0
    docker_log_max_size: str = "10m"
    docker_log_max_file: int = 3
    root_login: str = "no"
    time_sync: str = "auto"
    sysctl: tuple[tuple[str, str], ...] = (("vm.overcommit_memory", "1"),)
    registry_host: str = ""  # REGISTRY's host[:port]
    registry_ca: str = ""  # the content of REGISTRY_CA (PEM), empty when none
    swarm: bool = False  # ORCHESTRATOR=swarm: live-restore off, the hosts formed into a swarm

    def enabled(self, key: str) -> bool:
        return key not in self.skip

    @property
    def registry_ca_path(self) -> str:
        """Where Docker looks for the team registry's CA (per request: no restart), or ""."""
        return f"{REGISTRY_CERTS_DIR}/{self.registry_host}/ca.crt" if self.registry_ca else ""

    @classmethod
    def from_env(cls, env: Environment) -> ProvisionSettings:
        """Validate the PROVISION keys; each problem is a ConfigError naming the key and the file."""
        s = env.settings
        where = str(env.file)

        def bad(key: str, message: str, hint: str) -> ConfigError:
            return ConfigError(f"{key}: {message}", where=where, hint=hint)

        def choice(key: str, allowed: Sequence[str], default: str) -> str:
            value = str(s.get(key, default) or default).strip().lower()
            if value not in allowed:
                raise bad(key, f"{value!r} is not one of {', '.join(allowed)}", f"set {key}={allowed[0]}")
            return value

        skip = frozenset(str(word) for word in _seq(s.get("PROVISION_SKIP", ())))
        unknown = sorted(skip - set(STEP_KEYS))
        if unknown:
            raise bad("PROVISION_SKIP", f"unknown step {', '.join(unknown)}", f"steps: {', '.join(STEP_KEYS)}")
        ports: list[tuple[str, str]] = []
        for word in _seq(s.get("FIREWALL_ALLOW_PORTS", ("80", "443"))):
            match = PORT_RE.match(str(word))
            numbers = [int(n) for n in match["port"].split(":")] if match else []
            if not match or not all(1 <= n <= 65535 for n in numbers):
                raise bad("FIREWALL_ALLOW_PORTS", f"{word!r} is not PORT[/tcp|udp]", "e.g. 80,443,51820/udp")
            if ":" in match["port"] and not match["proto"]:
                raise bad("FIREWALL_ALLOW_PORTS", f"range {word!r} needs /tcp or /udp", "e.g. 60000:61000/udp")
            ports.append((match["port"], match["proto"] or "tcp"))
        sysctl: list[tuple[str, str]] = []
        for word in _seq(s.get("SYSCTL", ("vm.overcommit_memory=1",))):
            match = SYSCTL_RE.match(str(word))
            if not match:
                raise bad("SYSCTL", f"{word!r} is not key=value", "e.g. vm.overcommit_memory=1")
            sysctl.append((match["key"], match["value"]))
        max_size = str(s.get("DOCKER_LOG_MAX_SIZE", "10m") or "10m").lower()
        if not SIZE_RE.match(max_size):
            raise bad("DOCKER_LOG_MAX_SIZE", f"{max_size!r} is not a size", "e.g. 10m")
        root_login = choice("ROOT_LOGIN", ("no", "prohibit-password"), "no")
        deploy_sudo = bool(s.get("DEPLOY_SUDO", True))
        if root_login == "no" and not deploy_sudo and env.bootstrap_user == "root":
            raise bad(
                "DEPLOY_SUDO",
                "false with ROOT_LOGIN=no would leave no way to provision these hosts again",
                "set DEPLOY_SUDO=true, ROOT_LOGIN=prohibit-password, or a sudo BOOTSTRAP_USER",
            )
        return cls(
            deploy_user=env.deploy_user,
            project=env.project,
            authorized_keys=authorized_keys(env),
            deploy_sudo=deploy_sudo,
            skip=skip,
            docker_source=choice("DOCKER_SOURCE", ("auto", "distro", "docker"), "auto"),
            apt_cache_max_age=int(str(s.get("APT_CACHE_MAX_AGE", 3600))),
            baseline_packages=tuple(str(p) for p in _seq(s.get("BASELINE_PACKAGES", cls.baseline_packages))),
            firewall_ports=tuple(ports),
            swap_mb=int(str(s.get("SWAP_SIZE_MB", 0))),
            docker_log_max_size=max_size,
            docker_log_max_file=int(str(s.get("DOCKER_LOG_MAX_FILE", 3))),
            root_login=root_login,
            time_sync=choice("TIME_SYNC", ("auto", "chrony", "timesyncd"), "auto"),
            sysctl=tuple(sysctl),
            registry_host=env.registry.host,
            registry_ca=registry_ca(env),
            swarm=env.orchestrator.swarm,
        )


def _seq(value: object) -> tuple[object, ...]:
    if isinstance(value, str):
        return tuple(word for word in re.split(r"[\s,]+", value) if word)
    if isinstance(value, Iterable):
        return tuple(value)
    return ()


def registry_ca(env: Environment) -> str:
    """The PEM text of REGISTRY_CA (relative to the repository), or "" when it is not set."""
    name = env.registry.ca
    if not name:
        return ""
    path = Path(name).expanduser()
    path = path if path.is_absolute() else env.root / path
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"REGISTRY_CA: cannot read {name}: {error}", where=str(env.file)) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(
            f"REGISTRY_CA: {name} holds no PEM certificate", where=str(env.file), hint="give the CA's .crt (PEM)"
        )
    return text


def key_id(line: str) -> tuple[str, str] | None:
    """(type, base64) of an authorized_keys line, options and comment ignored."""
    parts = line.split()
    for index, part in enumerate(parts[:-1]):
        if part.startswith(("ssh-", "ecdsa-", "sk-")):
            return part, parts[index + 1]
    return None


def public_key_of(identity_file: Path) -> str:
    """The public key line of a private key: from KEY.pub when present, else derived with paramiko."""
    pub = identity_file.with_name(identity_file.name + ".pub")
    if pub.is_file():
        line = pub.read_text().strip().splitlines()[0] if pub.read_text().strip() else ""
        if key_id(line):
            return line
    import paramiko

    try:
        key = paramiko.PKey.from_path(str(identity_file))
    except paramiko.PasswordRequiredException:
        raise ConfigError(
            f"cannot derive the public key of {identity_file}: it is encrypted",
            hint=f"put its public key next to it as {pub.name}, or list it in DEPLOY_AUTHORIZED_KEYS",
        ) from None
    except (paramiko.SSHException, OSError, ValueError) as error:
        raise ConfigError(f"cannot read SSH key {identity_file}: {error}", hint="check SSH_IDENTITY_FILE") from None
    return f"{key.get_name()} {key.get_base64()} opskit"


def authorized_keys(env: Environment) -> tuple[str, ...]:
    """Keys the deploy user accepts: the environment's identity plus DEPLOY_AUTHORIZED_KEYS."""
    lines: list[str] = []
    if env.identity_file is not None:
        lines.append(public_key_of(env.identity_file))
    extra = str(env.settings.get("DEPLOY_AUTHORIZED_KEYS", "") or "")
    if extra:
        path = Path(extra).expanduser()
        path = path if path.is_absolute() else env.root / path
        if not path.is_file():
            raise ConfigError(f"DEPLOY_AUTHORIZED_KEYS: file {extra} does not exist", where=str(env.file))
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                if not key_id(line):
                    raise ConfigError(f"DEPLOY_AUTHORIZED_KEYS: {line[:40]!r} is not a public key", where=str(path))
                lines.append(line.strip())
    if not lines:
        raise ConfigError(
            "no key to authorize for the deploy user",
            where=str(env.file),
            hint="set SSH_IDENTITY_FILE or DEPLOY_AUTHORIZED_KEYS",
        )
    unique: dict[tuple[str, str] | None, str] = {}
    for line in lines:
        unique.setdefault(key_id(line), line)
    return tuple(unique.values())
