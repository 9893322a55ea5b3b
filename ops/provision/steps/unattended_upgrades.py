"""Unattended upgrades: daily, security updates only (Debian's default origins narrowed). Never
upgrades anything itself: apt's timers do.
"""

from __future__ import annotations

from ops.provision.commands import install_change, write_file
from ops.provision.facts import AUTO_UPGRADES, UNATTENDED_ORIGINS, HostFacts
from ops.provision.step import Change, Context, Step


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
