"""The firewall: ufw denying incoming but sshd's ports and FIREWALL_ALLOW_PORTS, enabled only after
the SSH rules are in place.
"""

from __future__ import annotations

from ops.provision.commands import boot_change, install_change
from ops.provision.facts import BOOT_FIREWALL, HostFacts
from ops.provision.step import Change, Context, Step
from ops.transport.shell import q


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
        # ufw's own boot script: loads the rules when ufw.conf says ENABLED=yes (what ufw.service runs).
        return changes + boot_change(facts, BOOT_FIREWALL, "the ufw rules", "/usr/lib/ufw/ufw-init start")

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        ports = ", ".join(f"{p}/{proto}" for p, proto, _ in self.wanted(facts, ctx))
        return f"active, deny incoming, allow {ports}"
