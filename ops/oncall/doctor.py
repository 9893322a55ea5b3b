"""`ops.doctor`: checks an on-call person runs first, each pass / warn / fail with the fix to try.

Per host one SSH round trip gathers the facts (engine, disks, inodes, memory, containers, log
rotation) and a second one the clock; backups are read on this machine through ops.backup; a
swarm is read once on a manager (ops.swarm). Each check is one small function registered in
HOST_CHECKS, LOCAL_CHECKS or SWARM_CHECKS (swarm_checks.py). Never changes anything.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from ops.backup import last_drill, list_snapshots, offsite_snapshots, target_dir
from ops.config import Environment
from ops.errors import OpsError
from ops.host.lock import DEFAULT_TTL, LockInfo, read_lock
from ops.oncall.findings import Check, Finding
from ops.oncall.preamble import shell_preamble
from ops.oncall.status import ContainerStatus, parse_stack, stack_script
from ops.oncall.swarm_checks import SWARM_CHECKS
from ops.swarm import swarm_state
from ops.transport import Fleet, Host

DISK_WARN, DISK_FAIL = 85, 95
MEMORY_WARN, MEMORY_FAIL = 90, 97
CONTAINER_MEMORY_WARN, CONTAINER_MEMORY_FAIL = 85, 95
RESTARTS_WARN = 3
CLOCK_WARN, CLOCK_FAIL = 2.0, 30.0


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


# --- the facts of one host: two round trips, read once for every check -------------------------


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


@dataclass(frozen=True)
class HostFacts:
    """What the host checks judge: the facts script's lines, the stack's containers, the lock, the clock."""

    host: str
    user: str
    project: str
    facts: dict[str, list[str]]
    containers: tuple[ContainerStatus, ...]
    lock: LockInfo | None
    remote_clock: str  # the host's `date +%s.%N`
    clock_drift: float | None  # the host's clock minus this machine's, seconds; None: unreadable

    def first(self, key: str, default: str = "") -> str:
        return (self.facts.get(key) or [default])[0]

    @property
    def engine(self) -> str:
        return self.first("engine", "missing")

    @property
    def docker_up(self) -> bool:
        return self.engine.startswith("running")


def read_host_facts(host: Host, project: str, *, clock: Callable[[], float] = time.time) -> HostFacts:
    """The host's facts; raises HostError when it cannot be reached."""
    before = clock()
    remote = host.run("date +%s.%N", check=False).stdout.strip()
    after = clock()
    output = host.run(facts_script(project), check=False, timeout=60).stdout
    facts = parse_lines(output)
    _, _, containers = parse_stack(output)
    try:
        drift: float | None = float(remote) - (before + after) / 2
    except ValueError:
        drift = None
    found = HostFacts(host.name, host.spec.user, project, facts, containers, None, remote, drift)
    # Without Docker the facts script stops before the stack: ask for the lock on its own.
    lock = _lock_info(found.first("lock")) if found.docker_up else read_lock(host, project)
    return replace(found, lock=lock)


def _lock_info(text: str) -> LockInfo | None:
    """The lock from the facts' lock= line (the holder's record), None when not held."""
    if not text:
        return None
    try:
        return LockInfo.from_json(text)
    except ValueError:
        return LockInfo(holder="", since="", reason="", token="")


# --- the host checks: each judges one thing from HostFacts -------------------------------------


def ssh_login(facts: HostFacts) -> list[Finding]:
    return [Finding("pass", f"logged in as {facts.user}")]


def clock_drift(facts: HostFacts) -> list[Finding]:
    drift = facts.clock_drift
    if drift is None:
        return [Finding("warn", f"cannot read the clock ({facts.remote_clock[:60]!r})")]
    level = _level(abs(drift), CLOCK_WARN, CLOCK_FAIL)
    fix = "" if level == "pass" else "enable time sync (chrony or systemd-timesyncd): inv provision"
    return [Finding(level, f"clock differs from this machine's by {drift:+.1f} s", fix)]


def docker_engine(facts: HostFacts) -> list[Finding]:
    engine = facts.engine
    if facts.docker_up:
        return [Finding("pass", f"Docker {engine.split(' ', 1)[-1]} running")]
    fix = "start it: sudo systemctl start docker (or dockerd)" if engine == "down" else "inv provision"
    return [Finding("fail", f"Docker engine {engine}", fix)]


