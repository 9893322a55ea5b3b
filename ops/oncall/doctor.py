"""`ops.doctor`: checks an on-call person runs first, each pass / warn / fail with the fix to try.

Per host one SSH round trip gathers the facts (engine, disks, inodes, memory, containers, log
rotation) and a second one the clock; backups are read on this machine. Never changes anything.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from ops.config import Environment
from ops.host.lock import DEFAULT_TTL, LockInfo, read_lock
from ops.oncall.preamble import shell_preamble
from ops.oncall.status import ContainerStatus, parse_stack, stack_script
from ops.transport import Fleet, Host

DISK_WARN, DISK_FAIL = 85, 95
MEMORY_WARN, MEMORY_FAIL = 90, 97
CONTAINER_MEMORY_WARN, CONTAINER_MEMORY_FAIL = 85, 95
RESTARTS_WARN = 3
CLOCK_WARN, CLOCK_FAIL = 2.0, 30.0
BACKUP_MAX_AGE_HOURS = 26.0
CHECK_NAMES = ("ssh", "engine", "disk", "memory", "containers", "container-memory", "clock", "lock", "logs", "backup")


@dataclass(frozen=True)
class Check:
    """One check on one host (or on this machine: host "local")."""

    name: str
    host: str
    status: str  # pass | warn | fail | skipped
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    environment: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(check.status == "fail" for check in self.checks)

    def count(self, status: str) -> int:
        return sum(1 for check in self.checks if check.status == status)

    def as_dict(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "ok": self.ok,
            "summary": {status: self.count(status) for status in ("pass", "warn", "fail", "skipped")},
            "checks": [asdict(check) for check in self.checks],
        }


def facts_script(project: str) -> str:
    return (
        shell_preamble(project)
        + r"""
if info=$(docker info -f '{{.ServerVersion}}|{{.DockerRootDir}}|{{.LoggingDriver}}' 2>/dev/null) && [ "${info%%|*}" ]; then
  docker_up=1
  echo "engine=running ${info%%|*}"
  root=$(echo "$info" | cut -d'|' -f2)
  echo "logdriver=$(echo "$info" | cut -d'|' -f3)"
else
  if command -v docker >/dev/null 2>&1; then echo "engine=down"; else echo "engine=missing"; fi
  root=/
fi
[ -d "$root" ] || root=/
df -P / "$root" 2>/dev/null | awk 'NR>1{print "disk=" $5+0 " " $6}'
df -Pi / "$root" 2>/dev/null | awk 'NR>1{print "inodes=" $5+0 " " $6}'
awk '/^MemTotal/{t=$2} /^MemAvailable/{a=$2} END{if (t) printf "memory=%d\n", 100-a*100/t}' /proc/meminfo
echo "daemonjson=$(cat /etc/docker/daemon.json 2>/dev/null | tr -d ' \n\t')"
if [ "$docker_up" ]; then
  vols=$(volumes)
  if [ -n "$vols" ]; then
    docker volume inspect -f '{{.Name}} {{.Mountpoint}}' $vols | while read -r v p; do
      sudo -n df -P "$p" 2>/dev/null | awk -v v="$v" 'NR==2{print "volume=" $5+0 " " v " " $6}'
    done
  fi
