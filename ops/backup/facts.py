"""What a host has for a backup: the project's named volumes (with the database markers found in
them) and the containers that mount them, read from `docker volume inspect`, one short listing
script over the mountpoints and `docker inspect`. A compose project's, or a swarm stack's: a
stack's volume counts on the node whose running task mounts it (a node the task left keeps a stale
copy). Reads only; never changes a host."""

from __future__ import annotations

import dataclasses
import json
import shlex

from ops.backup.commands import as_root
from ops.backup.model import ContainerFact, VolumeFact
from ops.host.labels import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    STACK_LABEL,
    SWARM_SERVICE_LABEL,
    VOLUME_LABEL,
)
from ops.transport import Host


def _key(item: dict[str, object], labels: dict[str, str], project: str) -> str:
    """A volume's name in the compose file: compose labels it; a stack's is <project>_<name>."""
    name = str(item["Name"])
    if labels.get(VOLUME_LABEL):
        return labels[VOLUME_LABEL]
    return name.removeprefix(f"{project}_") if labels.get(STACK_LABEL) == project and project else name


def parse_volumes(inspect_json: str, project: str = "") -> list[VolumeFact]:
    """`docker volume inspect ...` output -> facts."""
    items = json.loads(inspect_json or "[]") or []
    return [
        VolumeFact(item["Name"], _key(item, item.get("Labels") or {}, project), item["Mountpoint"]) for item in items
    ]


def _service(labels: dict[str, str]) -> str:
    """A container's service: compose labels it; a swarm task carries <stack>_<service>."""
    if labels.get(SERVICE_LABEL):
        return labels[SERVICE_LABEL]
    stack = labels.get(STACK_LABEL, "")
    return labels.get(SWARM_SERVICE_LABEL, "").removeprefix(f"{stack}_") if stack else ""


def parse_containers(inspect_json: str) -> list[ContainerFact]:
    """`docker inspect CONTAINER...` output -> facts."""
    facts = []
    for item in json.loads(inspect_json or "[]") or []:
        config = item.get("Config") or {}
        labels = config.get("Labels") or {}
        mounts = {m["Name"]: m.get("Destination", "") for m in item.get("Mounts") or [] if m.get("Type") == "volume"}
        facts.append(
            ContainerFact(
                id=item["Id"][:12],
                name=item.get("Name", "").lstrip("/"),
                service=_service(labels),
                image=config.get("Image", ""),
                running=bool((item.get("State") or {}).get("Running")),
                labels=dict(labels),
                mounts=mounts,
                command=tuple(str(word) for word in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])),
            )
        )
    return facts


# Markers of the programs whose files must not be tarred while they run, found a few levels deep
# (Debian's PostgreSQL keeps 17/main/PG_VERSION); `mysql/` counts at the top only. A SQLite file is
# one whose first 16 bytes are SQLite's header, whatever its name ends with.
MARKERS = ("PG_VERSION", "ibdata1", "WiredTiger", "dump.rdb", "appendonlydir")
SQLITE_HEADER = "SQLite format 3@"  # the header's NUL as tr writes it


def contents_script(mountpoints: list[str]) -> str:
    """List each mountpoint's markers after a `== MOUNTPOINT` line (run as root)."""
    names = " -o ".join(f"-name {name}" for name in MARKERS)
    sqlite = "-name '*.sqlite' -o -name '*.sqlite3' -o -name '*.db'"
    return (
        f"for d in {' '.join(map(shlex.quote, mountpoints))}; do printf '== %s\\n' \"$d\"; "
        '( cd "$d" 2>/dev/null || exit 0; '
        "find . -maxdepth 1 -type d -name mysql -printf '%p/\\n' 2>/dev/null; "
        f"find . -maxdepth 4 \\( {names} \\) -print 2>/dev/null | head -n 20; "
        f"find . -maxdepth 4 -type f \\( {sqlite} \\) -size +0 -print 2>/dev/null | head -n 50 | "
        "while IFS= read -r f; do "
        f"[ \"$(head -c 16 \"$f\" | tr '\\000' @)\" = '{SQLITE_HEADER}' ] && printf 'sqlite:%s\\n' \"$f\"; "
        "done; true ); done"
    )


def parse_contents(output: str) -> dict[str, tuple[str, ...]]:
    """contents_script's output -> {mountpoint: markers relative to it}."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = found.setdefault(line[3:], [])
        elif line.strip() and current is not None:
            entry = line.strip()
            prefix = "sqlite:" if entry.startswith("sqlite:") else ""
            path = entry.removeprefix(prefix).removeprefix("./")
            if prefix + path not in current:
                current.append(prefix + path)
    return {mountpoint: tuple(entries) for mountpoint, entries in found.items()}


def with_contents(volumes: list[VolumeFact], output: str) -> list[VolumeFact]:
    contents = parse_contents(output)
    return [dataclasses.replace(v, contents=contents.get(v.mountpoint, ())) for v in volumes]


def read_volume_facts(host: Host, project: str) -> tuple[list[VolumeFact], list[ContainerFact]]:
    """The project's volumes and containers on the host (by the compose project's label or the swarm
    stack's); a stack's volume only where a running task of the stack mounts it."""
    filters = [shlex.quote(f"label={label}={project}") for label in (PROJECT_LABEL, STACK_LABEL)]
    ids = sorted(set(host.run("; ".join(f"docker ps -aq --filter {f}" for f in filters)).stdout.split()))
    containers = parse_containers(host.run(f"docker inspect {' '.join(ids)}").stdout) if ids else []
    names = sorted(set(host.run("; ".join(f"docker volume ls -q --filter {f}" for f in filters)).stdout.split()))
    inspected = host.run(f"docker volume inspect {' '.join(map(shlex.quote, names))}").stdout if names else "[]"
    mounted = {name for c in containers if c.running for name in c.mounts}
    stale = {
        str(item["Name"])
        for item in json.loads(inspected or "[]") or []
        if (item.get("Labels") or {}).get(STACK_LABEL) and item["Name"] not in mounted
    }
    volumes = [v for v in parse_volumes(inspected, project) if v.name not in stale]
    if volumes:
        listing = host.run(as_root(contents_script([v.mountpoint for v in volumes]), host.spec.user), check=False)
        volumes = with_contents(volumes, listing.stdout)
    return volumes, containers
