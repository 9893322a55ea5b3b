"""The recurring backup in this machine's crontab: backup, verify, offsite (when set) and prune, one
entry per environment, checked before the crontab changes. Never edits another entry."""

from __future__ import annotations

import re
import shlex
import subprocess

from ops.backup.catalogue import target_dir
from ops.config import Environment
from ops.errors import BackupError
from ops.transport.shell import last_line

CRON_MARK = "# opskit-backup:"
CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")


def check_cron(expression: str) -> str:
    """Five cron fields or an @word; anything else is refused before the crontab changes."""
    expression = " ".join(expression.split())
    if expression in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@reboot"):
        return expression
    fields = expression.split(" ")
    if len(fields) != 5 or not all(CRON_FIELD.match(part) for part in fields):
        raise BackupError(
            f"{expression!r} is not a cron schedule", hint="five fields, e.g. '17 3 * * *' (03:17 daily), or @daily"
        )
    return expression


def cron_line(env: Environment, expression: str) -> str:
    """Back up, check the checksums, copy offsite (when set), then prune; one log per environment."""
    inv = env.root / ".venv" / "bin" / "inv"
    program = shlex.quote(str(inv)) if inv.exists() else "inv"
    log = shlex.quote(str(target_dir(env) / "cron.log"))
    name = shlex.quote(env.name)
    # A scheduled run waits up to 15 minutes for a deploy (or restore) to finish before it fails.
    tasks = [
        "all --lock-wait 900",
        "verify --no-extract",
        *(["offsite"] if env.backup.offsite else []),
        "prune",
    ]
    steps = " && ".join(f"{program} backup.{task} --env {name}" for task in tasks)
    return (
        f"{check_cron(expression)} cd {shlex.quote(str(env.root))} && mkdir -p {shlex.quote(str(target_dir(env)))} "
        f"&& {{ {steps}; }} >> {log} 2>&1 {CRON_MARK}{env.name}"
    )


def edit_crontab(current: str, env_name: str, line: str | None) -> str:
    """The crontab with this environment's entry replaced (or removed when line is None)."""
    kept = [entry for entry in current.splitlines() if not entry.endswith(f"{CRON_MARK}{env_name}")]
    if line:
        kept.append(line)
    return "".join(f"{entry}\n" for entry in kept)


def schedule(env: Environment, expression: str, *, remove: bool = False, crontab: str = "crontab") -> str:
    """Install (or remove) the recurring backup in this machine's crontab; returns the entry."""
    line = None if remove else cron_line(env, expression)
    try:
        listed = subprocess.run([crontab, "-l"], capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError("crontab is not installed on this machine", hint="apt-get install cron") from None
    current = listed.stdout if listed.returncode == 0 else ""  # "no crontab for user" is an empty one
    done = subprocess.run([crontab, "-"], input=edit_crontab(current, env.name, line), capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"crontab refused the entry: {last_line(done.stderr)}")
    return line or ""