def disk_space(facts: HostFacts) -> list[Finding]:
    """Space and inodes on / and on Docker's root, each mount once."""
    found = []
    seen: set[tuple[str, str]] = set()
    for kind in ("disk", "inodes"):
        for value in facts.facts.get(kind, []):
            percent, _, mount = value.partition(" ")
            if (kind, mount) in seen:
                continue
            seen.add((kind, mount))
            level = _level(_percent(percent), DISK_WARN, DISK_FAIL)
            what = "space" if kind == "disk" else "inodes"
            fix = "" if level == "pass" else "inv runbook.run disk-full (prunes images and build cache with --fix)"
            found.append(Finding(level, f"{what} on {mount}: {percent}% used", fix))
    return found


def volume_space(facts: HostFacts) -> list[Finding]:
    """The filesystems under the stack's volumes, named only when nearly full."""
    found = []
    for value in facts.facts.get("volume", []):
        parts = value.split(" ")
        percent, volume = parts[0], parts[1] if len(parts) > 1 else "?"
        level = _level(_percent(percent), DISK_WARN, DISK_FAIL)
        if level != "pass":
            found.append(
                Finding(
                    level,
                    f"volume {volume}: its filesystem is {percent}% used",
                    "free space on the volume's disk: inv runbook.run disk-full",
                )
            )
    return found


def host_memory(facts: HostFacts) -> list[Finding]:
    memory = facts.facts.get("memory", [])
    if not memory:
        return []
    level = _level(_percent(memory[0]), MEMORY_WARN, MEMORY_FAIL)
    fix = "" if level == "pass" else "inv runbook.run memory-pressure"
    return [Finding(level, f"host memory {memory[0]}% in use", fix)]


def container_states(facts: HostFacts) -> list[Finding]:
    """Unhealthy, exited, restart-looping and OOM-killed containers of the stack."""
    bad = []
    for item in facts.containers:
        if item.state != "running" or item.health == "unhealthy":
            what = item.health if item.state == "running" else item.state
            bad.append(Finding("fail", f"{item.name} is {what}", "inv runbook.run service-unhealthy --fix"))
        elif item.restarts >= RESTARTS_WARN:
            bad.append(
                Finding(
                    "warn",
                    f"{item.name} restarted {item.restarts} times (restart loop?)",
                    f"inv ops.logs {item.service}; inv runbook.run service-unhealthy",
                )
            )
        if item.oom_killed:
            bad.append(Finding("warn", f"{item.name} was OOM-killed", "inv runbook.run memory-pressure"))
    if bad or not facts.docker_up:
        return bad
    project, count = facts.project, len(facts.containers)
    detail = f"{count} containers of {project} running and healthy" if count else f"no containers of {project}"
    return [Finding("pass", detail)]


def container_memory(facts: HostFacts) -> list[Finding]:
    """Running containers near their memory limit."""
    near = []
    for item in facts.containers:
        if item.state != "running" or not item.memory_limit_bytes:
            continue
        level = _level(item.memory_percent, CONTAINER_MEMORY_WARN, CONTAINER_MEMORY_FAIL)
        if level != "pass":
            used, limit = item.memory_bytes / 2**20, item.memory_limit_bytes / 2**20
            near.append(
                Finding(
                    level,
                    f"{item.name} uses {item.memory_percent:.0f}% of its memory limit ({used:.0f} / {limit:.0f} MiB)",
                    "inv runbook.run memory-pressure --fix (restarts it); raise the limit if it recurs",
                )
            )
    if near or not any(item.state == "running" for item in facts.containers):
        return near
    return [Finding("pass", f"every container under {CONTAINER_MEMORY_WARN}% of its memory limit")]


def log_rotation(facts: HostFacts) -> list[Finding]:
    if not facts.docker_up:
        return []
    daemon, driver = facts.first("daemonjson"), facts.first("logdriver")
    if driver == "json-file" and '"max-size"' not in daemon:
        return [
            Finding(
                "warn",
                "json-file logs without rotation in /etc/docker/daemon.json",
                "inv provision (sets log-opts max-size and max-file)",
            )
        ]
    return [Finding("pass", f"log driver {driver}" + (" with rotation" if "max-size" in daemon else ""))]


