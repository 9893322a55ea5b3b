"""Every key an env file may set: its parser, its default and what it means.

Later capabilities add theirs here so that an unknown key is always caught; env/*.env.example
documents each one (a unit test keeps them in step).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ops.config.hosts import NAME_RE, parse_host


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


REGISTRY_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$"
)
REGISTRY_PATH = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def _registry(text: str) -> str:
    """host[:port][/path]: Docker takes the first part for a registry host only when it has a dot
    or a port (or is localhost); anything else would silently mean Docker Hub."""
    value = text.strip().rstrip("/")
    if not value:
        return ""
    if "://" in value:
        raise ValueError(f"{text!r}: give host[:port]/path without a scheme (Docker always speaks HTTPS to it)")
    host, _, path = value.partition("/")
    if not REGISTRY_HOST.match(host) or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"{host!r} is not a registry host (it needs a dot or a :port, e.g. registry.example.com)")
    if path and not REGISTRY_PATH.match(path):
        raise ValueError(f"{path!r} is not a repository path (lower-case letters, digits, . _ -, parts joined by /)")
    return value


def _advertise(text: str) -> tuple[tuple[str, str], ...]:
    """HOST=ADDRESS pairs (HOST as HOSTS names it, host or host:port; ADDRESS an IP address)."""
    import ipaddress

    pairs = []
    for word in _words(text):
        host, sep, address = word.rpartition("=")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{word!r} is not HOST=IP-ADDRESS") from None
        if not sep or not host:
            raise ValueError(f"{word!r} is not HOST=IP-ADDRESS")
        pairs.append((host, address))
    return tuple(pairs)


S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _offsite(text: str) -> str:
    """s3://BUCKET[/PREFIX] or [user@]host[:port]:/path (the SSH form is parsed where it is used)."""
    value = text.strip()
    if value.startswith("s3://"):
        bucket, _, prefix = value.removeprefix("s3://").partition("/")
        if not S3_BUCKET.match(bucket):
            raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.', '-')")
        prefix = prefix.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError(f"{prefix!r} is not a key prefix (no empty, '.' or '..' parts)")
        return f"s3://{bucket}/{prefix}".rstrip("/")
    if "://" in value:
        raise ValueError(f"{value!r}: s3://BUCKET/PREFIX or [user@]host[:port]:/path")
    return value


def _url(text: str) -> str:
    value = text.strip().rstrip("/")
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http(s):// URL")
    return value


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
    "IMAGE_SOURCE": Key(
        _choice("registry", "send", "build", "pull"),
        "registry",
        "how images reach hosts: registry (pushed here, pulled by digest over SSH), send, build, pull",
    ),
    "REGISTRY": Key(
        _registry,
        "",
        "team registry host[:port][/path] IMAGE_SOURCE=registry pushes to and hosts pull from by digest "
        "(empty: this checkout's own registry, pulled through an SSH tunnel)",
    ),
    "REGISTRY_USER": Key(_text, "", "user for the team registry (its password: the secret REGISTRY_PASSWORD)"),
    "REGISTRY_CA": Key(
        _text, "", "CA file of a team registry with a private CA (relative to the repository); provisioning installs it"
    ),
    "ORCHESTRATOR": Key(
        _choice("compose", "swarm"),
        "compose",
        "compose (each host runs the whole stack) or swarm (the hosts form one Docker Swarm; "
        "HOSTS marks at least one /manager)",
    ),
    "SWARM_ADVERTISE_ADDR": Key(
        _advertise,
        "",
        "swarm: the address each node advertises, HOST=IP per host as HOSTS names it "
        "(default: the host's own address on its route to the other nodes)",
    ),
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
        _offsite,
        "",
        "offsite copies: s3://BUCKET/PREFIX (S3 or an S3-compatible store), or over SSH "
        "[user@]host[:port]:/path (host key pinned in the env's known_hosts)",
    ),
    "S3_ENDPOINT": Key(
        _url, "", "endpoint of an S3-compatible store, e.g. https://minio.example.com:9000 (empty: AWS S3)"
    ),
    "S3_REGION": Key(_text, "", "region of the bucket (empty: boto3's default, else us-east-1)"),
    "BACKUP_KEEP_LAST": Key(_int(0, 10000), "3", "prune keeps the newest N snapshots"),
    "BACKUP_KEEP_DAILY": Key(_int(0, 10000), "7", "prune keeps the newest snapshot of each of the last N days"),
    "BACKUP_KEEP_WEEKLY": Key(_int(0, 10000), "4", "prune keeps the newest snapshot of each of the last N weeks"),
    "BACKUP_KEEP_MONTHLY": Key(_int(0, 10000), "6", "prune keeps the newest snapshot of each of the last N months"),
    "BACKUP_MAX_AGE_HOURS": Key(
        _int(1, 8760), "26", "ops.doctor fails when the newest complete snapshot is older than this"
    ),
    "BACKUP_DRILL_MAX_AGE_DAYS": Key(
        _int(1, 3650), "8", "ops.doctor warns when no restore drill passed within this many days"
    ),
    # Notifications (ops/notify/): the URL is the secret NOTIFY_URL (secrets file or environment).
    "NOTIFY_FORMAT": Key(
        _choice("slack", "json"), "slack", "body posted to NOTIFY_URL: slack (incoming-webhook JSON) or json"
    ),
    "NOTIFY_TIMEOUT": Key(_int(1, 60), "5", "seconds one notification attempt may take (one retry)"),
    # Provisioning (ops/provision/settings.py; documented in env/*.env.example).
    "PROVISION_SKIP": Key(
        _words,
        "",
        "provisioning steps to leave out: apt packages docker registry-ca deploy-user firewall "
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