fi
[ -z "$docker_up" ] || {
"""
        + stack_script(project)
        + "\n}\n"
    )


def parse_lines(text: str) -> dict[str, list[str]]:
    facts: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            facts.setdefault(key, []).append(value.strip())
    return facts


def _percent(text: str) -> float:
    try:
        return float(text.strip().rstrip("%") or 0)
    except ValueError:
        return 0.0


def _level(value: float, warn: float, fail: float) -> str:
    return "fail" if value >= fail else "warn" if value >= warn else "pass"


def host_checks(host: Host, project: str, *, clock: Callable[[], float] = time.time) -> list[Check]:
    """Every check of one host from its facts; raises HostError when it cannot be reached."""
    name = host.name
    before = clock()
    remote = host.run("date +%s.%N", check=False).stdout.strip()
    after = clock()
    output = host.run(facts_script(project), check=False, timeout=60).stdout
    facts = parse_lines(output)
    _, _, containers = parse_stack(output)
    checks = [Check("ssh", name, "pass", f"logged in as {host.spec.user}")]

    try:
        drift = float(remote) - (before + after) / 2
        level = _level(abs(drift), CLOCK_WARN, CLOCK_FAIL)
        checks.append(
            Check(
                "clock",
                name,
                level,
                f"clock differs from this machine's by {drift:+.1f} s",
                "" if level == "pass" else "enable time sync (chrony or systemd-timesyncd): inv provision",
            )
        )
    except ValueError:
        checks.append(Check("clock", name, "warn", f"cannot read the clock ({remote[:60]!r})"))

    engine = (facts.get("engine") or ["missing"])[0]
    docker_up = engine.startswith("running")
    if engine.startswith("running"):
        checks.append(Check("engine", name, "pass", f"Docker {engine.split(' ', 1)[-1]} running"))
    else:
        fix = "start it: sudo systemctl start docker (or dockerd)" if engine == "down" else "inv provision"
        checks.append(Check("engine", name, "fail", f"Docker engine {engine}", fix))

    seen: set[tuple[str, str]] = set()
    for kind, values in (("disk", facts.get("disk", [])), ("inodes", facts.get("inodes", []))):
        for value in values:
            percent, _, mount = value.partition(" ")
            if (kind, mount) in seen:
                continue
            seen.add((kind, mount))
            level = _level(_percent(percent), DISK_WARN, DISK_FAIL)
            what = "space" if kind == "disk" else "inodes"
            checks.append(
                Check(
                    "disk",
                    name,
                    level,
                    f"{what} on {mount}: {percent}% used",
                    "" if level == "pass" else "inv runbook.run disk-full (prunes images and build cache with --fix)",
                )
            )
    for value in facts.get("volume", []):
        parts = value.split(" ")
        percent, volume = parts[0], parts[1] if len(parts) > 1 else "?"
        level = _level(_percent(percent), DISK_WARN, DISK_FAIL)
        if level != "pass":
            checks.append(
                Check(
                    "disk",
                    name,
                    level,
                    f"volume {volume}: its filesystem is {percent}% used",
                    "free space on the volume's disk: inv runbook.run disk-full",
                )
            )

    memory = facts.get("memory", [])
    if memory:
        level = _level(_percent(memory[0]), MEMORY_WARN, MEMORY_FAIL)
        checks.append(
            Check(
                "memory",
                name,
                level,
                f"host memory {memory[0]}% in use",
                "" if level == "pass" else "inv runbook.run memory-pressure",
            )
        )

    checks.extend(container_checks(name, project, containers, engine.startswith("running")))

    daemon = (facts.get("daemonjson") or [""])[0]
    driver = (facts.get("logdriver") or [""])[0]
    if not engine.startswith("running"):
        pass
    elif driver == "json-file" and '"max-size"' not in daemon:
        checks.append(
            Check(
                "logs",
                name,
                "warn",
                "json-file logs without rotation in /etc/docker/daemon.json",
                "inv provision (sets log-opts max-size and max-file)",
            )
        )
    else:
        checks.append(
            Check("logs", name, "pass", f"log driver {driver}" + (" with rotation" if "max-size" in daemon else ""))
        )

    lock = _lock_info(facts.get("lock", [""])[0]) if docker_up else read_lock(host, project)
    if lock is None:
        checks.append(Check("lock", name, "pass", "no deploy lock held"))
    else:
        age = lock.age_seconds() if lock.since else 0
        if age > DEFAULT_TTL:
            checks.append(
                Check(
                    "lock",
                    name,
                    "fail",
                    f"stale deploy lock ({age / 3600:.1f} h old): {lock.describe()}",
                    "if no deploy runs: inv lock.release --force",
                )
            )
        else:
            checks.append(Check("lock", name, "pass", f"deploy lock held ({age:.0f} s): {lock.describe()}"))
    return checks


def _lock_info(text: str) -> LockInfo | None:
    """The lock from the facts' lock= line (the holder's info.json), None when not held."""
    if not text:
        return None
    try:
        return LockInfo.from_json(text)
    except ValueError:
        return LockInfo(holder="", since="", reason="", token="")


def container_checks(name: str, project: str, containers: tuple[ContainerStatus, ...], engine: bool) -> list[Check]:
    """Unhealthy, exited, restart-looping, OOM-killed and near-the-limit containers of the stack."""
    bad = []
    for item in containers:
        if item.state != "running" or item.health == "unhealthy":
            what = item.health if item.state == "running" else item.state
            bad.append(
                Check("containers", name, "fail", f"{item.name} is {what}", "inv runbook.run service-unhealthy --fix")
            )
        elif item.restarts >= RESTARTS_WARN:
            bad.append(
                Check(
                    "containers",
                    name,
                    "warn",
                    f"{item.name} restarted {item.restarts} times (restart loop?)",
                    f"inv ops.logs {item.service}; inv runbook.run service-unhealthy",
                )
            )
        if item.oom_killed:
            bad.append(
                Check("containers", name, "warn", f"{item.name} was OOM-killed", "inv runbook.run memory-pressure")
            )
    checks = bad
    if not bad and engine:
        detail = (
            f"{len(containers)} containers of {project} running and healthy"
            if containers
            else f"no containers of {project}"
        )
        checks = [Check("containers", name, "pass", detail)]
    near = []
    for item in containers:
        if item.state != "running" or not item.memory_limit_bytes:
            continue
        level = _level(item.memory_percent, CONTAINER_MEMORY_WARN, CONTAINER_MEMORY_FAIL)
        if level != "pass":
            used, limit = item.memory_bytes / 2**20, item.memory_limit_bytes / 2**20
            near.append(
                Check(
                    "container-memory",
                    name,
                    level,
                    f"{item.name} uses {item.memory_percent:.0f}% of its memory limit ({used:.0f} / {limit:.0f} MiB)",
                    "inv runbook.run memory-pressure --fix (restarts it); raise the limit if it recurs",
                )
            )
    if near:
        checks.extend(near)
    elif any(item.state == "running" for item in containers):
        checks.append(
            Check(
                "container-memory", name, "pass", f"every container under {CONTAINER_MEMORY_WARN}% of its memory limit"
            )
        )
    return checks


# --- backups: read through one small function while the backup capability settles ------------


def backup_location(env: Environment) -> Path:
    """Where this machine keeps the environment's snapshots: BACKUP_DIR, else backups/<env>.

    The same rule as ops.backup.target_dir; kept here so that doctor works with or without it.
    """
    configured = env.backup.dir
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() else env.root / path
    return env.root / "backups" / env.name


def backup_max_age_hours(env: Environment) -> float:
    return float(env.backup.max_age_hours)


def newest_complete_backup(location: Path) -> tuple[str, float] | None:
    """(snapshot, its time as epoch seconds) of the newest complete snapshot, or None.

    Reads the snapshot store of ops/backup: a directory per snapshot with manifest.json that
    says "complete": true, renamed from <id>.partial only at the end; "created" is its time.
    """
    if not location.is_dir():
        return None
    newest: tuple[str, float] | None = None
    for manifest in location.glob("*/manifest.json"):
        snapshot = manifest.parent
        if snapshot.name.endswith(".partial") or snapshot.name.startswith("."):
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("complete") is not True:
            continue
        stamp = manifest.stat().st_mtime
        with contextlib.suppress(TypeError, ValueError):
            stamp = datetime.fromisoformat(str(data.get("created"))).timestamp()
        if newest is None or stamp > newest[1]:
            newest = (snapshot.name, stamp)
    return newest


def backup_check(env: Environment, now: float | None = None) -> Check:
    location = backup_location(env)
    newest = newest_complete_backup(location)
    if newest is None:
        return Check(
            "backup",
            "local",
            "warn",
            f"no backups found in {location}",
            "inv backup.all, and schedule it (inv backup.schedule)",
        )
    age_hours = ((now or time.time()) - newest[1]) / 3600
    limit = backup_max_age_hours(env)
    if age_hours > limit:
        return Check(
            "backup",
            "local",
            "fail",
            f"newest complete backup {newest[0]} is {age_hours:.1f} h old (policy: {limit:g} h)",
            "inv backup.all; check the schedule (inv backup.schedule)",
        )
    return Check("backup", "local", "pass", f"newest complete backup {newest[0]} is {age_hours:.1f} h old")


def doctor(env: Environment, *, only: list[str] | None = None) -> DoctorReport:
    """Every check on every host (in parallel), then the backups; an unreachable host fails ssh."""
    report = DoctorReport(env.name)
    with Fleet.connect(env, only=only) as fleet:
        result = fleet.map(lambda host: host_checks(host, env.project))
    for outcome in result.outcomes:
        if outcome.value is not None:
            report.checks.extend(outcome.value)
        else:
            message = outcome.error.one_line() if outcome.error else "failed"
            report.checks.append(
                Check("ssh", outcome.host, "fail", message, "is the host up? inv hosts.trust / check SSH_IDENTITY_FILE")
            )
    report.checks.append(backup_check(env))
    return report


def probe(env: Environment, name: str) -> list[tuple[str, bool, str]]:
    """One check for a runbook step: (where, healthy, detail) per host; warn counts as unhealthy."""
    if name == "backup":
        check = backup_check(env)
        return [(check.host, check.status == "pass", check.detail)]
    if name not in CHECK_NAMES:
        return [("local", False, f"unknown doctor check {name!r} (known: {', '.join(CHECK_NAMES)})")]
    found = [
        check for check in doctor(env).checks if check.name == name or (check.name == "ssh" and check.status == "fail")
    ]
    return [(check.host, check.status == "pass", check.detail) for check in found]
