"""Facts: what a host looks like now, read in one shell round trip that changes nothing. Plans are
computed from HostFacts alone, so unit tests build them from canned output with parse_facts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ops.errors import HostError
from ops.host.layout import ProjectLayout
from ops.provision.settings import ProvisionSettings
from ops.transport import Host
from ops.transport.shell import q
from ops.transport.shell import sections as script_sections

SUPPORTED = {("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12"), ("debian", "13")}
SUPPORTED_TEXT = "Ubuntu 22.04/24.04 and Debian 12/13"

# Files the steps write: their content (MANAGED_FILES), or what they hold, is a fact.
DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCE_FILE = "/etc/apt/sources.list.d/docker.list"
DAEMON_JSON = "/etc/docker/daemon.json"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-opskit.conf"  # sorts before cloud-init's 50-: sshd keeps the first value
SUDOERS_FILE = "/etc/sudoers.d/90-opskit-deploy"
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
UNATTENDED_ORIGINS = "/etc/apt/apt.conf.d/52opskit-unattended-upgrades"
FAIL2BAN_JAIL = "/etc/fail2ban/jail.d/opskit-sshd.local"
SYSCTL_FILE = "/etc/sysctl.d/60-opskit.conf"
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
    project_dir = q(ProjectLayout(settings.project).base) if settings.project else "''"
    managed = MANAGED_FILES + ((settings.registry_ca_path,) if settings.registry_ca_path else ())
    files = " ".join(q(path) for path in managed)
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
    sections = script_sections(text)

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
