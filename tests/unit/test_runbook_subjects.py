"""Runbook steps bound to what a stack has: services found by what they run (the backup recipes'
detection), their healthcheck and published ports, or an `opskit.role` label; a step whose role no
service plays is not applicable and never fails the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops.config import HostSpec
from ops.oncall.runbook import load_runbook
from ops.oncall.runbook.run import _diagnose_host
from ops.oncall.runbook.subjects import service_roles
from ops.transport import Host
from tests.fakes import FakeRunner


def container(service: str, image: str, cmd: list[str], **extra: Any) -> dict[str, Any]:
    labels = {"com.docker.compose.project": "notes", "com.docker.compose.service": service, **extra.get("labels", {})}
    config: dict[str, Any] = {"Image": image, "Cmd": cmd, "Entrypoint": None, "Labels": labels}
    if extra.get("healthcheck"):
        config["Healthcheck"] = {"Test": ["CMD-SHELL", "true"]}
    ports = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} if extra.get("ports") else {}
    return {
        "Id": f"{service}0123456789abcdef",
        "Name": f"/notes-{service}-1",
        "Config": config,
        "HostConfig": {"PortBindings": ports},
        "State": {"Running": True},
        "Mounts": [],
    }


NOTES = [
    container("gateway", "notes-gateway:1", ["nginx", "-g", "daemon off;"], healthcheck=True, ports=True),
    container("api", "notes-api:1", ["python3", "/app/api.py"], healthcheck=True),
    container("cache", "notes-cache:1", ["redis-server", "/etc/redis.conf"], healthcheck=True),
    container("db", "notes-db:1", ["sh", "-c", "exec postgres -D /data"], healthcheck=True),
    container("store", "kv:1", ["/usr/bin/kvd"], labels={"opskit.role": "redis"}),
    container("exporter", "redis-exporter:1", ["/exporter"], labels={"opskit.role": "exporter"}),
]


def test_roles_come_from_what_services_run_their_config_and_labels() -> None:
    roles = service_roles(json.dumps(NOTES))
    assert roles == {
        "gateway": {"healthchecked", "entry"},
        "api": {"healthchecked"},
        "cache": {"healthchecked", "redis"},
        "db": {"healthchecked", "postgres"},
        "store": {"redis"},  # the label says what detection cannot see
        "exporter": {"exporter"},  # ... and overrides what its image name suggests
    }


RUNBOOK = """
name = "cache-check"
title = "t"
symptoms = ["s"]

[[diagnosis]]
id = "ping"
title = "{service} answers PING"
role = "redis"
exec = "redis-cli ping"
expect = { match = '^PONG$' }
cause = "Redis {service} does not answer ({value})"

[[diagnosis]]
title = "{service} is ready"
role = "mysql"
exec = "mysqladmin ping"
cause = "MySQL {service} does not answer"
"""


def test_a_step_runs_for_every_service_of_its_role_and_is_not_applicable_without_one(tmp_path: Path) -> None:
    path = tmp_path / "cache-check.toml"
    path.write_text(RUNBOOK)
    runbook = load_runbook(path)
    runner = FakeRunner({"docker inspect": (0, json.dumps(NOTES)), "redis-cli ping": (1, "Connection refused")})
    results = _diagnose_host(Host(HostSpec("h1"), runner), "notes", runbook.steps)
    assert [(r.step, r.ok, r.applicable, r.cause) for r in results] == [
        ("cache answers PING", False, True, "Redis cache does not answer (exit 1)"),
        ("store answers PING", False, True, "Redis store does not answer (exit 1)"),
        ("mysql is ready", True, False, ""),
    ]
    assert results[2].value == "not applicable: no service of the stack plays mysql"
