"""Provisioning: turn fresh Ubuntu/Debian servers into Docker hosts with a deploy user, idempotently.

Facts, plan, apply: one shell round trip reads a host's state, each step plans the commands it
needs (none when the host is already right), and apply runs them with sudo. Everything is told
through a Reporter; this module never prints, never exits and never reads os.environ.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from ops.config import Environment, HostSpec
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Reporter, StepEvent
from ops.errors import CommandError, ConfigError, HostError, HostKeyError, OpsError
from ops.transport import Fleet, Host, Runner, SSHRunner

SUPPORTED = {("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12"), ("debian", "13")}
SUPPORTED_TEXT = "Ubuntu 22.04/24.04 and Debian 12/13"

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCE_FILE = "/etc/apt/sources.list.d/docker.list"
DOCKER_CE_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin")
DAEMON_JSON = "/etc/docker/daemon.json"
DOCKERD_LOG = "/var/log/dockerd.log"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-opskit.conf"  # sorts before cloud-init's 50-: sshd keeps the first value
SUDOERS_FILE = "/etc/sudoers.d/90-opskit-deploy"
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
UNATTENDED_ORIGINS = "/etc/apt/apt.conf.d/52opskit-unattended-upgrades"
FAIL2BAN_JAIL = "/etc/fail2ban/jail.d/opskit-sshd.local"
FAIL2BAN_POLL_LOG = "/var/log/auth.log"
SYSCTL_FILE = "/etc/sysctl.d/60-opskit.conf"
SWAP_FILE = "/swapfile"
APT_STAMP = "/var/lib/apt/periodic/opskit-update-stamp"
MANAGED_FILES = (
    DAEMON_JSON,
    DOCKER_SOURCE_FILE,
    SSHD_DROPIN,
    SUDOERS_FILE,
    AUTO_UPGRADES,
    UNATTENDED_ORIGINS,
    FAIL2BAN_JAIL,
    SYSCTL_FILE,
    "/etc/fstab",
    "/etc/default/ufw",
    "/etc/ufw/user.rules",
)
HEADER = "# Managed by opskit provisioning; local edits are overwritten.\n"

# Debian's frontend prompts and Ubuntu's needrestart prompt hang unattended runs; sudo's env_reset
# would drop plain exports, so the variables travel inside the command.
APT_ENV = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"
APT_GET = f"{APT_ENV} apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold"
APT_TIMEOUT = 1200.0
COMMAND_TIMEOUT = 300.0

STEP_KEYS = (
    "apt",
    "packages",
    "docker",
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


def q(text: str) -> str:
    return shlex.quote(text)


# ---------------------------------------------------------------- settings


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

    def enabled(self, key: str) -> bool:
        return key not in self.skip

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
        )


def _seq(value: object) -> tuple[object, ...]:
    if isinstance(value, str):
        return tuple(word for word in re.split(r"[\s,]+", value) if word)
    if isinstance(value, Iterable):
        return tuple(value)
    return ()


def _key_id(line: str) -> tuple[str, str] | None:
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
        if _key_id(line):
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
                if not _key_id(line):
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
        unique.setdefault(_key_id(line), line)
    return tuple(unique.values())


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class HostFacts:
    """What a host looks like now, read in one round trip; plans are computed from this alone."""

    os_id: str = ""
    version_id: str = ""
    codename: str = ""
    pretty_name: str = ""
    arch: str = ""
    has_systemd: bool = False
    in_container: bool = False
    packages: frozenset[str] = frozenset()
    apt_cache_age: int | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    deploy_home: str | None = None
    deploy_groups: frozenset[str] = frozenset()
    deploy_authorized_keys: str = ""
    docker_group: bool = False
    sshd: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sshd_error: str = ""
    docker_version: str = ""
    compose_version: str = ""
    dockerd_running: bool = False
    docker_enabled: bool = False
    docker_key_fingerprint: str = ""
    ufw_active: bool = False
    fail2ban_jails: frozenset[str] = frozenset()
    fail2ban_running: bool = False
    services: Mapping[str, str] = field(default_factory=dict)
    ntp_enabled: bool = False
    swaps: tuple[str, ...] = ()
    sysctl: Mapping[str, str] = field(default_factory=dict)
    sysctl_writable: frozenset[str] = frozenset()
    project_dir: str = ""
    chronyd_running: bool = False

    @property
    def supported(self) -> bool:
        return (self.os_id, self.version_id) in SUPPORTED

    @property
    def os_label(self) -> str:
        return self.pretty_name or f"{self.os_id} {self.version_id}".strip() or "unknown OS"

    def file(self, path: str) -> str | None:
        return self.files.get(path)

    def ufw_rules(self) -> frozenset[tuple[str, str]]:
        """(port, proto) allowed in from anywhere, as ufw stores its user rules."""
        rules = set()
        for line in (self.file("/etc/ufw/user.rules") or "").splitlines():
            parts = line.split()
            # ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
            if (
                line.startswith("### tuple ###")
                and len(parts) >= 10
                and parts[3] == "allow"
                and parts[9] == "in"
                and parts[8] in ("0.0.0.0/0", "::/0")
                and parts[7] == "any"
            ):
                rules.add((parts[5], parts[4]))
        return frozenset(rules)

    def ufw_default(self, name: str) -> str:
        match = re.search(rf'^{name}="?([A-Z]+)"?', self.file("/etc/default/ufw") or "", re.MULTILINE)
        return match.group(1) if match else ""

    @property
    def ssh_ports(self) -> tuple[str, ...]:
        return self.sshd.get("port", ("22",))


def facts_script(settings: ProvisionSettings) -> str:
    """One POSIX shell script that prints every fact in @@sections@@; it changes nothing (beyond
    creating sshd's empty runtime directory in /run, as the ssh service itself does)."""
    user = q(settings.deploy_user)
    project_dir = q(f"/opt/{settings.project}") if settings.project else "''"
    files = " ".join(q(path) for path in MANAGED_FILES)
    sysctl_lines = "".join(
        f"printf '%s=%s\\n' {q(key)} \"$(sysctl -n {q(key)} 2>/dev/null)\"; "
        f"[ -w /proc/sys/{key.replace('.', '/')} ] && echo 'writable {key}'; "
        for key, _ in settings.sysctl
    )
    return f"""
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; LC_ALL=C; export LC_ALL
s() {{ printf '\\n@@%s@@\\n' "$1"; }}
s os-release; cat /etc/os-release 2>/dev/null
s arch; dpkg --print-architecture 2>/dev/null
s systemd; [ -d /run/systemd/system ] && echo yes
s container; {{ [ -e /.dockerenv ] || [ -e /run/.containerenv ]; }} && echo yes
s packages; dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}}\\n' 2>/dev/null | awk '$1=="ii"{{print $2}}'
s apt-age; now=$(date +%s); newest=0
for f in /var/lib/apt/periodic/update-success-stamp {APT_STAMP} /var/lib/apt/lists/partial; do
  [ -e "$f" ] && m=$(stat -c %Y "$f") && [ "$m" -gt "$newest" ] && newest=$m
done
if ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages'; then echo $((now - newest)); else echo never; fi
for f in {files}; do [ -f "$f" ] && {{ s "file $f"; cat "$f"; }}; done
s deploy-passwd; getent passwd {user}
s deploy-groups; id -nG {user} 2>/dev/null
s deploy-keys; home=$(getent passwd {user} | cut -d: -f6); [ -n "$home" ] && cat "$home/.ssh/authorized_keys" 2>/dev/null
s docker-group; getent group docker >/dev/null && echo yes
s sshd; [ -d /run/sshd ] || mkdir -p -m 0755 /run/sshd  # runtime dir sshd -T insists on (socket-activated ssh)
sshd -T 2>&1
s docker-version; command -v docker >/dev/null && timeout 10 docker version --format '{{{{.Server.Version}}}}' 2>/dev/null
s compose-version; command -v docker >/dev/null && docker compose version --short 2>/dev/null
s dockerd; pidof dockerd >/dev/null && echo yes
s docker-key; if [ -f {DOCKER_KEYRING} ] && command -v gpg >/dev/null; then
  g=$(mktemp -d); gpg --homedir "$g" --batch --show-keys --with-colons {DOCKER_KEYRING} 2>/dev/null \\
    | awk -F: '/^fpr/{{print $10; exit}}'; rm -rf "$g"; fi
s ufw; command -v ufw >/dev/null && ufw status 2>/dev/null | head -1
s fail2ban; command -v fail2ban-client >/dev/null && timeout 10 fail2ban-client status 2>/dev/null
s services; if [ -d /run/systemd/system ]; then
  for u in docker fail2ban chrony systemd-timesyncd; do
    echo "$u $(systemctl is-enabled $u 2>/dev/null || true) $(systemctl is-active $u 2>/dev/null || true)"; done; fi
s ntp; command -v timedatectl >/dev/null && [ -d /run/systemd/system ] && timedatectl show -p NTP --value 2>/dev/null
s chronyd; pidof chronyd >/dev/null && echo yes
s swaps; tail -n +2 /proc/swaps 2>/dev/null
s sysctl; {sysctl_lines}:
s project-dir; [ -n {project_dir} ] && [ -d {project_dir} ] && stat -c '%U:%G:%a' {project_dir}
s end
"""


def parse_facts(text: str) -> HostFacts:
    """HostFacts from the facts script's output (also how unit tests build facts from fixtures)."""
    sections: dict[str, str] = {}
    name = ""
    lines: list[str] = []
    for line in text.split("\n"):
        match = re.match(r"^@@(.+)@@$", line)
        if match:
            if name:
                sections[name] = "\n".join(lines)
            name, lines = match.group(1), []
        else:
            lines.append(line)
    if name:
        sections[name] = "\n".join(lines)

    def get(key: str) -> str:
        return sections.get(key, "").strip()

    os_release: dict[str, str] = {}
    for line in get("os-release").splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            os_release[key.strip()] = value.strip().strip('"')
    # printf puts a newline before each marker, so a section's lines joined give the file byte for byte.
    files = {key[5:]: value for key, value in sections.items() if key.startswith("file ")}
    passwd = get("deploy-passwd").split(":")
    sshd: dict[str, list[str]] = {}
    sshd_text = get("sshd")
    for line in sshd_text.splitlines():
        key, _, value = line.partition(" ")
        if key and value and key.islower():
            sshd.setdefault(key, []).append(value.strip())
    services = {}
    for line in get("services").splitlines():
        parts = line.split()
        if parts:
            services[parts[0]] = " ".join(parts[1:])
    sysctl: dict[str, str] = {}
    writable = set()
    for line in get("sysctl").splitlines():
        if line.startswith("writable "):
            writable.add(line.split()[1])
        elif "=" in line:
            key, _, value = line.partition("=")
            sysctl[key] = " ".join(value.split())
    age = get("apt-age")
    jails_match = re.search(r"Jail list:\s*(.*)", get("fail2ban"))
    return HostFacts(
        os_id=os_release.get("ID", ""),
        version_id=os_release.get("VERSION_ID", ""),
        codename=os_release.get("VERSION_CODENAME", "") or os_release.get("UBUNTU_CODENAME", ""),
        pretty_name=os_release.get("PRETTY_NAME", ""),
        arch=get("arch"),
        has_systemd=get("systemd") == "yes",
        in_container=get("container") == "yes",
        packages=frozenset(get("packages").split()),
        apt_cache_age=int(age) if age.isdigit() else None,
        files=files,
        deploy_home=passwd[5] if len(passwd) >= 7 else None,
        deploy_groups=frozenset(get("deploy-groups").split()),
        deploy_authorized_keys=get("deploy-keys"),
        docker_group=get("docker-group") == "yes",
        sshd={key: tuple(values) for key, values in sshd.items()},
        sshd_error="" if "port" in sshd else (sshd_text.splitlines() or ["sshd -T printed nothing"])[-1],
        docker_version=get("docker-version"),
        compose_version=get("compose-version"),
        dockerd_running=get("dockerd") == "yes",
        docker_enabled=services.get("docker", "").startswith("enabled"),
        docker_key_fingerprint=get("docker-key").upper(),
        ufw_active=get("ufw").startswith("Status: active"),
        fail2ban_jails=frozenset(re.split(r"[,\s]+", jails_match.group(1).strip())) - {""}
        if jails_match
        else frozenset(),
        fail2ban_running="Number of jail" in get("fail2ban"),
        services=services,
        ntp_enabled=get("ntp") == "yes",
        swaps=tuple(line.split()[0] for line in get("swaps").splitlines() if line.split()),
        sysctl=sysctl,
        sysctl_writable=frozenset(writable),
        project_dir=get("project-dir"),
        chronyd_running=get("chronyd") == "yes",
    )


def read_facts(host: Host, settings: ProvisionSettings) -> HostFacts:
    """Read every fact of host in one SSH round trip (as root, through sudo when needed)."""
    result = host.sudo(facts_script(settings), timeout=120)
    if "@@end@@" not in result.stdout:
        raise HostError("reading facts gave no complete answer", where=host.name, hint="is /bin/sh a POSIX shell?")
    return parse_facts(result.stdout)


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class Change:
    """One thing a step changes: what a person reads, and the shell commands (run as root) doing it.

    may_fail: a command failure is reported as a note ("not possible here") instead of failing the
    step, for what containers cannot do (swapon, writing /proc/sys).
    """

    description: str
    commands: tuple[str, ...]
    may_fail: bool = False
    timeout: float = COMMAND_TIMEOUT
    installs: tuple[str, ...] = ()  # packages this change installs: a dry run assumes them for later steps


class StepSkipped(Exception):
    """Raised by a plan when the step does not apply to this host (reported as skipped)."""


@dataclass(frozen=True)
class Context:
    """What a step may use besides facts: the settings, and how to prove a fresh deploy login."""

    settings: ProvisionSettings
    spec: HostSpec | None = None
    runner_factory: Callable[[HostSpec], Runner] | None = None


def write_file(path: str, content: str, mode: str = "0644", owner: str = "root:root", validate: str = "") -> str:
    """A command that replaces path atomically with content; validate ({} = the new file) gates the swap."""
    data = base64.b64encode(content.encode()).decode()
    tmp = q(f"{path}.opskit-new")
    parent = q(str(Path(path).parent))
    command = f"mkdir -p {parent} && printf %s {data} | base64 -d > {tmp} && chmod {mode} {tmp} && chown {owner} {tmp}"
    if validate:
        command += f" && {{ {validate.format(tmp)} || {{ rm -f {tmp}; exit 1; }}; }}"
    return f"{command} && mv -f {tmp} {q(path)}"


def apt_install(packages: Iterable[str]) -> str:
    return f"{APT_GET} install --no-install-recommends {' '.join(q(p) for p in packages)}"


def apt_update() -> str:
    return f"{APT_GET} update && mkdir -p {Path(APT_STAMP).parent} && touch {APT_STAMP}"


def install_change(facts: HostFacts, packages: Iterable[str]) -> list[Change]:
    missing = [p for p in dict.fromkeys(packages) if p not in facts.packages]
    if not missing:
        return []
    return [
        Change(f"install {' '.join(missing)}", (apt_install(missing),), timeout=APT_TIMEOUT, installs=tuple(missing))
    ]


def docker_source(facts: HostFacts, settings: ProvisionSettings) -> str:
    """Where Docker comes from: Debian 13's own packages carry Compose v2; elsewhere Docker's repository."""
    if settings.docker_source != "auto":
        return settings.docker_source
    return "distro" if (facts.os_id, facts.version_id) == ("debian", "13") else "docker"


def docker_packages(facts: HostFacts, settings: ProvisionSettings) -> tuple[str, ...]:
    source = docker_source(facts, settings)
    if source == "docker":
        return DOCKER_CE_PACKAGES
    if facts.os_id == "ubuntu":
        return ("docker.io", "docker-compose-v2")
    if facts.version_id == "12":
        raise HostError(
            "Debian 12's own packages have no Compose v2 (docker-compose there is v1)",
            hint="use DOCKER_SOURCE=docker or auto",
        )
    # docker-cli is only a Recommends of docker.io and we install without recommends.
    return ("docker.io", "docker-cli", "docker-compose")


def docker_apt_line(facts: HostFacts) -> str:
    return (
        f"deb [arch={facts.arch} signed-by={DOCKER_KEYRING}] "
        f"https://download.docker.com/linux/{facts.os_id} {facts.codename} stable\n"
    )


def time_sync_kind(facts: HostFacts, settings: ProvisionSettings) -> str:
    if settings.time_sync != "auto":
        return settings.time_sync
    # Without systemd there is no timesyncd to run; chrony works anywhere.
    if not facts.has_systemd or "chrony" in facts.packages:
        return "chrony"
    return "timesyncd"


def daemon_json(facts: HostFacts, settings: ProvisionSettings) -> str:
    """The wanted daemon.json: the host's own keys kept, ours (log rotation, live-restore) set."""
    current: dict[str, object] = {}
    try:
        loaded = json.loads(facts.file(DAEMON_JSON) or "{}")
        current = loaded if isinstance(loaded, dict) else {}
    except ValueError:
        current = {}
    log_opts = current.get("log-opts")
    merged_opts = dict(log_opts) if isinstance(log_opts, dict) else {}
    merged_opts.update({"max-size": settings.docker_log_max_size, "max-file": str(settings.docker_log_max_file)})
    wanted = {**current, "log-driver": "json-file", "log-opts": merged_opts, "live-restore": True}
    return json.dumps(wanted, indent=2, sort_keys=True) + "\n"


def sshd_config(settings: ProvisionSettings, root_login: str | None) -> str:
    lines = [
        HEADER.rstrip("\n"),
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "PubkeyAuthentication yes",
    ]
    if root_login:
        lines.append(f"PermitRootLogin {root_login}")
    return "\n".join(lines) + "\n"


# sshd -T spells prohibit-password as without-password on some versions.
SSHD_ALIASES = {"without-password": "prohibit-password"}


def sshd_wanted(settings: ProvisionSettings) -> dict[str, str]:
    return {
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "permitrootlogin": settings.root_login,
    }


def _sshd_matches(facts: HostFacts, settings: ProvisionSettings) -> list[str]:
    """Effective sshd settings that differ from what we want, as `key value`."""
    wrong = []
    for key, value in sshd_wanted(settings).items():
        have = facts.sshd.get(key, ("",))[0]
        if SSHD_ALIASES.get(have, have) != value:
            wrong.append(f"{key} {have or '?'}")
    return wrong


def fail2ban_jail(facts: HostFacts, settings: ProvisionSettings) -> str:
    lines = [HEADER.rstrip("\n"), "[sshd]", "enabled = true", f"port = {','.join(facts.ssh_ports)}"]
    if facts.has_systemd:
        lines.append("backend = systemd")
    else:
        # No journal and often no auth.log: polling a file that exists keeps the jail up.
        lines += ["backend = polling", f"logpath = {FAIL2BAN_POLL_LOG}"]
    if settings.enabled("firewall"):
        lines.append("banaction = ufw")
    return "\n".join(lines) + "\n"


def unattended_origins(facts: HostFacts) -> str | None:
    """Debian's default also takes point releases; narrow it to security. Ubuntu's default is security."""
    if facts.os_id != "debian":
        return None
    return (
        "// Managed by opskit provisioning: security updates only.\n"
        "#clear Unattended-Upgrade::Origins-Pattern;\n"
        "Unattended-Upgrade::Origins-Pattern {\n"
        '  "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";\n'
        '  "origin=Debian,codename=${distro_codename},label=Debian-Security";\n'
        "};\n"
    )


AUTO_UPGRADES_TEXT = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'


def step_packages(facts: HostFacts, settings: ProvisionSettings) -> list[str]:
    """Baseline plus what the enabled later steps need, installed in one apt transaction."""
    wanted = list(settings.baseline_packages)
    if settings.enabled("deploy-user") and settings.deploy_sudo:
        wanted.append("sudo")
    if settings.enabled("firewall"):
        wanted.append("ufw")
    if settings.enabled("unattended-upgrades"):
        wanted.append("unattended-upgrades")
    if settings.enabled("fail2ban"):
        wanted += ["fail2ban"] + (["python3-systemd"] if facts.has_systemd else [])
    if settings.enabled("time"):
        wanted.append("chrony" if time_sync_kind(facts, settings) == "chrony" else "systemd-timesyncd")
    return wanted


class Step:
    """One provisioning step: plan from facts (empty when the host is right), then apply."""

    name: ClassVar[str] = ""
    key: ClassVar[str] = ""

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        raise NotImplementedError

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        """The detail shown when nothing needs to change."""
        return ""

    def apply(self, host: Host, changes: Sequence[Change], facts: HostFacts, ctx: Context) -> list[str]:
        """Run the changes; returns notes for what could not be done here but is not a failure."""
        notes = []
        for change in changes:
            for command in change.commands:
                result = host.sudo(command, check=not change.may_fail, timeout=change.timeout)
                if not result.ok:
                    reason = _last_line(result.stderr or result.stdout)
                    notes.append(f"{change.description}: not possible here ({reason})")
                    break
        return notes


class OsStep(Step):
    name, key = "os", "os"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        return []

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{facts.os_label} {facts.arch}".strip()


class AptCacheStep(Step):
    name, key = "apt cache", "apt"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        age = facts.apt_cache_age
        if age is not None and age <= ctx.settings.apt_cache_max_age:
            return []
        why = "never refreshed" if age is None else f"{age // 60} min old"
        return [Change(f"apt-get update ({why})", (apt_update(),), timeout=APT_TIMEOUT)]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"refreshed {(facts.apt_cache_age or 0) // 60} min ago"


class PackagesStep(Step):
    name, key = "packages", "packages"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        return install_change(facts, step_packages(facts, ctx.settings))

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{len(set(step_packages(facts, ctx.settings)))} installed"


class DockerPackagesStep(Step):
    name, key = "docker packages", "docker"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        packages = docker_packages(facts, ctx.settings)
        changes: list[Change] = []
        if docker_source(facts, ctx.settings) == "docker":
            changes += install_change(facts, ("ca-certificates", "curl", "gnupg"))
            if facts.docker_key_fingerprint != DOCKER_KEY_FINGERPRINT:
                url = f"https://download.docker.com/linux/{facts.os_id}/gpg"
                new = f"{DOCKER_KEYRING}.opskit-new"
                # The key is fetched over TLS and then pinned by fingerprint: a different key is refused.
                check = (
                    f'g=$(mktemp -d); fpr=$(gpg --homedir "$g" --batch --show-keys --with-colons {new} '
                    f"| awk -F: '/^fpr/{{print $10; exit}}'); rm -rf \"$g\"; "
                    f'if [ "$fpr" != {DOCKER_KEY_FINGERPRINT} ]; then rm -f {new}; '
                    f'echo "Docker signing key fingerprint is $fpr, expected {DOCKER_KEY_FINGERPRINT}" >&2; exit 1; fi'
                )
                changes.append(
                    Change(
                        f"add Docker's signing key {DOCKER_KEY_FINGERPRINT[-16:]} to {DOCKER_KEYRING}",
                        (
                            f"install -m 0755 -d /etc/apt/keyrings && curl -fsSL {url} -o {new}",
                            check,
                            f"chmod 0644 {new} && mv -f {new} {DOCKER_KEYRING}",
                        ),
                    )
                )
            line = docker_apt_line(facts)
            if facts.file(DOCKER_SOURCE_FILE) != line or any(c.description.startswith("add Docker") for c in changes):
                changes.append(
                    Change(
                        f"add Docker apt source ({facts.codename} stable)",
                        (write_file(DOCKER_SOURCE_FILE, line), apt_update()),
                        timeout=APT_TIMEOUT,
                    )
                )
        changes += install_change(facts, packages)
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{' '.join(docker_packages(facts, ctx.settings))} ({docker_source(facts, ctx.settings)})"


def _start_dockerd(facts: HostFacts) -> str:
    if facts.has_systemd:
        return "systemctl enable --now docker"
    # No systemd (containers, lab hosts): start it detached so it outlives this SSH session. Inside a
    # container the inner dockerd cannot disable IPv6 on its interfaces without this variable.
    env = "env DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1 " if facts.in_container else ""
    return (
        f"pidof dockerd >/dev/null || {{ {env}setsid nohup dockerd >>{DOCKERD_LOG} 2>&1 </dev/null & }}; "
        "i=0; until docker version >/dev/null 2>&1; do i=$((i+1)); "
        f"if [ $i -gt 150 ]; then echo 'dockerd did not answer within 30 s, see {DOCKERD_LOG}:' >&2; "
        f"tail -n 5 {DOCKERD_LOG} >&2; exit 1; fi; sleep 0.2; done"
    )


def _restart_dockerd(facts: HostFacts) -> str:
    if facts.has_systemd:
        return "systemctl restart docker"
    stop = (
        "if pidof dockerd >/dev/null; then kill $(pidof dockerd); i=0; while pidof dockerd >/dev/null; do "
        "i=$((i+1)); [ $i -gt 150 ] && { echo 'dockerd did not stop within 30 s' >&2; exit 1; }; sleep 0.2; done; fi"
    )
    return f"{stop}; {_start_dockerd(facts)}"


class DaemonJsonStep(Step):
    name, key = "docker daemon.json", "docker"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        wanted = daemon_json(facts, ctx.settings)
        if facts.file(DAEMON_JSON) == wanted:
            return []
        commands = [write_file(DAEMON_JSON, wanted, validate="dockerd --validate --config-file={}")]
        # Log options only reach a restarted engine; live-restore (already on, or off with no
        # containers yet on a fresh host) keeps running containers up across the restart.
        if facts.dockerd_running:
            commands.append(_restart_dockerd(facts))
        what = f"log rotation {ctx.settings.docker_log_max_size} x {ctx.settings.docker_log_max_file}, live-restore"
        return [Change(f"write {DAEMON_JSON} ({what})", tuple(commands))]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"log rotation {ctx.settings.docker_log_max_size} x {ctx.settings.docker_log_max_file}, live-restore"


class DockerEngineStep(Step):
    name, key = "docker engine", "docker"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        running = facts.dockerd_running and bool(facts.docker_version)
        if facts.has_systemd:
            if running and facts.docker_enabled:
                return []
            return [Change("enable and start docker (systemd)", (_start_dockerd(facts),))]
        if running:
            return []
        return [Change("start dockerd (no systemd: detached with setsid)", (_start_dockerd(facts),))]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        how = "systemd" if facts.has_systemd else "no systemd"
        return f"docker {facts.docker_version} running ({how}), compose {facts.compose_version or 'missing'}"


class DeployUserStep(Step):
    name, key = "deploy user", "deploy-user"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        s = ctx.settings
        user = s.deploy_user
        changes: list[Change] = []
        groups = ["docker"] if facts.docker_group else []
        home = facts.deploy_home or f"/home/{user}"
        if facts.deploy_home is None:
            # '*' is no password at all (not a locked account): key login works even with UsePAM no.
            group_opt = f" --groups {','.join(groups)}" if groups else ""
            changes.append(
                Change(
                    f"create user {user}" + (" in group docker" if groups else ""),
                    (f"useradd --create-home --shell /bin/bash --user-group --password '*'{group_opt} {q(user)}",),
                )
            )
        elif facts.docker_group and "docker" not in facts.deploy_groups:
            changes.append(Change(f"add {user} to group docker", (f"usermod -aG docker {q(user)}",)))
        have = {_key_id(line) for line in facts.deploy_authorized_keys.splitlines()}
        missing = [line for line in s.authorized_keys if _key_id(line) not in have]
        if missing:
            kept = [line for line in facts.deploy_authorized_keys.splitlines() if line.strip()]
            text = "\n".join(kept + missing) + "\n"
            ssh_dir = q(f"{home}/.ssh")
            changes.append(
                Change(
                    f"authorize {len(missing)} key(s) for {user}",
                    (
                        f"install -d -m 0700 -o {q(user)} -g {q(user)} {ssh_dir}",
                        write_file(f"{home}/.ssh/authorized_keys", text, "0600", f"{user}:{user}"),
                    ),
                )
            )
        sudoers = f"{HEADER}{user} ALL=(ALL:ALL) NOPASSWD:ALL\n"
        current = facts.file(SUDOERS_FILE)
        if s.deploy_sudo and current != sudoers:
            changes += install_change(facts, ("sudo",))
            changes.append(
                Change(
                    f"passwordless sudo for {user} ({SUDOERS_FILE})",
                    (write_file(SUDOERS_FILE, sudoers, "0440", validate="visudo -cqf {}"),),
                )
            )
        elif not s.deploy_sudo and current is not None:
            changes.append(Change(f"remove sudo for {user}", (f"rm -f {SUDOERS_FILE}",)))
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        s = ctx.settings
        parts = [s.deploy_user, "docker group" if "docker" in facts.deploy_groups else "no docker group"]
        parts.append("sudo" if s.deploy_sudo else "no sudo")
        return ", ".join(parts)


class FirewallStep(Step):
    name, key = "firewall", "firewall"

    def wanted(self, facts: HostFacts, ctx: Context) -> list[tuple[str, str, str]]:
        # The port sshd listens on, not the one in HOSTS: behind NAT (the lab) they differ.
        rules = [(port, "tcp", "opskit ssh") for port in facts.ssh_ports]
        rules += [(port, proto, "opskit") for port, proto in ctx.settings.firewall_ports]
        return rules

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        changes = install_change(facts, ("ufw",))
        if (
            facts.ufw_default("DEFAULT_INPUT_POLICY") != "DROP"
            or facts.ufw_default("DEFAULT_OUTPUT_POLICY") != "ACCEPT"
        ):
            changes.append(
                Change(
                    "default deny incoming, allow outgoing",
                    ("ufw default deny incoming", "ufw default allow outgoing"),
                )
            )
        have = facts.ufw_rules()
        for port, proto, comment in self.wanted(facts, ctx):
            if (port, proto) not in have:
                changes.append(Change(f"allow {port}/{proto}", (f"ufw allow {port}/{proto} comment {q(comment)}",)))
        if not facts.ufw_active:
            # Rules for SSH are in place before this; ufw keeps established connections.
            changes.append(Change("enable ufw", ("ufw --force enable",)))
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        ports = ", ".join(f"{p}/{proto}" for p, proto, _ in self.wanted(facts, ctx))
        return f"active, deny incoming, allow {ports}"


class UnattendedUpgradesStep(Step):
    name, key = "unattended-upgrades", "unattended-upgrades"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        changes = install_change(facts, ("unattended-upgrades",))
        if facts.file(AUTO_UPGRADES) != AUTO_UPGRADES_TEXT:
            changes.append(
                Change(
                    f"enable daily security upgrades ({AUTO_UPGRADES})",
                    (write_file(AUTO_UPGRADES, AUTO_UPGRADES_TEXT),),
                )
            )
        origins = unattended_origins(facts)
        if origins is not None and facts.file(UNATTENDED_ORIGINS) != origins:
            changes.append(
                Change(
                    f"security origins only ({UNATTENDED_ORIGINS})",
                    (write_file(UNATTENDED_ORIGINS, origins, validate="apt-config -c {} dump >/dev/null"),),
                )
            )
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return "daily, security updates"


class Fail2banStep(Step):
    name, key = "fail2ban", "fail2ban"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        packages = ["fail2ban"] + (["python3-systemd"] if facts.has_systemd else [])
        changes = install_change(facts, packages)
        jail = fail2ban_jail(facts, ctx.settings)
        new_jail = facts.file(FAIL2BAN_JAIL) != jail
        if new_jail:
            # The polling backend refuses to start on a log file that does not exist.
            prepare = () if facts.has_systemd else (f"touch {FAIL2BAN_POLL_LOG}",)
            changes.append(
                Change(
                    f"sshd jail ({'systemd' if facts.has_systemd else 'polling ' + FAIL2BAN_POLL_LOG} backend)",
                    (*prepare, write_file(FAIL2BAN_JAIL, jail), "fail2ban-client -t >/dev/null"),
                )
            )
        if facts.has_systemd:
            enabled = facts.services.get("fail2ban", "").startswith("enabled")
            if new_jail and facts.fail2ban_running:
                changes.append(Change("restart fail2ban", ("systemctl enable fail2ban && systemctl restart fail2ban",)))
            elif not facts.fail2ban_running or not enabled or "sshd" not in facts.fail2ban_jails:
                changes.append(
                    Change("enable and start fail2ban", ("systemctl enable fail2ban && systemctl restart fail2ban",))
                )
        elif new_jail and facts.fail2ban_running:
            changes.append(Change("reload fail2ban", ("fail2ban-client reload",)))
        elif not facts.fail2ban_running or "sshd" not in facts.fail2ban_jails:
            changes.append(
                Change(
                    "start fail2ban (no systemd)",
                    (
                        (
                            f"touch {FAIL2BAN_POLL_LOG}; fail2ban-client ping >/dev/null 2>&1 && fail2ban-client reload "
                            "|| fail2ban-client -x start"
                        ),
                    ),
                )
            )
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"running, jails: {', '.join(sorted(facts.fail2ban_jails)) or 'none'}"


class TimeSyncStep(Step):
    name, key = "time sync", "time"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        kind = time_sync_kind(facts, ctx.settings)
        if kind == "timesyncd":
            changes = install_change(facts, ("systemd-timesyncd",))
            if not facts.ntp_enabled:
                changes.append(Change("enable systemd-timesyncd", ("timedatectl set-ntp true",)))
            return changes
        changes = install_change(facts, ("chrony",))
        if facts.in_container:
            return changes  # the clock belongs to the machine under the container: never steer it from here
        if facts.has_systemd:
            if not facts.services.get("chrony", "").startswith("enabled") or not facts.chronyd_running:
                changes.append(Change("enable and start chrony", ("systemctl enable --now chrony",)))
        elif not facts.chronyd_running:
            changes.append(Change("start chronyd (no systemd)", ("chronyd",)))
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        kind = time_sync_kind(facts, ctx.settings)
        if kind == "chrony" and facts.in_container:
            return "chrony installed; not started in a container (the clock belongs to the machine)"
        return f"{kind} running"


class SwapStep(Step):
    name, key = "swap", "swap"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        size = ctx.settings.swap_mb
        if size <= 0:
            raise StepSkipped("off (SWAP_SIZE_MB=0)")
        if facts.in_container:
            raise StepSkipped(f"{size} MB wanted, but a container cannot enable swap (swapon is refused)")
        changes: list[Change] = []
        fstab = facts.file("/etc/fstab") or ""
        if SWAP_FILE not in facts.swaps:
            changes.append(
                Change(
                    f"create and enable {SWAP_FILE} ({size} MB)",
                    (
                        (
                            f"[ -f {SWAP_FILE} ] && [ $(stat -c %s {SWAP_FILE}) -eq {size * 1024 * 1024} ] || "
                            f"{{ rm -f {SWAP_FILE}; fallocate -l {size}M {SWAP_FILE} || dd if=/dev/zero of={SWAP_FILE} bs=1M "
                            f"count={size} status=none; }}"
                        ),
                        f"chmod 600 {SWAP_FILE} && mkswap {SWAP_FILE} >/dev/null && swapon {SWAP_FILE}",
                    ),
                    may_fail=True,
                    timeout=600,
                )
            )
        if not re.search(rf"^{re.escape(SWAP_FILE)}\s", fstab, re.MULTILINE):
            changes.append(
                Change(f"{SWAP_FILE} in /etc/fstab", (f"echo '{SWAP_FILE} none swap sw 0 0' >> /etc/fstab",))
            )
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{SWAP_FILE} {ctx.settings.swap_mb} MB active"


class SysctlStep(Step):
    name, key = "sysctl", "sysctl"

    def content(self, ctx: Context) -> str:
        return HEADER + "".join(f"{key} = {value}\n" for key, value in ctx.settings.sysctl)

    def unapplied(self, facts: HostFacts, ctx: Context) -> list[tuple[str, str]]:
        return [(k, v) for k, v in ctx.settings.sysctl if facts.sysctl.get(k) != v]

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        if not ctx.settings.sysctl:
            raise StepSkipped("nothing set (SYSCTL is empty)")
        changes = []
        if facts.file(SYSCTL_FILE) != self.content(ctx):
            changes.append(Change(f"persist {SYSCTL_FILE}", (write_file(SYSCTL_FILE, self.content(ctx)),)))
        applicable = [(k, v) for k, v in self.unapplied(facts, ctx) if k in facts.sysctl_writable]
        if applicable:
            changes.append(
                Change(
                    "apply " + ", ".join(f"{k}={v}" for k, v in applicable),
                    tuple(f"sysctl -q -w {q(f'{k}={v}')}" for k, v in applicable),
                    may_fail=True,
                )
            )
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        stuck = self.unapplied(facts, ctx)
        settings = ", ".join(f"{k}={v}" for k, v in ctx.settings.sysctl)
        if stuck:
            return (
                f"{settings} persisted; not applied here: /proc/sys is read-only (container), "
                "takes effect where the kernel allows"
            )
        return f"{settings} applied and persisted"

    def apply(self, host: Host, changes: Sequence[Change], facts: HostFacts, ctx: Context) -> list[str]:
        notes = super().apply(host, changes, facts, ctx)
        if any(k not in facts.sysctl_writable for k, _ in self.unapplied(facts, ctx)):
            notes.append("not applied here: /proc/sys is read-only (container); persisted for the kernel")
        return notes


class ProjectDirStep(Step):
    name, key = "project dir", "project-dir"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        s = ctx.settings
        if not s.project:
            raise StepSkipped("no PROJECT")
        if facts.project_dir == f"{s.deploy_user}:{s.deploy_user}:750":
            return []
        return [
            Change(
                f"/opt/{s.project} owned by {s.deploy_user}",
                (f"install -d -m 0750 -o {q(s.deploy_user)} -g {q(s.deploy_user)} {q('/opt/' + s.project)}",),
            )
        ]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"/opt/{ctx.settings.project} owned by {ctx.settings.deploy_user}"


SSHD_RELOAD = (
    # systemd: reload the running daemon (Ubuntu 24.04 socket activation: a not-running ssh.service
    # reads the new config on its next start). Without systemd: SIGHUP makes sshd re-exec itself.
    "if [ -d /run/systemd/system ]; then systemctl try-reload-or-restart ssh.service 2>/dev/null "
    "|| systemctl try-reload-or-restart sshd.service; "
    "elif [ -s /run/sshd.pid ]; then kill -HUP $(cat /run/sshd.pid); "
    "else echo 'sshd is not running from systemd and /run/sshd.pid is missing' >&2; exit 1; fi"
)


class SshHardeningStep(Step):
    """Password login off, root login restricted: root only after a fresh deploy login has worked."""

    name, key = "ssh hardening", "ssh"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        if facts.sshd_error:
            raise HostError(
                f"sshd -T failed: {facts.sshd_error}", hint="is openssh-server installed and its config valid?"
            )
        final = sshd_config(ctx.settings, ctx.settings.root_login)
        wrong = _sshd_matches(facts, ctx.settings)
        if facts.file(SSHD_DROPIN) == final and not wrong:
            return []
        if facts.file(SSHD_DROPIN) == final and wrong:
            raise HostError(
                f"sshd still has {', '.join(wrong)} with {SSHD_DROPIN} in place",
                hint="another file in /etc/ssh/sshd_config or sshd_config.d sets it first; remove that setting",
            )
        return [
            Change(
                f"{SSHD_DROPIN}: password login off, PermitRootLogin {ctx.settings.root_login} "
                f"(after a fresh {ctx.settings.deploy_user} login works)",
                (write_file(SSHD_DROPIN, final),),
            )
        ]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"password login off, root login {ctx.settings.root_login}"

    def apply(self, host: Host, changes: Sequence[Change], facts: HostFacts, ctx: Context) -> list[str]:
        s = ctx.settings
        have = facts.sshd.get("permitrootlogin", ("",))[0]
        restricts_root = SSHD_ALIASES.get(have, have) != s.root_login
        if restricts_root:
            # First everything but the root restriction; prove the deploy user can get in on its own.
            self._install(host, sshd_config(s, None))
            self._prove_deploy_login(host, ctx, closing_root=True)
        self._install(host, sshd_config(s, s.root_login))
        self._prove_deploy_login(host, ctx, closing_root=False)
        return []

    def _install(self, host: Host, content: str) -> None:
        backup = f"{SSHD_DROPIN}.opskit-old"
        host.sudo(
            f"mkdir -p /run/sshd; if [ -f {SSHD_DROPIN} ]; then cp -p {SSHD_DROPIN} {backup}; else rm -f {backup}; fi"
        )
        host.sudo(write_file(SSHD_DROPIN, content, "0644"))
        test = host.sudo("sshd -t", check=False)
        if not test.ok:
            # Never reload a config sshd refuses: a dead sshd locks everyone out.
            host.sudo(f"if [ -f {backup} ]; then mv -f {backup} {SSHD_DROPIN}; else rm -f {SSHD_DROPIN}; fi")
            output = (test.stderr or test.stdout).strip()
            raise CommandError(
                f"sshd -t rejected the new config: {_last_line(output)}; old config restored",
                where=host.name,
                exit_code=test.exit_code,
                output=output,
            )
        host.sudo(f"rm -f {backup}")
        host.sudo(SSHD_RELOAD)

    def _prove_deploy_login(self, host: Host, ctx: Context, *, closing_root: bool) -> None:
        if ctx.spec is None or ctx.runner_factory is None:
            raise HostError("cannot prove a deploy login (no runner factory)", where=host.name)
        s = ctx.settings
        spec = ctx.spec.as_user(s.deploy_user)
        command = "sudo -n true" if s.deploy_sudo else "true"
        error: OpsError | None = None
        for attempt in range(10):  # sshd re-executes after SIGHUP: give it a moment
            time.sleep(0.5 + 0.2 * attempt)
            runner = ctx.runner_factory(spec)
            try:
                result = runner.run(command, timeout=30)
                if result.ok:
                    return
                error = HostError(f"{command} failed: {_last_line(result.stderr or result.stdout)}", where=host.name)
            except OpsError as failure:
                error = failure
            finally:
                runner.close()
        left = "root login left open" if closing_root else "check the deploy user's key and sudo"
        raise HostError(
            f"a fresh login as {s.deploy_user} did not work ({error.message if error else 'unknown'}); {left}",
            where=host.name,
            hint=f"fix the deploy user (key in SSH_IDENTITY_FILE), then provision again as {ctx.spec.user}",
        )


STEPS: tuple[Step, ...] = (
    OsStep(),
    AptCacheStep(),
    PackagesStep(),
    DockerPackagesStep(),
    DaemonJsonStep(),
    DockerEngineStep(),
    DeployUserStep(),
    FirewallStep(),
    UnattendedUpgradesStep(),
    Fail2banStep(),
    TimeSyncStep(),
    SwapStep(),
    SysctlStep(),
    ProjectDirStep(),
    SshHardeningStep(),
)


def assume_installed(facts: HostFacts, changes: Iterable[Change]) -> HostFacts:
    """Facts as if the planned installs were done, so a dry run lists each install once."""
    planned = {package for change in changes for package in change.installs}
    return replace(facts, packages=facts.packages | planned) if planned else facts


def check_supported(facts: HostFacts, where: str = "") -> None:
    if not facts.supported:
        raise HostError(
            f"{facts.os_label} is not supported (opskit provisions {SUPPORTED_TEXT}); nothing was changed",
            where=where or None,
            hint="use a supported release, or leave this host out with --host",
        )


@dataclass(frozen=True)
class StepPlan:
    step: str
    status: str  # OK, WOULD_CHANGE or SKIPPED
    changes: tuple[Change, ...]
    detail: str


def plan_host(facts: HostFacts, settings: ProvisionSettings) -> list[StepPlan]:
    """Every step's plan from one set of facts, without SSH: what a dry run shows (later steps see
    the host as it is now, not as earlier steps would leave it)."""
    check_supported(facts)
    ctx = Context(settings)
    plans = []
    for step in STEPS:
        if not settings.enabled(step.key):
            plans.append(StepPlan(step.name, SKIPPED, (), "skipped by PROVISION_SKIP"))
            continue
        try:
            changes = step.plan(facts, ctx)
        except StepSkipped as skipped:
            plans.append(StepPlan(step.name, SKIPPED, (), str(skipped)))
            continue
        if changes:
            plans.append(StepPlan(step.name, WOULD_CHANGE, tuple(changes), "; ".join(c.description for c in changes)))
            facts = assume_installed(facts, changes)
        else:
            plans.append(StepPlan(step.name, OK, (), step.summary(facts, ctx)))
    return plans


# ---------------------------------------------------------------- results


@dataclass
class HostReport:
    """One host's provisioning: every step event, and the failing step with its output if any."""

    host: str
    user: str = ""
    os: str = ""
    events: list[StepEvent] = field(default_factory=list)
    error: OpsError | None = None
    failed_step: str | None = None
    output: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def count(self, status: str) -> int:
        return sum(1 for event in self.events if event.status == status)

    @property
    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in (OK, CHANGED, WOULD_CHANGE, SKIPPED, FAILED)}

    def to_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "user": self.user,
            "os": self.os,
            "ok": self.ok,
            "counts": self.counts,
            "failed_step": self.failed_step,
            "error": self.error.one_line() if self.error else None,
            "output": self.output,
            "seconds": round(self.seconds, 2),
            "steps": [{"step": e.step, "status": e.status, "detail": e.detail} for e in self.events],
        }


