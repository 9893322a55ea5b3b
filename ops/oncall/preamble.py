"""The shell every on-call command runs in on a host: $PROJECT, $OPS_DIR, containers(), volumes().

Runbook steps and the doctor's facts script both start with this preamble; it only defines names
and never changes anything on a host.
"""

from __future__ import annotations

import shlex

from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL
from ops.host.layout import ProjectLayout

# Exit code of the exec wrapper when the service has no running container on the host.
NO_CONTAINER = 97


def shell_preamble(project: str) -> str:
    """Variables and functions every runbook command can use on a host."""
    return (
        f"PROJECT={shlex.quote(project)}; OPS_DIR={shlex.quote(ProjectLayout(project).base)}; "
        "containers() { docker ps -q${2:+a} --filter label=" + PROJECT_LABEL + "=$PROJECT "
        "--filter label=" + SERVICE_LABEL + '="$1"; }; '
        "volumes() { docker volume ls -q --filter label=" + PROJECT_LABEL + "=$PROJECT; }; "
    )


def host_command(project: str, command: str) -> str:
    return f"{shell_preamble(project)}{command}"


def exec_command(project: str, service: str, command: str) -> str:
    """Run command in every running container of service on the host; exit 97 when there is none."""
    return host_command(
        project,
        f'ids=$(containers {shlex.quote(service)}); if [ -z "$ids" ]; then '
        f'echo "no running container of service {service}"; exit {NO_CONTAINER}; fi; rc=0; '
        f"for c in $ids; do docker exec $c sh -c {shlex.quote(command)} || rc=$?; done; exit $rc",
    )
