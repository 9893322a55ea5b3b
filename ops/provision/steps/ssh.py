"""SSH hardening: password login off, root login restricted only after a fresh deploy login has
worked; every sshd config is checked with sshd -t before a reload, and restored when refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ops.errors import CommandError, HostError, OpsError
from ops.provision.commands import HEADER, write_file
from ops.provision.facts import SSHD_DROPIN, HostFacts
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Change, Context, Step
from ops.transport import Host
from ops.transport.shell import last_line


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
                f"sshd -t rejected the new config: {last_line(output)}; old config restored",
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
                error = HostError(f"{command} failed: {last_line(result.stderr or result.stdout)}", where=host.name)
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
