"""fail2ban: an sshd jail on sshd's ports (systemd journal, or polling auth.log without systemd),
banning through ufw when the firewall step runs.
"""

from __future__ import annotations

from ops.provision.commands import HEADER, boot_change, install_change, write_file
from ops.provision.facts import BOOT_FAIL2BAN, FAIL2BAN_JAIL, HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, Step

FAIL2BAN_POLL_LOG = "/var/log/auth.log"
START_WITHOUT_SYSTEMD = (
    f"touch {FAIL2BAN_POLL_LOG}; fail2ban-client ping >/dev/null 2>&1 && fail2ban-client reload "
    "|| fail2ban-client -x start"
)


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
            changes.append(Change("start fail2ban (no systemd)", (START_WITHOUT_SYSTEMD,)))
        return changes + boot_change(facts, BOOT_FAIL2BAN, "fail2ban", START_WITHOUT_SYSTEMD)

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"running, jails: {', '.join(sorted(facts.fail2ban_jails)) or 'none'}"