@dataclass
class ProvisionResult:
    """All hosts' reports; what the task layer renders as a summary or as --json."""

    hosts: list[HostReport] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.hosts)

    @property
    def failed(self) -> list[HostReport]:
        return [report for report in self.hosts if not report.ok]

    def count(self, status: str) -> int:
        return sum(report.count(status) for report in self.hosts)

    @property
    def changed(self) -> int:
        return self.count(CHANGED)

    @property
    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in (OK, CHANGED, WOULD_CHANGE, SKIPPED, FAILED)}

    def summary_line(self) -> str:
        counts = self.counts
        shown = [
            f"{counts[s]} {s}"
            for s in (OK, CHANGED, WOULD_CHANGE, SKIPPED, FAILED)
            if counts[s] or s in (OK, CHANGED, FAILED)
        ]
        hosts = f"{len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"
        bad = f", {len(self.failed)} host(s) failed" if self.failed else ""
        mode = " (dry run: nothing changed)" if self.dry_run else ""
        return f"{hosts}: {', '.join(shown)}{bad} in {self.seconds:.1f} s{mode}"

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 2),
            "counts": self.counts,
            "hosts": [report.to_dict() for report in self.hosts],
        }


# ---------------------------------------------------------------- running


def ssh_runner_factory(env: Environment) -> Callable[[HostSpec], Runner]:
    return lambda spec: SSHRunner.for_environment(spec, env)


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "no output"


