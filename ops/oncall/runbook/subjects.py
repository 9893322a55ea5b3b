"""What a runbook step can be about on a host: the compose project's services and the roles they
play. A role is found from what a service's containers run (the backup recipes' detection: redis,
postgres, mysql, mongodb, prometheus), from an `opskit.role` label (which replaces detection), and
from the container's configuration: `healthchecked` (it has a healthcheck) and `entry` (it
publishes ports). Stopped containers count: they still say what they run. Reads only.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ops.backup.facts import parse_containers
from ops.backup.recipes import DEFAULT, detect
from ops.errors import OpsError
from ops.host.labels import PROJECT_LABEL, ROLE_LABEL

HEALTHCHECKED = "healthchecked"  # every service with a healthcheck
ENTRY = "entry"  # the services that publish ports: where requests come in


def inspect_command(project: str) -> str:
    """`docker inspect` of every container of the project (running or not), as one JSON list."""
    return (
        f"ids=$(docker ps -aq --filter label={PROJECT_LABEL}={shlex.quote(project)}); "
        '[ -z "$ids" ] && echo "[]" || docker inspect $ids'
    )


def _configured_roles(item: dict[str, Any]) -> set[str]:
    roles = set()
    test = ((item.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    if test and test[0] != "NONE":
        roles.add(HEALTHCHECKED)
    bindings = (item.get("HostConfig") or {}).get("PortBindings") or {}
    if any(bindings.values()):
        roles.add(ENTRY)
    return roles


def service_roles(inspect_json: str) -> dict[str, frozenset[str]]:
    """service -> its roles, from inspect_command's output."""
    items = json.loads(inspect_json or "[]") or []
    roles: dict[str, set[str]] = {}
    for item, fact in zip(items, parse_containers(inspect_json), strict=True):
        if not fact.service:
            continue
        found = roles.setdefault(fact.service, set())
        found |= _configured_roles(item)
        labelled = {role.strip().lower() for role in fact.labels.get(ROLE_LABEL, "").split(",") if role.strip()}
        if labelled:
            found |= labelled
            continue
        try:
            recipe = detect(fact)
        except OpsError:  # an opskit.backup.recipe label naming no recipe: no role from it
            continue
        if recipe is not DEFAULT:
            found.add(recipe.name)
    return {service: frozenset(found) for service, found in roles.items()}


def services_with(role: str, roles: dict[str, frozenset[str]]) -> list[str]:
    return sorted(service for service, played in roles.items() if role in played)
