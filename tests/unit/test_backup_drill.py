"""Restore drills without hosts: the copy planned from a canned compose config, each recipe's check
from canned answers, the drill's record and the doctor check that reads it, the weekly cron line."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ops.backup import (
    ArchiveRecord,
    DrilledVolume,
    DrillResult,
    LocalStore,
    Snapshot,
    drill_project,
    last_drill,
    plan_copy,
    write_drill,
)
from ops.backup.drill import check_archives, run_drill
from ops.backup.recipes import RECIPES
from ops.config import HostSpec, load_environment
from ops.console import RecordingReporter
from ops.deploy.releases import Release
from ops.errors import BackupError
from ops.oncall.doctor import backup_drill
from ops.transport import Host
from tests.fakes import FakeRunner

# What `docker compose config --format json` of the demo's current release prints (trimmed).
CONFIG: dict[str, Any] = {
    "name": "demo",
    "services": {
        "proxy": {
            "image": "opskit-pin/demo-proxy:r1",
            "container_name": "demo-proxy",
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080"}],
            "networks": {"edge": None, "backend": {"ipv4_address": "172.30.0.10", "aliases": ["front"]}},
            "volumes": [{"type": "bind", "source": "/opt/demo/releases/r1/proxy/conf", "target": "/etc/nginx/conf.d"}],
        },
        "redis": {
            "image": "opskit-pin/demo-redis:r1",
            "volumes": [{"type": "volume", "source": "redis-data", "target": "/data"}],
            "networks": {"backend": None},
            "healthcheck": {"test": ["CMD", "true"], "start_period": "1m30s"},
        },
        "prometheus": {
            "image": "opskit-pin/demo-prometheus:r1",
            "volumes": [{"type": "volume", "source": "prometheus-data", "target": "/prometheus"}],
            "networks": {"backend": None},
        },
    },
    "networks": {
        "edge": {"name": "demo_edge", "ipam": {"config": [{"subnet": "172.30.1.0/24"}]}},
        "backend": {"name": "shared-backend", "external": True},
    },
    "volumes": {
        "redis-data": {"name": "demo_redis-data"},
        "prometheus-data": {
            "name": "prometheus-data",
            "external": True,
            "driver_opts": {"type": "none", "o": "bind", "device": "/srv/prometheus"},
        },
        "cache": {"name": "demo_cache"},
    },
}


def test_the_copy_is_its_own_project_with_no_ports_and_its_own_volumes_and_networks() -> None:
    plan = plan_copy(CONFIG, "demo", "20261203T101500Z", ["redis-data", "prometheus-data"], health_timeout=60)
    assert plan.project == drill_project("demo", "20261203T101500Z") == "demo-drill-20261203t101500z"
    config = json.loads(plan.compose_file)
    assert config["name"] == plan.project
    for spec in config["services"].values():
        assert "ports" not in spec and "container_name" not in spec
    # Every volume and network is the copy's own: nothing names, or reaches, the stack's.
    assert config["volumes"] == {
        "redis-data": {"name": f"{plan.project}_redis-data"},
        "prometheus-data": {"name": f"{plan.project}_prometheus-data"},
        "cache": {"name": f"{plan.project}_cache"},
    }
    assert config["networks"] == {
        "edge": {"name": f"{plan.project}_edge"},
        "backend": {"name": f"{plan.project}_backend"},
    }
    assert plan.volumes == {
        "redis-data": f"{plan.project}_redis-data",
        "prometheus-data": f"{plan.project}_prometheus-data",
    }
    proxy = config["services"]["proxy"]
    assert proxy["volumes"][0]["read_only"] is True  # a bind mount is never written by the copy
    assert proxy["networks"]["backend"] == {"aliases": ["front"]}  # no fixed address of the stack's
    assert plan.volume_services == ("prometheus", "redis") and plan.services == ("prometheus", "proxy", "redis")
    assert plan.timeout == 120  # redis's start_period (90 s) + 30 outlasts HEALTH_TIMEOUT
    assert CONFIG["services"]["proxy"]["ports"]  # the stack's own config is left as it was


def test_a_copy_is_refused_when_it_cannot_be_throwaway() -> None:
    with pytest.raises(BackupError, match="volume old-data of the snapshot is not in the current release"):
        plan_copy(CONFIG, "demo", "s1", ["old-data"], health_timeout=60)
    hosted = json.loads(json.dumps(CONFIG))
    hosted["services"]["redis"]["network_mode"] = "host"
    with pytest.raises(BackupError, match="service redis shares the host's network"):
        plan_copy(hosted, "demo", "s1", ["redis-data"], health_timeout=60)


def check(recipe: str, answers: dict[str, tuple[int, str]], container: str = "copy-redis-1") -> tuple[str, FakeRunner]:
    runner = FakeRunner(answers)
    return RECIPES[recipe].check(Host(HostSpec("h1"), runner), container, "/v/_data"), runner


def test_each_recipe_checks_the_restored_data_in_the_copy() -> None:
    summary, runner = check("files", {"find /v/_data -type f": (0, "42\n")})
    assert summary == "42 files" and runner.commands[0].startswith("sudo -n bash -c")  # the volume is root's
    summary, runner = check("redis", {"PING": (0, "PONG\n"), "DBSIZE": (0, "17\n")})
    assert summary == "PING PONG, 17 keys"
    assert all("docker exec copy-redis-1" in command for command in runner.commands)
    summary, runner = check("postgres", {"pg_database": (0, "app 5\npostgres 0\n")}, "copy-db-1")
    assert summary == "2 databases, 5 tables (app: 5, postgres: 0)"
    assert "docker exec copy-db-1" in runner.commands[0] and "POSTGRES_USER" in runner.commands[0]
    ready = "HTTP/1.0 200 OK\r\n\r\nPrometheus Server is Ready.\n"
    # Two block directories (26-letter ULIDs, made from parts), the head chunks and the wal.
    blocks = "\n".join(["01" + "A" * 24, "01" + "B7" * 12, "chunks_head", "wal"])
    summary, runner = check("prometheus", {"docker exec -i": (0, ready), "ls -A": (0, blocks)}, "copy-prom-1")
    assert summary == "ready, 2 blocks, wal"


@pytest.mark.parametrize(
    ("recipe", "answers", "container", "error"),
    [
        ("redis", {"PING": (1, "Could not connect to Redis")}, "copy-redis-1", "PING answered 'Could not connect"),
        ("redis", {}, "", "no running container of the copy mounts the volume"),
        ("postgres", {"pg_database": (2, 'psql: FATAL: role "postgres" does not exist')}, "db", "psql could not list"),
        ("prometheus", {"docker exec -i": (1, "Connection refused")}, "prom", "GET /-/ready: Connection refused"),
        (
            "prometheus",
            {"docker exec -i": (0, "Prometheus Server is Ready."), "ls -A": (0, "lock\n")},
            "prom",
            "no block",
        ),
        ("files", {"find": (1, "No such file or directory")}, "", "cannot count the files in /v/_data"),
    ],
)
def test_a_check_fails_with_its_cause(
    recipe: str, answers: dict[str, tuple[int, str]], container: str, error: str
) -> None:
    with pytest.raises(BackupError, match=error.replace("(", r"\(")):
        check(recipe, answers, container)


def snapshot_in(directory: Path, snapshot_id: str, data: bytes = b"archived bytes") -> Snapshot:
    path = directory / snapshot_id
    (path / "h1").mkdir(parents=True)
    (path / "h1" / "redis-data.tar.zst").write_bytes(data)
    record = ArchiveRecord(
        "h1", "redis-data", "demo_redis-data", ("redis",), "redis", "h1/redis-data.tar.zst", "zstd",
        len(b"archived bytes"), hashlib.sha256(b"archived bytes").hexdigest(), 0.1,
    )  # fmt: skip
    manifest = {"complete": True, "created": f"2026-12-0{snapshot_id[7]}T00:00:00+00:00", "project": "demo"}
    (path / "manifest.json").write_text(json.dumps({**manifest, "archives": [record.as_dict()]}))
    return Snapshot(snapshot_id, path, True, manifest["created"], "t", "demo", [record])


def test_a_corrupted_archive_fails_the_drill_before_anything_runs_on_the_host(tmp_path: Path) -> None:
    snapshot = snapshot_in(tmp_path, "20261201T000000Z", data=b"archived bytez")
    runner = FakeRunner()
    with pytest.raises(BackupError, match=r"redis-data: archive h1/redis-data.tar.zst does not match its sha256"):
        check_archives(
            Host(HostSpec("h1"), runner), snapshot, LocalStore(tmp_path), snapshot.archives, RecordingReporter()
        )
    assert runner.commands == []


def test_the_copy_is_removed_when_the_drill_fails_half_way(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=h1\nPROJECT=demo\n")
    env = load_environment("t", tmp_path, {})
    snapshot = snapshot_in(tmp_path / "backups", "20261201T000000Z")
    release = Release("r1", "v1", "", "me", "", ("compose.yaml",), status="active")
    runner = FakeRunner(
        {
            "readlink /opt/demo/current && cat": (0, f"/opt/demo/releases/r1\n{release.to_json()}"),
            "config --format json": (0, json.dumps(CONFIG)),
            "up -d --no-build": (1, "Error response from daemon: no space left on device"),
        }
    )
    result = DrillResult(snapshot.id, "h1", "", "")
    with pytest.raises(BackupError, match=r"docker compose up of the copy exited 1: .*no space left on device"):
        run_drill(Host(HostSpec("h1"), runner), env, snapshot, LocalStore(tmp_path / "backups"), snapshot.archives,
                  RecordingReporter(), result)  # fmt: skip
    up = next(i for i, c in enumerate(runner.commands) if "up -d --no-build" in c)
    removals = [i for i, c in enumerate(runner.commands) if "docker rm -f -v" in c]
    # Once before (a killed drill's leftovers), once after the failure: whatever happened.
    assert len(removals) == 2 and removals[0] < up < removals[1]
    removal = runner.commands[removals[1]]
    assert "label=com.docker.compose.project=demo-drill-20261201t000000z" in removal
    assert "demo_redis-data" not in removal and "rm -rf /opt/demo/drills/demo-drill-20261201t000000z" in removal
    written = next(c for c in runner.commands if "compose.json" in c and "cat >" in c)
    assert "umask 077" in written


def test_a_drill_is_recorded_beside_the_manifest_and_read_by_the_doctor(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.1\n")
    env = load_environment("lab", tmp_path, os.environ)
    backups = tmp_path / "backups" / "lab"
    day = 86400.0
    drilled_at = datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp()
    assert backup_drill(env)[0].status == "skipped"
    older = snapshot_in(backups, "20261201T000000Z")
    (finding,) = backup_drill(env, now=drilled_at)
    assert (finding.status, finding.detail) == ("warn", "none of the 1 complete backups was ever drilled")
    assert "inv backup.schedule --drill" in finding.fix
    passed = DrillResult(older.id, "h1", "demo-drill-x", "2026-12-01T05:00:00+00:00", seconds=31.5)
    passed.volumes.append(DrilledVolume("h1", "redis-data", "redis", "PING PONG, 3 keys", 4.2))
    write_drill(older, passed)
    assert last_drill(older) == passed and (older.path / "drill.json").is_file()
    (finding,) = backup_drill(env, now=drilled_at + day)
    assert (finding.status, finding.detail) == ("pass", f"{older.id} drilled on h1 1.0 days ago: 1 volumes usable")
    # Daily backups, weekly drills: a newer undrilled snapshot is normal while the drill is recent.
    newest = snapshot_in(backups, "20261202T000000Z")
    assert backup_drill(env, now=drilled_at + 7 * day)[0].status == "pass"
    (finding,) = backup_drill(env, now=drilled_at + 9 * day)
    assert finding.status == "warn" and "older than the policy (8 days)" in finding.detail
    write_drill(
        newest, DrillResult(newest.id, "h1", "p", "2026-12-02T05:00:00+00:00", error="redis-data: check failed: x")
    )
    (finding,) = backup_drill(env, now=drilled_at + day)
    assert finding.status == "warn" and "redis-data: check failed: x" in finding.detail
    assert last_drill(newest) is not None and not last_drill(newest).ok  # type: ignore[union-attr]


def test_the_schedule_can_add_a_drill_and_drops_it_when_not_asked(tmp_path: Path) -> None:
    from ops.backup import schedule

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=127.0.0.1\n")
    env = load_environment("t", tmp_path, {})
    table, fake = tmp_path / "table", tmp_path / "crontab"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -l ]; then cat {table}; else cat > {table}; fi\n')
    fake.chmod(0o755)
    table.write_text("0 1 * * * other job\n")
    with pytest.raises(BackupError, match="not a cron schedule"):
        schedule(env, "17 3 * * *", drill="weekly", crontab=str(fake))
    assert table.read_text() == "0 1 * * * other job\n"
    lines = schedule(env, "17 3 * * *", drill="47 4 * * 0", crontab=str(fake)).splitlines()
    entries = table.read_text().splitlines()
    assert entries[1:] == lines and len(entries) == 3
    assert entries[2].startswith("47 4 * * 0 cd ") and "backup.drill --env t" in entries[2]
    assert entries[2].endswith("# opskit-drill:t") and "cron.log" in entries[2]
    schedule(env, "17 3 * * *", crontab=str(fake))
    assert len(table.read_text().splitlines()) == 2 and "backup.drill" not in table.read_text()


def test_the_doctor_judges_the_newest_complete_offsite_copy_by_the_backup_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ops.backup.model import Snapshot
    from ops.errors import BackupError
    from ops.oncall import doctor

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.1\n")
    assert doctor.offsite_age(load_environment("lab", tmp_path, os.environ)) == []  # nothing set, no line
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.1\nBACKUP_OFFSITE=s3://bucket/opskit\n")
    env = load_environment("lab", tmp_path, os.environ)
    where = "s3://bucket/opskit"
    copies = [
        Snapshot("20261201T010000Z", Path(where), True, created="2026-12-01T01:00:00+00:00"),
        Snapshot("20261202T010000Z", Path(where), False, created="2026-12-02T01:00:00+00:00"),  # cut halfway
    ]
    monkeypatch.setattr(doctor, "offsite_snapshots", lambda env: (where, copies))
    hour = 3600.0
    copied = datetime(2026, 12, 1, 1, tzinfo=UTC).timestamp()
    (finding,) = doctor.offsite_age(env, now=copied + 10 * hour)
    assert (finding.status, finding.detail) == (
        "pass",
        f"newest complete copy at {where}, 20261201T010000Z, is 10.0 h old",
    )
    (finding,) = doctor.offsite_age(env, now=copied + 30 * hour)  # the cut copy does not count
    assert finding.status == "fail" and "is 30.0 h old (policy: 26 h)" in finding.detail
    assert "inv backup.offsite" in finding.fix

    def unreachable(env: object) -> None:
        raise BackupError("S3 answered AccessDenied", where=where)

    monkeypatch.setattr(doctor, "offsite_snapshots", unreachable)
    (finding,) = doctor.offsite_age(env)
    assert finding.status == "fail" and "cannot be listed" in finding.detail and "AccessDenied" in finding.detail