def deploy_lock(facts: HostFacts) -> list[Finding]:
    lock = facts.lock
    if lock is None:
        return [Finding("pass", "no deploy lock held")]
    age = lock.age_seconds() if lock.since else 0
    if age > DEFAULT_TTL:
        return [
            Finding(
                "fail",
                f"stale deploy lock ({age / 3600:.1f} h old): {lock.describe()}",
                "if no deploy runs: inv lock.release --force",
            )
        ]
    return [Finding("pass", f"deploy lock held ({age:.0f} s): {lock.describe()}")]


# --- the checks on this machine ------------------------------------------------------------------


def newest_complete_backup(location: Path) -> tuple[str, float] | None:
    """(snapshot, its time as epoch seconds) of the newest complete snapshot in ops.backup's
    store at location, or None."""
    complete = [snapshot for snapshot in list_snapshots(location) if snapshot.complete]
    if not complete:
        return None
    newest = max(complete, key=lambda snapshot: snapshot.created_at.timestamp())
    return newest.id, newest.created_at.timestamp()


def backup_age(env: Environment, now: float | None = None) -> list[Finding]:
    location = target_dir(env)
    newest = newest_complete_backup(location)
    if newest is None:
        return [
            Finding("warn", f"no backups found in {location}", "inv backup.all, and schedule it (inv backup.schedule)")
        ]
    return _age_finding(
        f"newest complete backup {newest[0]}",
        newest[1],
        env,
        now,
        "inv backup.all; check the schedule (inv backup.schedule)",
    )


def _age_finding(what: str, created: float, env: Environment, now: float | None, fix: str) -> list[Finding]:
    """Whether `what`, made at `created` (epoch seconds), is within the backup age policy."""
    age_hours = ((now or time.time()) - created) / 3600
    limit = float(env.backup.max_age_hours)
    if age_hours > limit:
        return [Finding("fail", f"{what} is {age_hours:.1f} h old (policy: {limit:g} h)", fix)]
    return [Finding("pass", f"{what} is {age_hours:.1f} h old")]


def backup_drill(env: Environment, now: float | None = None) -> list[Finding]:
    """Whether a restore drill passed within the policy (BACKUP_DRILL_MAX_AGE_DAYS), and how the
    last one went. Backups run daily and drills weekly, so the newest snapshot is usually not the
    drilled one: what matters is that the last drill passed, and recently."""
    complete = [snapshot for snapshot in list_snapshots(target_dir(env)) if snapshot.complete]
    if not complete:
        return [Finding("skipped", "no complete snapshot to drill")]
    schedule = "inv backup.drill; drill weekly: inv backup.schedule --drill '47 4 * * 0'"
    drills = sorted((drill for drill in map(last_drill, complete) if drill is not None), key=lambda d: d.when)
    if not drills:
        return [Finding("warn", f"none of the {len(complete)} complete backups was ever drilled", schedule)]
    last = drills[-1]
    if not last.ok:
        return [
            Finding(
                "warn",
                f"the last drill, of {last.snapshot} on {last.host} ({last.when}), failed: {last.error}",
                "inv backup.verify; fix the cause, then inv backup.drill",
            )
        ]
    try:
        age_days = ((now or time.time()) - datetime.fromisoformat(last.when).timestamp()) / 86400
    except ValueError:
        age_days = float("inf")  # a record whose time cannot be read proves nothing recent
    limit = env.backup.drill_max_age_days
    if age_days > limit:
        return [
            Finding(
                "warn",
                f"the last passing drill, of {last.snapshot} ({last.when}), is older than the policy ({limit} days)",
                schedule,
            )
        ]
    return [
        Finding(
            "pass",
            f"{last.snapshot} drilled on {last.host} {age_days:.1f} days ago: {len(last.volumes)} volumes usable",
        )
    ]


