"""Shell commands several steps share: atomic file writes (with a validator gating the swap) and
unattended apt. Builds command strings only; running them is the step's apply.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

from ops.provision.facts import APT_STAMP, BOOT_DIR, HostFacts
from ops.provision.step import Change
from ops.transport.shell import q

HEADER = "# Managed by opskit provisioning; local edits are overwritten.\n"


# Debian's frontend prompts and Ubuntu's needrestart prompt hang unattended runs; sudo's env_reset
# would drop plain exports, so the variables travel inside the command.
APT_ENV = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"
APT_GET = f"{APT_ENV} apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold"
APT_TIMEOUT = 1200.0


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


def boot_change(facts: HostFacts, path: str, what: str, command: str) -> list[Change]:
    """Without systemd: record how `what` is started in the boot script path (run at boot, in order,
    by the host's init); with systemd the unit is enabled instead and nothing is recorded."""
    if facts.has_systemd:
        return []
    script = f"#!/bin/sh\n{HEADER}# Starts {what} at boot on a host without systemd (its init runs {BOOT_DIR}/*).\n{command}\n"
    if facts.file(path) == script:
        return []
    return [Change(f"start {what} at boot ({path})", (write_file(path, script, mode="0755"),))]
