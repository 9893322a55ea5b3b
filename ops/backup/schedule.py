"""The recurring backup in this machine's crontab: backup, verify, offsite (when set) and prune, one
entry per environment, and optionally a restore drill on its own (weekly) schedule; checked before
the crontab changes. Never edits another entry."""

from __future__ import annotations

import re
import shlex
import subprocess

from ops.backup.catalogue import target_dir
from ops.config import Environment
from ops.errors import BackupError
from ops.transport.shell import last_line

CRON_MARK = "# opskit-backup:"
DRILL_MARK = "# opskit-drill:"
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


def _program(env: Environment) -> str:
    inv = env.root / ".venv" / "bin" / "inv"
    return shlex.quote(str(inv)) if inv.exists() else "inv"


def _entry(env: Environment, expression: str, steps: str, mark: str) -> str:
    log = shlex.quote(str(target_dir(env) / "cron.log"))
    return (
        f"{check_cron(expression)} cd {shlex.quote(str(env.root))} && mkdir -p {shlex.quote(str(target_dir(env)))} "
        f"&& {{ {steps}; }} >> {log} 2>&1 {mark}{env.name}"
    )


def cron_line(env: Environment, expression: str) -> str:
    """Back up, check the checksums, copy offsite (when set), then prune; one log per environment."""
    program = _program(env)
    name = shlex.quote(env.name)
    # A scheduled run waits up to 15 minutes for a deploy (or restore) to finish before it fails.
    tasks = [
        "all --lock-wait 900",
        "verify --no-extract",
        *(["offsite"] if env.backup.offsite else []),
        "prune",
    ]
    steps = " && ".join(f"{program} backup.{task} --env {name}" for task in tasks)
    return _entry(env, expression, steps, CRON_MARK)


def drill_cron_line(env: Environment, expression: str) -> str:
    """Drill the newest snapshot (restore into a throwaway copy, checked); same log as the backup."""
    return _entry(env, expression, f"{_program(env)} backup.drill --env {shlex.quote(env.name)}", DRILL_MARK)


def edit_crontab(current: str, env_name: str, line: str | None, mark: str = CRON_MARK) -> str:
    """The crontab with this environment's entry of that kind replaced (or removed when line is None)."""
    kept = [entry for entry in current.splitlines() if not entry.endswith(f"{mark}{env_name}")]
    if line:
        kept.append(line)
    return "".join(f"{entry}\n" for entry in kept)


def schedule(
    env: Environment, expression: str, *, drill: str = "", remove: bool = False, crontab: str = "crontab"
) -> str:
    """Install (or remove) the recurring backup in this machine's crontab, and the weekly (or any)
    drill when drill is a schedule: the environment's entries are then exactly these (an earlier
    drill entry goes when drill is ""). Returns the entries, one per line."""
    line = None if remove else cron_line(env, expression)
    drill_line = drill_cron_line(env, drill) if drill and not remove else None
    try:
        listed = subprocess.run([crontab, "-l"], capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError("crontab is not installed on this machine", hint="apt-get install cron") from None
    current = listed.stdout if listed.returncode == 0 else ""  # "no crontab for user" is an empty one
    table = edit_crontab(edit_crontab(current, env.name, line), env.name, drill_line, DRILL_MARK)
    done = subprocess.run([crontab, "-"], input=table, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"crontab refused the entry: {last_line(done.stderr)}")
    return "\n".join(entry for entry in (line, drill_line) if entry)
