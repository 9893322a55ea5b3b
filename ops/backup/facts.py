"""What a host has for a backup: the project's named volumes and the containers that mount them,
read from `docker volume inspect` and `docker inspect`. Reads only; never changes a host."""

from __future__ import annotations

import json
import shlex

from ops.backup.model import ContainerFact, VolumeFact
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL, VOLUME_LABEL
from ops.transport import Host


def parse_volumes(inspect_json: str) -> list[VolumeFact]:
    """`docker volume inspect ...` output -> facts."""
    items = json.loads(inspect_json or "[]") or []
    return [
        VolumeFact(item["Name"], (item.get("Labels") or {}).get(VOLUME_LABEL) or item["Name"], item["Mountpoint"])
        for item in items
    ]


def parse_containers(inspect_json: str) -> list[ContainerFact]:
    """`docker inspect CONTAINER...` output -> facts."""
    facts = []
    for item in json.loads(inspect_json or "[]") or []:
        labels = (item.get("Config") or {}).get("Labels") or {}
        mounts = {m["Name"]: m.get("Destination", "") for m in item.get("Mounts") or [] if m.get("Type") == "volume"}
        facts.append(
            ContainerFact(
                id=item["Id"][:12],
                name=item.get("Name", "").lstrip("/"),
                service=labels.get(SERVICE_LABEL, ""),
                image=(item.get("Config") or {}).get("Image", ""),
                running=bool((item.get("State") or {}).get("Running")),
                labels=dict(labels),
                mounts=mounts,
            )
        )
    return facts


def read_volume_facts(host: Host, project: str) -> tuple[list[VolumeFact], list[ContainerFact]]:
    """The project's volumes and containers on the host (found by the compose project label)."""
    label = shlex.quote(f"label={PROJECT_LABEL}={project}")
    names = host.run(f"docker volume ls -q --filter {label}").stdout.split()
    volumes = (
        parse_volumes(host.run(f"docker volume inspect {' '.join(map(shlex.quote, names))}").stdout) if names else []
    )
    ids = host.run(f"docker ps -aq --filter {label}").stdout.split()
    containers = parse_containers(host.run(f"docker inspect {' '.join(ids)}").stdout) if ids else []
    return volumes, containers