def _tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def connect(spec: HostSpec, env: Environment, factory: Callable[[HostSpec], Runner]) -> tuple[Host, str]:
    """Log in as the bootstrap user; when an earlier run closed root login, as the deploy user.

    Returns the host and a note on how it was reached. A non-root login must have passwordless sudo.
    """
    first = Host(spec.as_user(env.bootstrap_user), factory(spec.as_user(env.bootstrap_user)))
    note = f"as {env.bootstrap_user}"
    try:
        first.run("true", timeout=30)
        host = first
    except HostKeyError:
        first.close()
        raise
    except HostError as error:
        first.close()
        if env.bootstrap_user == env.deploy_user or error.message.startswith("unreachable"):
            raise
        fallback = Host(spec.as_user(env.deploy_user), factory(spec.as_user(env.deploy_user)))
        try:
            fallback.run("true", timeout=30)
        except HostError:
            fallback.close()
            raise error from None
        host = fallback
        note = f"as {env.deploy_user} with sudo ({env.bootstrap_user} login refused, as provisioning left it)"
    if host.spec.user != "root":
        check = host.run("sudo -n true", check=False, timeout=30)
        if not check.ok:
            host.close()
            raise HostError(
                f"{host.spec.user} cannot use sudo without a password: {_last_line(check.stderr or check.stdout)}",
                where=spec.name,
                hint=f"give {host.spec.user} passwordless sudo (NOPASSWD) or set BOOTSTRAP_USER=root",
            )
    return host, note


