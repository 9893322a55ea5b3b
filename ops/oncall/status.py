"""Status of an environment's hosts: reachability, OS, kernel, Docker, Compose, containers, disk.

Gathers everything a host can tell in one SSH round trip plus one Docker SDK call; never
changes anything on a host.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ops.config import Environment
from ops.deploy.releases import PIN_REPOSITORY
from ops.errors import AuthenticationError, OpsError
from ops.host.labels import PROJECT_LABEL, STACK_LABEL, SWARM_SERVICE_LABEL, task_service
from ops.host.layout import ProjectLayout
from ops.host.lock import LockInfo, info_path
from ops.transport import Fleet, Host, SSHRunner

FACTS_SCRIPT = r"""
. /etc/os-release 2>/dev/null
echo "os=${NAME%% *} ${VERSION_ID:-?}"
echo "os_pretty=${PRETTY_NAME:-unknown}"
echo "kernel=$(uname -r)"
root=/var/lib/docker
if command -v docker >/dev/null 2>&1; then
  # Each docker CLI call costs 0.1-0.3 s: ask once for several things, and let compose answer
  # in the background meanwhile.
  composefile=$(mktemp)
  (docker compose version --short 2>/dev/null || echo none) > "$composefile" &
  if info=$(docker info --format '{{.ServerVersion}}|{{.DockerRootDir}}' 2>/dev/null) && [ "${info%%|*}" ]; then
    v=${info%%|*}
    echo "docker=$v"
    root=${info#*|}
    docker ps --format '{{.Status}}' | awk '{n++} /\(unhealthy\)/ {u++} END {print "running=" n+0; print "unhealthy=" u+0}'
  else
    v=""
    echo "docker=not running"
  fi
  wait
  echo "compose=$(cat "$composefile")"
  rm -f "$composefile"
else
  echo "docker=not installed"
  echo "compose=none"
fi
[ -d "$root" ] || root=/
echo "root_free=$(df -P -B1 / | awk 'NR==2{print $4}')"
echo "root_size=$(df -P -B1 / | awk 'NR==2{print $2}')"
echo "docker_free=$(df -P -B1 "$root" 2>/dev/null | awk 'NR==2{print $4}')"
"""


# The stack's containers, then their cgroups read twice 0.3 s apart for memory and CPU: `docker
# stats --no-stream` takes 2-3 s per host for the same figures. Works with cgroup v1 and v2.
STACK_SCRIPT = r"""
echo "release=$(readlink %(current)s 2>/dev/null | sed 's#.*/##')"
echo "lock=$(cat %(lock_info)s 2>/dev/null | tr -d '\n')"
ids=$( (docker ps -aq --filter label=%(project_label)s=%(project)s; docker ps -q --filter label=%(stack_label)s=%(project)s) 2>/dev/null | sort -u)
[ -n "$ids" ] || exit 0
docker inspect -f 'container={{.Id}}|{{.Name}}|{{index .Config.Labels "com.docker.compose.service"}}|{{.Config.Image}}|{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.RestartCount}}|{{.State.StartedAt}}|{{.HostConfig.Memory}}|{{.State.Pid}}|{{.State.OOMKilled}}|{{index .Config.Labels "%(stack_label)s"}}|{{index .Config.Labels "%(swarm_service_label)s"}}' $ids > /tmp/.opskit-status.$$
cat /tmp/.opskit-status.$$
images=$(awk -F'|' '{print $4}' /tmp/.opskit-status.$$ | sort -u)
echo "images="$images
docker image inspect -f 'tags={{join .RepoTags " "}}' $images 2>/dev/null
pids=$(awk -F'|' '$5 == "running" {print $10}' /tmp/.opskit-status.$$)
rm -f /tmp/.opskit-status.$$
sample() {
  for p in $pids; do
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
      d=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/$p/cgroup 2>/dev/null)
      mem=$(cat $d/memory.current 2>/dev/null); inactive=$(awk '$1 == "inactive_file" {print $2}' $d/memory.stat 2>/dev/null)
      cpu=$(awk '$1 == "usage_usec" {print $2 * 1000}' $d/cpu.stat 2>/dev/null)
    else
      m=/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/$p/cgroup 2>/dev/null)
      c=/sys/fs/cgroup/cpuacct$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' /proc/$p/cgroup 2>/dev/null)
      mem=$(cat $m/memory.usage_in_bytes 2>/dev/null); inactive=$(awk '$1 == "total_inactive_file" {print $2}' $m/memory.stat 2>/dev/null)
      cpu=$(cat $c/cpuacct.usage 2>/dev/null)
    fi
    echo "cgroup=$1|$p|${mem:-0}|${inactive:-0}|${cpu:-0}|$(date +%%s%%N)"
  done
}
sample 1; sleep 0.3; sample 2
"""


def stack_script(project: str) -> str:
    """STACK_SCRIPT for one project: the shell that prints what parse_stack reads."""
    return STACK_SCRIPT % {
        "project": shlex.quote(project),
        "project_label": PROJECT_LABEL,
        "stack_label": STACK_LABEL,
        "swarm_service_label": SWARM_SERVICE_LABEL,
        "current": shlex.quote(ProjectLayout(project).current),
        "lock_info": shlex.quote(info_path(project)),
    }


@dataclass(frozen=True)
class ContainerStatus:
    """One container of the stack on a host, as `inv ops.status` shows it."""

    service: str
    name: str
    image: str
    state: str  # running | exited | restarting ...
    health: str  # healthy | unhealthy | starting | "" (no healthcheck)
    restarts: int
    started: str  # ISO time the container last started
    uptime_seconds: int
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    memory_percent: float
    oom_killed: bool = False


@dataclass(frozen=True)
class HostStatus:
    """What `inv ops.status` shows for one host."""

    host: str
    reachable: bool
    login: str = ""
    os: str = ""
    kernel: str = ""
    docker: str = ""
    compose: str = ""
    containers_running: int = 0
    containers_unhealthy: int = 0
    root_free_bytes: int = 0
    root_size_bytes: int = 0
    docker_free_bytes: int = 0
    error: str = ""
    release: str = ""
    lock: str = ""
    containers: tuple[ContainerStatus, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_facts(text: str) -> dict[str, str]:
    facts = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Docker's human sizes ("12.5MiB", "1.2GB", "0B") in bytes."""
    text = text.strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :] or "b"
    try:
        return int(float(number) * _UNITS.get(unit, 1))
    except ValueError:
        return 0


