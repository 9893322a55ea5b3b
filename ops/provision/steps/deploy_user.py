"""The deploy user: created without a password, in the docker group, with the authorized keys and
(DEPLOY_SUDO) passwordless sudo through a visudo-checked sudoers file.
"""

from __future__ import annotations

from ops.provision.commands import HEADER, install_change, write_file
from ops.provision.facts import SUDOERS_FILE, HostFacts
from ops.provision.settings import key_id
from ops.provision.step import Change, Context, Step
from ops.transport.shell import q


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
        have = {key_id(line) for line in facts.deploy_authorized_keys.splitlines()}
        missing = [line for line in s.authorized_keys if key_id(line) not in have]
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