class _HostRun:
    """One host's provisioning, reporting each step as it goes."""

    def __init__(self, report: HostReport, reporter: Reporter):
        self.report = report
        self.reporter = reporter

    def emit(self, step: str, status: str, detail: str = "") -> None:
        self.report.events.append(StepEvent(self.report.host, step, status, detail))
        self.reporter.step(self.report.host, step, status, detail)

    def fail(self, step: str, error: OpsError) -> None:
        output = error.output if isinstance(error, CommandError) else ""
        if not error.where or error.where == self.report.host:
            error.where = f"{self.report.host} [{step}]"
        self.report.error, self.report.failed_step, self.report.output = error, step, _tail(output)
        detail = error.message + (f" ({error.hint})" if error.hint else "")
        self.emit(step, FAILED, detail)


def provision_host(
    spec: HostSpec,
    env: Environment,
    settings: ProvisionSettings,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> HostReport:
    """Provision one host; a failure ends this host's run and is kept in the report, not raised."""
    factory = runner_factory or ssh_runner_factory(env)
    started = time.monotonic()
    run = _HostRun(HostReport(spec.name), reporter)
    try:
        try:
            host, note = connect(spec, env, factory)
        except OpsError as error:
            run.fail("connect", error)
            return run.report
        run.report.user = host.spec.user
        run.emit("connect", OK, note)
        try:
            _provision_steps(host, run, settings, Context(settings, spec, factory), dry_run)
        finally:
            host.close()
    finally:
        run.report.seconds = time.monotonic() - started
    return run.report


def _provision_steps(host: Host, run: _HostRun, settings: ProvisionSettings, ctx: Context, dry_run: bool) -> None:
    try:
        facts = read_facts(host, settings)
    except OpsError as error:
        run.fail("facts", error)
        return
    run.report.os = facts.os_label
    try:
        check_supported(facts, host.name)
    except OpsError as error:
        run.fail("os", error)
        return
    for step in STEPS:
        if not settings.enabled(step.key):
            run.emit(step.name, SKIPPED, "skipped by PROVISION_SKIP")
            continue
        try:
            changes = step.plan(facts, ctx)
        except StepSkipped as skipped:
            run.emit(step.name, SKIPPED, str(skipped))
            continue
        except OpsError as error:
            run.fail(step.name, error)
            return
        if not changes:
            run.emit(step.name, OK, step.summary(facts, ctx))
            continue
        description = "; ".join(change.description for change in changes)
        if dry_run:
            run.emit(step.name, WOULD_CHANGE, description)
            facts = assume_installed(facts, changes)
            continue
        try:
            notes = step.apply(host, changes, facts, ctx)
            # Later steps plan from the host as this step left it.
            facts = read_facts(host, settings)
        except OpsError as error:
            run.fail(step.name, error)
            return
        run.emit(step.name, CHANGED, "; ".join([description, *notes]))


def provision(
    env: Environment,
    reporter: Reporter,
    *,
    only_hosts: Iterable[str] | None = None,
    dry_run: bool = False,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> ProvisionResult:
    """Provision env's hosts (or only_hosts) in parallel; one host failing never stops the others.

    Connects as env.bootstrap_user, falling back to the deploy user with sudo where an earlier run
    closed root login. With dry_run, reads facts and reports what would change, changing nothing.
    Raises ConfigError (bad settings) or HostError (no host matches only_hosts) before any host is
    touched; every host failure is in the result (result.ok, result.failed).
    """
    settings = ProvisionSettings.from_env(env)
    started = time.monotonic()
    factory = runner_factory or ssh_runner_factory(env)
    # Fleet picks the hosts and runs them in parallel; provision_host makes its own connections
    # (bootstrap user first, deploy user as fallback), so the fleet's lazy runners stay unopened.
    with Fleet.connect(env, only=only_hosts, user=env.bootstrap_user, runner_factory=factory) as fleet:
        specs = {spec.name: spec for spec in env.hosts}
        outcome = fleet.map(
            lambda host: provision_host(
                specs[host.name], env, settings, reporter, dry_run=dry_run, runner_factory=factory
            )
        )
    result = ProvisionResult(dry_run=dry_run)
    for item in outcome.outcomes:
        report = item.value or HostReport(item.host)
        if item.error is not None and report.error is None:
            report.error = item.error
        result.hosts.append(report)
    result.seconds = time.monotonic() - started
    return result