def _float(text: str) -> float:
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        return 0.0


def parse_stack(text: str, now: datetime | None = None) -> tuple[str, str, tuple[ContainerStatus, ...]]:
    """(release, lock description, containers) from STACK_SCRIPT's output."""
    now = now or datetime.now(UTC)
    release = lock = ""
    rows: list[list[str]] = []
    samples: dict[tuple[str, str], list[int]] = {}  # (round, pid) -> memory, inactive, cpu ns, time ns
    images: list[str] = []
    tags: list[list[str]] = []  # each image's tags, in the order of images
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "images":
            images = value.split()
        elif key == "tags":
            tags.append(value.split())
        elif key == "release":
            release = value.strip()
        elif key == "lock" and value.strip():
            try:
                info = LockInfo.from_json(value)
                lock = f"held by {info.holder or '?'} since {info.since or '?'}: {info.reason}"
            except ValueError:
                lock = "held (no info)"
        elif key == "container":
            rows.append(value.split("|"))
        elif key == "cgroup":
            fields = value.split("|")
            if len(fields) == 6:
                samples[(fields[0], fields[1])] = [int(f) if f.isdigit() else 0 for f in fields[2:]]
    # A release runs its images under pin tags (opskit-pin/...:<id>); show the name a person gave.
    given = {}
    if len(tags) == len(images):
        for image, names in zip(images, tags, strict=True):
            given[image] = next((name for name in names if not name.startswith(PIN_REPOSITORY + "/")), image)
    containers = []
    for fields in rows:
        if len(fields) < 11:
            continue
        _, name, service, image, state, health, restarts, started, limit, pid, oom = fields[:11]
        if len(fields) >= 13:  # a swarm stack's task is named by its stack service
            service = task_service(fields[11], fields[12]) or service
        image = given.get(image, image)
        first, second = samples.get(("1", pid)), samples.get(("2", pid))
        memory = cpu = 0.0
        if second:
            memory = max(0, second[0] - second[1])
        if first and second and second[3] > first[3]:
            cpu = max(0.0, (second[2] - first[2]) / (second[3] - first[3]) * 100)
        limit_bytes = int(limit) if limit.isdigit() else 0
        uptime = 0
        if state == "running":
            try:
                # Docker gives nanoseconds ("...T10:50:01.123456789Z"): seconds are enough.
                began = datetime.fromisoformat(started[:19] + "+00:00")
                uptime = max(0, int((now - began).total_seconds()))
            except ValueError:
                uptime = 0
        containers.append(
            ContainerStatus(
                service=service,
                name=name.lstrip("/"),
                image=image,
                state=state,
                health=health,
                restarts=int(restarts) if restarts.isdigit() else 0,
                started=started,
                uptime_seconds=uptime,
                cpu_percent=round(cpu, 1),
                memory_bytes=int(memory),
                memory_limit_bytes=limit_bytes,
                memory_percent=round(memory * 100 / limit_bytes, 1) if limit_bytes else 0.0,
                oom_killed=oom == "true",
            )
        )
    return release, lock, tuple(sorted(containers, key=lambda c: (c.service, c.name)))