def offsite_age(env: Environment, now: float | None = None) -> list[Finding]:
    """The newest complete copy at BACKUP_OFFSITE, judged by the local backups' policy: a copy that
    quietly stopped (expired credentials, a full bucket) is found before the day it is needed.
    Nothing to check when no offsite place is set."""
    if not env.backup.offsite:
        return []
    try:
        where, snapshots = offsite_snapshots(env)
    except OpsError as error:
        return [Finding("fail", f"offsite copies cannot be listed: {error.one_line()}", OFFSITE_FIX)]
    dated = []
    for snapshot in snapshots:
        with contextlib.suppress(ValueError):
            if snapshot.complete:
                dated.append((datetime.fromisoformat(snapshot.created).timestamp(), snapshot.id))
    if not dated:
        return [Finding("warn", f"no complete snapshot at {where}", OFFSITE_FIX)]
    created, newest = max(dated)
    return _age_finding(f"newest complete copy at {where}, {newest},", created, env, now, OFFSITE_FIX)


OFFSITE_FIX = "inv backup.offsite; check BACKUP_OFFSITE, its credentials and the schedule (inv backup.schedule)"


# --- the registry: a new check is one function above and one line here ---------------------------

HostCheck = Callable[[HostFacts], list[Finding]]
LocalCheck = Callable[[Environment], list[Finding]]

# In the order the doctor shows them.
HOST_CHECKS: tuple[tuple[str, HostCheck], ...] = (
    ("ssh", ssh_login),
    ("clock", clock_drift),
    ("engine", docker_engine),
    ("disk", disk_space),
    ("disk", volume_space),
    ("memory", host_memory),
    ("containers", container_states),
    ("container-memory", container_memory),
    ("logs", log_rotation),
    ("lock", deploy_lock),
)
LOCAL_CHECKS: tuple[tuple[str, LocalCheck], ...] = (
    ("backup", backup_age),
    ("drill", backup_drill),
    ("offsite", offsite_age),
)
CHECK_NAMES = tuple(dict.fromkeys(name for name, _ in (*HOST_CHECKS, *SWARM_CHECKS, *LOCAL_CHECKS)))
SWARM_HOST = "swarm"  # where the swarm's checks are shown: the whole swarm, not one host


def host_checks(host: Host, project: str, *, clock: Callable[[], float] = time.time) -> list[Check]:
    """Every check of one host from its facts; raises HostError when it cannot be reached."""
    facts = read_host_facts(host, project, clock=clock)
    return [finding.as_check(name, host.name) for name, judge in HOST_CHECKS for finding in judge(facts)]


def local_checks(env: Environment) -> list[Check]:
    return [finding.as_check(name, "local") for name, judge in LOCAL_CHECKS for finding in judge(env)]


def backup_check(env: Environment, now: float | None = None) -> Check:
    return backup_age(env, now)[0].as_check("backup", "local")


def doctor(env: Environment, *, only: list[str] | None = None) -> DoctorReport:
    """Every check on every host (in parallel), then this machine's; an unreachable host fails ssh."""
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
    if env.orchestrator.swarm:
        report.checks.extend(swarm_checks(env))
    report.checks.extend(local_checks(env))
    return report


def swarm_checks(env: Environment) -> list[Check]:
    """The swarm's checks from one reading on a manager (and IPVS on each node)."""
    try:
        state = swarm_state(env, ipvs=True)
    except OpsError as error:
        return [Check("swarm-nodes", SWARM_HOST, "fail", error.one_line(), f"inv provision.{env.name}")]
    return [finding.as_check(name, SWARM_HOST) for name, judge in SWARM_CHECKS for finding in judge(state)]


def probe(env: Environment, name: str) -> list[tuple[str, bool, str]]:
    """One check for a runbook step: (where, healthy, detail) per host; warn counts as unhealthy."""
    local = dict(LOCAL_CHECKS)
    if name in local:
        return [("local", finding.status == "pass", finding.detail) for finding in local[name](env)]
    if name not in CHECK_NAMES:
        return [("local", False, f"unknown doctor check {name!r} (known: {', '.join(CHECK_NAMES)})")]
    found = [
        check for check in doctor(env).checks if check.name == name or (check.name == "ssh" and check.status == "fail")
    ]
    return [(check.host, check.status == "pass", check.detail) for check in found]
