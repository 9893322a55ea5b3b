"""Status of an environment's hosts: reachability, OS, kernel, Docker, Compose, containers, disk.

Gathers everything a host can tell in one SSH round trip plus one Docker SDK call; never
changes anything on a host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ops.config import Environment
from ops.errors import AuthenticationError, OpsError
from ops.remote import Fleet, Host, SSHRunner

FACTS_SCRIPT = r"""
. /etc/os-release 2>/dev/null
echo "os=${NAME%% *} ${VERSION_ID:-?}"
echo "os_pretty=${PRETTY_NAME:-unknown}"
echo "kernel=$(uname -r)"
root=/var/lib/docker
if command -v docker >/dev/null 2>&1; then
  if v=$(docker version --format '{{.Server.Version}}' 2>/dev/null); then
    echo "docker=$v"
    root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo $root)
  else
    echo "docker=not running"
  fi
  echo "compose=$(docker compose version --short 2>/dev/null || echo none)"
else
  echo "docker=not installed"
  echo "compose=none"
fi
[ -d "$root" ] || root=/
echo "root_free=$(df -P -B1 / | awk 'NR==2{print $4}')"
echo "root_size=$(df -P -B1 / | awk 'NR==2{print $2}')"
echo "docker_free=$(df -P -B1 "$root" 2>/dev/null | awk 'NR==2{print $4}')"
"""


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


def host_status(host: Host) -> HostStatus:
    """One host's status; raises HostError when the host cannot be reached."""
    facts = parse_facts(host.run(FACTS_SCRIPT).stdout)
    running = unhealthy = 0
    docker_version = facts.get("docker", "")
    if docker_version and docker_version[0].isdigit():
        client = host.docker()
        running = len(client.containers.list(filters={"status": "running"}))
        unhealthy = len(client.containers.list(filters={"health": "unhealthy"}))
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
    )


def environment_status(env: Environment, only: list[str] | None = None) -> list[HostStatus]:
    """Every host's status, in parallel; an unreachable host is reported, not raised."""

    def one(host: Host) -> HostStatus:
        try:
            return host_status(host)
        except AuthenticationError:
            if env.bootstrap_user == host.spec.user:
                raise
        # Not provisioned yet: the deploy user does not exist, so look as the bootstrap user.
        spec = host.spec.as_user(env.bootstrap_user)
        runner = SSHRunner(
            spec,
            known_hosts=env.known_hosts,
            identity_file=env.identity_file,
            connect_timeout=env.connect_timeout,
            env_name=env.name,
        )
        fallback = Host(spec, runner)
        try:
            return host_status(fallback)
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