def host_status(host: Host, project: str = "") -> HostStatus:
    """One host's status; raises HostError when the host cannot be reached."""
    # One round trip: the host's facts, then (when Docker answers) the stack's containers.
    script = FACTS_SCRIPT
    if project:
        script += 'case "$v" in [0-9]*) ' + stack_script(project) + " ;; esac\n"
    output = host.run(script, timeout=60).stdout
    facts = parse_facts(output)
    docker_version = facts.get("docker", "")
    running = _number(facts.get("running", ""))
    unhealthy = _number(facts.get("unhealthy", ""))
    release, lock, containers = parse_stack(output) if project else ("", "", ())
    return HostStatus(
        host=host.name,
        reachable=True,
        login=host.spec.user,
        os=facts.get("os", ""),
        kernel=facts.get("kernel", ""),
        docker=docker_version,
        compose=facts.get("compose", ""),
        containers_running=running,
        containers_unhealthy=unhealthy,
        root_free_bytes=_number(facts.get("root_free", "")),
        root_size_bytes=_number(facts.get("root_size", "")),
        docker_free_bytes=_number(facts.get("docker_free", "")),
        release=release,
        lock=lock,
        containers=containers,
    )


def environment_status(env: Environment, only: list[str] | None = None) -> list[HostStatus]:
    """Every host's status, in parallel; an unreachable host is reported, not raised."""

    def one(host: Host) -> HostStatus:
        try:
            return host_status(host, env.project)
        except AuthenticationError:
            if env.bootstrap_user == host.spec.user:
                raise
        # Not provisioned yet: the deploy user does not exist, so look as the bootstrap user.
        spec = host.spec.as_user(env.bootstrap_user)
        fallback = Host(spec, SSHRunner.for_environment(spec, env))
        try:
            return host_status(fallback, env.project)
        finally:
            fallback.close()

    with Fleet.connect(env, only=only) as fleet:
        result = fleet.map(one)
    statuses = []
    for outcome in result.outcomes:
        if outcome.value is not None:
            statuses.append(outcome.value)
        else:
            error = outcome.error or OpsError("unknown failure")
            statuses.append(HostStatus(host=outcome.host, reachable=False, error=error.message))
    return statuses
