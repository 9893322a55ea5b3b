"""ops.doctor and the stack part of ops.status from canned host answers: levels, fixes, backups."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.config import HostSpec, load_environment
from ops.host.lock import LockInfo
from ops.oncall.doctor import CHECK_NAMES, HOST_CHECKS, backup_check, host_checks, newest_complete_backup, probe
from ops.oncall.status import parse_size, parse_stack
from ops.oncall.swarm_checks import SWARM_CHECKS
from ops.transport import Host
from tests.fakes import FakeRunner

FACTS = """engine=running 26.1.5
logdriver=json-file
disk=31 /
disk=96 /var/lib/docker
inodes=4 /
inodes=4 /var/lib/docker
memory=40
daemonjson={"log-driver":"json-file","log-opts":{"max-size":"10m","max-file":"3"}}
volume=100 demo_redis-data /var/lib/docker/volumes/demo_redis-data/_data
volume=20 demo_prometheus-data /var/lib/docker
lock=
container=a1|/demo-redis-1|redis|redis:1|exited||0|2026-11-23T10:00:00Z|134217728|0|false
container=b2|/demo-web-1|web|web:v1|running|unhealthy|0|2026-11-23T10:00:00Z|134217728|101|false
container=c3|/demo-proxy-1|proxy|proxy:1|running|healthy|7|2026-11-23T10:00:00Z|67108864|102|true
cgroup=1|101|125000000|0|1000000000|1000000000
cgroup=2|101|125829120|0|1100000000|1300000000
cgroup=1|102|2000000|0|0|1000000000
cgroup=2|102|2000000|0|0|1300000000
"""


def checks_for(answers: dict[str, tuple[int, str]]) -> dict[str, list[tuple[str, str]]]:
    host = Host(HostSpec("127.0.0.21"), FakeRunner(answers))
    found: dict[str, list[tuple[str, str]]] = {}
    for check in host_checks(host, "demo", clock=time.time):
        found.setdefault(check.name, []).append((check.status, check.detail))
    return found


def test_doctor_levels_from_a_sick_host() -> None:
    now = f"{time.time():.3f}"
    checks = checks_for({"date +%s.%N": (0, now), "docker info": (0, FACTS)})
    assert ("fail", "space on /var/lib/docker: 96% used") in checks["disk"]
    assert ("pass", "space on /: 31% used") in checks["disk"]
    assert ("fail", "volume demo_redis-data: its filesystem is 100% used") in checks["disk"]
    assert ("fail", "demo-redis-1 is exited") in checks["containers"]
    assert ("fail", "demo-web-1 is unhealthy") in checks["containers"]
    assert ("warn", "demo-proxy-1 restarted 7 times (restart loop?)") in checks["containers"]
    assert ("warn", "demo-proxy-1 was OOM-killed") in checks["containers"]
    assert checks["container-memory"] == [("warn", "demo-web-1 uses 94% of its memory limit (120 / 128 MiB)")]
    assert checks["logs"][0][0] == "pass"
    assert checks["lock"] == [("pass", "no deploy lock held")]
    assert checks["clock"][0][0] == "pass"


def test_doctor_flags_a_stale_lock_missing_rotation_and_clock_drift() -> None:
    since = (datetime.now(UTC) - timedelta(hours=3)).isoformat(timespec="seconds")
    lock = json.dumps({"holder": "ci@runner", "since": since, "reason": "deploy v9", "token": "t"})
    facts = FACTS.replace('"max-size":"10m",', "").replace("disk=96", "disk=50").replace("lock=", f"lock={lock}")
    checks = checks_for({"date +%s.%N": (0, f"{time.time() + 120:.3f}"), "docker info": (0, facts)})
    assert checks["lock"][0][0] == "fail" and "stale deploy lock (3.0 h old)" in checks["lock"][0][1]
    assert checks["logs"][0][0] == "warn"
    assert checks["clock"][0][0] == "fail" and "+120" in checks["clock"][0][1]


def test_doctor_fails_a_stopped_engine() -> None:
    checks = checks_for({"date +%s.%N": (0, f"{time.time():.3f}"), "docker info": (0, "engine=down\nmemory=10\n")})
    assert checks["engine"] == [("fail", "Docker engine down")]


def snapshot(root: Path, name: str, hours_old: float, complete: bool = True) -> None:
    directory = root / name
    directory.mkdir(parents=True)
    stamp = (datetime.now(UTC) - timedelta(hours=hours_old)).isoformat()
    (directory / "manifest.json").write_text(json.dumps({"created": stamp, "complete": complete}))


def test_newest_complete_backup_skips_incomplete_snapshots(tmp_path: Path) -> None:
    assert newest_complete_backup(tmp_path / "none") is None
    snapshot(tmp_path, "old", 50)
    snapshot(tmp_path, "new-but-incomplete", 1, complete=False)
    snapshot(tmp_path, "newer.partial", 0.5)
    found = newest_complete_backup(tmp_path)
    assert found is not None and found[0] == "old"


def test_backup_check_reads_the_policy_and_tolerates_no_backups(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.1\n")
    env = load_environment("lab", tmp_path, os.environ)
    check = backup_check(env)
    assert check.status == "warn" and check.detail.startswith("no backups found in")
    snapshot(tmp_path / "backups" / "lab", "s1", 30)
    assert backup_check(env).status == "fail"
    snapshot(tmp_path / "backups" / "lab", "s2", 2)
    assert backup_check(env).status == "pass"


def test_status_parses_the_stack_per_container() -> None:
    text = (
        "release=20261123-105128-v1\n"
        'lock={"holder": "ann@laptop", "since": "2026-11-23T10:00:00+00:00", "reason": "deploy"}\n'
        "container=abc123def|/demo-web-1|web|opskit-pin/demo-web:4825a0c9|running|healthy|2|2026-11-23T10:00:00.123456789Z|134217728|55|false\n"
        "container=fff000|/demo-redis-1|redis|opskit-pin/demo-redis:6b9d584e|exited||0|2026-11-23T09:00:00Z|0|0|false\n"
        "images=opskit-pin/demo-redis:6b9d584e opskit-pin/demo-web:4825a0c9\n"
        "tags=opskit-demo/redis:1 opskit-pin/demo-redis:6b9d584e\n"
        "tags=opskit-pin/demo-web:4825a0c9 opskit-demo/web:v1\n"
        "cgroup=1|55|13000000|0|5000000000|1000000000\n"
        "cgroup=2|55|13107200|0|5004500000|1300000000\n"
    )
    release, lock, containers = parse_stack(text, now=datetime(2026, 11, 23, 10, 5, tzinfo=UTC))
    assert release == "20261123-105128-v1"
    assert lock.startswith("held by ann@laptop")
    redis, web = containers
    assert (web.service, web.health, web.restarts, web.uptime_seconds) == ("web", "healthy", 2, 300)
    assert (web.image, redis.image) == ("opskit-demo/web:v1", "opskit-demo/redis:1")  # not the pin tags
    assert (web.cpu_percent, web.memory_bytes, web.memory_limit_bytes) == (1.5, 13107200, 134217728)
    assert web.memory_percent == 9.8
    assert (redis.state, redis.uptime_seconds, redis.memory_bytes) == ("exited", 0, 0)
    assert parse_size("1.5GiB") == int(1.5 * 1024**3) and parse_size("0B") == 0


def test_the_backup_age_policy_comes_from_the_env_file(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "lab.env").write_text("HOSTS=127.0.0.1\nBACKUP_MAX_AGE_HOURS=48\n")
    env = load_environment("lab", tmp_path, os.environ)
    snapshot(tmp_path / "backups" / "lab", "s1", 30)
    check = backup_check(env)
    assert check.status == "pass", check.detail


def test_the_lock_record_is_parsed_in_one_place() -> None:
    info = LockInfo("ann@laptop", "2026-11-23T10:00:00+00:00", "deploy v3", "t0k", "laptop", 42)
    assert LockInfo.from_json(json.dumps(asdict(info))) == info
    assert LockInfo.from_json('{"holder": "ci"}') == LockInfo("ci", "", "", "", "", 0)
    for broken in ("not json", "[1, 2]"):
        with pytest.raises(ValueError):
            LockInfo.from_json(broken)
    _, lock, _ = parse_stack("lock=not json\n")
    assert lock == "held (no info)"


def test_every_registered_host_check_reports_in_the_registry_order() -> None:
    healthy = FACTS.replace("disk=96", "disk=50").replace("volume=100", "volume=10")
    healthy = "\n".join(line for line in healthy.splitlines() if not line.startswith("container=a1"))
    host = Host(
        HostSpec("127.0.0.21"), FakeRunner({"date +%s.%N": (0, f"{time.time():.3f}"), "docker info": (0, healthy)})
    )
    names = [check.name for check in host_checks(host, "demo")]
    registered = [name for name, _ in HOST_CHECKS]
    assert list(dict.fromkeys(names)) == list(dict.fromkeys(registered))
    swarm = [name for name, _ in SWARM_CHECKS]  # shown after the hosts' checks, for ORCHESTRATOR=swarm
    assert (*dict.fromkeys(registered), *swarm, "backup", "drill", "offsite") == CHECK_NAMES
    assert probe(None, "nope") == [("local", False, f"unknown doctor check 'nope' (known: {', '.join(CHECK_NAMES)})")]  # type: ignore[arg-type]
