"""Docker: the packages (distro's, or Docker's repository with its signing key pinned), daemon.json
(log rotation, live-restore; off on swarm nodes, which refuse it) and a running engine, with or
without systemd.
"""

from __future__ import annotations

import json

from ops.errors import HostError
from ops.provision.commands import APT_TIMEOUT, apt_update, install_change, write_file
from ops.provision.facts import DAEMON_JSON, DOCKER_KEYRING, DOCKER_SOURCE_FILE, HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, Step

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_CE_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin")
DOCKERD_LOG = "/var/log/dockerd.log"


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


def daemon_json(facts: HostFacts, settings: ProvisionSettings) -> str:
    """The wanted daemon.json: the host's own keys kept, ours (log rotation, live-restore) set.

    `docker swarm init` and `join` refuse a daemon with live-restore ("incompatible with swarm
    mode"): swarm nodes get it off, and rely on the swarm to reschedule instead."""
    current: dict[str, object] = {}
    try:
        loaded = json.loads(facts.file(DAEMON_JSON) or "{}")
        current = loaded if isinstance(loaded, dict) else {}
    except ValueError:
        current = {}
    log_opts = current.get("log-opts")
    merged_opts = dict(log_opts) if isinstance(log_opts, dict) else {}
    merged_opts.update({"max-size": settings.docker_log_max_size, "max-file": str(settings.docker_log_max_file)})
    wanted = {**current, "log-driver": "json-file", "log-opts": merged_opts, "live-restore": not settings.swarm}
    return json.dumps(wanted, indent=2, sort_keys=True) + "\n"


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
        return [Change(f"write {DAEMON_JSON} ({self.summary(facts, ctx)})", tuple(commands))]

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        restore = "live-restore off (swarm)" if ctx.settings.swarm else "live-restore"
        return f"log rotation {ctx.settings.docker_log_max_size} x {ctx.settings.docker_log_max_file}, {restore}"


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
