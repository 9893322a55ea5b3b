"""Backup recipes without hosts: detection, and what each recipe runs to archive, check and restore
a volume (commands recorded by the fake runner, bytes streamed through it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ops.backup import (
    RECIPES,
    ArchiveRecord,
    ContainerFact,
    LocalStore,
    Snapshot,
    VolumeFact,
    archive_volume,
    detect_recipe,
    pg_dump_command,
    plan_volume,
    snapshot_name,
)
from ops.backup.recipes import ArchiveJob, Archiving, detect
from ops.backup.restore import restore_volume
from ops.config import HostSpec, load_environment
from ops.console import RecordingReporter
from ops.errors import BackupError
from ops.transport import CommandResult, Host
from tests.fakes import FakeRunner
from tests.unit.test_backup import REDIS_VOLUME, container


@pytest.mark.parametrize(
    ("service", "image", "labels", "recipe"),
    [
        ("redis", "opskit-pin/demo-redis:1a2b", {}, "redis"),
        ("cache", "redis:7", {}, "redis"),
        ("db", "postgres:16", {}, "postgres"),
        ("prometheus", "opskit-demo/prometheus:1", {}, "prometheus"),
        ("alertmanager", "opskit-demo/alertmanager:1", {}, "files"),
        ("web", "opskit-demo/web:v1", {}, "files"),
        ("store", "mystore:1", {"opskit.backup.recipe": "postgres"}, "postgres"),
        ("redis", "opskit-demo/redis:1", {"opskit.backup.recipe": "files"}, "files"),
    ],
)
def test_recipe_is_found_from_label_then_image_and_service(
    service: str, image: str, labels: dict[str, str], recipe: str
) -> None:
    fact = ContainerFact("i", service, service, image, True, labels, {})
    assert detect_recipe(fact) == recipe


def test_an_unknown_recipe_label_is_refused() -> None:
    fact = ContainerFact("i", "x", "x", "x:1", True, {"opskit.backup.recipe": "oracle"}, {})
    with pytest.raises(BackupError, match="not a recipe"):
        detect_recipe(fact)


def test_postgres_plan_dumps_every_database_through_the_container() -> None:
    plan = plan_volume(REDIS_VOLUME, [container("db", "postgres:16")])
    assert plan.recipe == "postgres" and plan.archive_name == "redis-data.sql.zst"
    command = pg_dump_command(plan.recipe_container, "zstd")
    assert "docker exec demo-db-1" in command and "pg_dumpall" in command and "zstd -q -c" in command
    assert "pipefail" in command


def test_prometheus_snapshot_answer() -> None:
    assert snapshot_name('{"status":"success","data":{"name":"20261123T105000Z-1a2b3c"}}') == "20261123T105000Z-1a2b3c"
    with pytest.raises(BackupError, match="snapshot failed"):
        snapshot_name('{"status":"error","error":"admin APIs disabled"}')


def test_every_recipe_names_its_archive_and_how_it_is_checked() -> None:
    # detection order; files last resort
    assert list(RECIPES) == ["files", "postgres", "mysql", "mongodb", "redis", "prometheus", "sqlite"]
    for name, recipe in RECIPES.items():
        plan = plan_volume(REDIS_VOLUME, [])
        assert recipe.name == name
        check = recipe.test_extract_command("gzip", "/scratch", "root")
        assert check.startswith("bash -c") and "gzip -dc" in check
        if name in ("postgres", "mysql", "mongodb"):
            assert recipe.suffix in (".sql", ".archive") and "> /dev/null" in check and "tar" not in check
            assert recipe.tested("h1/db.sql.gz", "0") == "h1/db.sql.gz: dump ok"
        else:
            assert recipe.suffix == ".tar" and "tar -C /scratch --numeric-owner -xf -" in check
            assert recipe.tested("h1/x.tar.gz", "12") == "h1/x.tar.gz: 12 entries"
    assert plan.archive_name == "redis-data.tar.zst"


def test_a_new_recipe_is_one_class_and_its_line_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    files = RECIPES["files"]

    class Cockroach(type(files)):  # type: ignore[misc]
        name = "cockroach"
        suffix = ".sql"

        def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
            return "cockroach" in container.image

        def archive(self, job: ArchiveJob) -> Archiving:
            return Archiving(f"docker exec {job.container} cockroach dump --all")

    monkeypatch.setitem(RECIPES, "cockroach", Cockroach())
    db = container("db", "cockroach:23")
    assert detect_recipe(db) == "cockroach" and detect(container("web", "nginx:1")).name == "files"
    plan = plan_volume(REDIS_VOLUME, [db])
    assert (plan.recipe, plan.archive_name) == ("cockroach", "redis-data.sql.zst")
    runner = FakeRunner(outputs={"cockroach dump": b"CREATE DATABASE shop;"})
    record = archive_volume(Host(HostSpec("h1"), runner), plan, _NoStore(), "x", RecordingReporter())
    assert record.recipe == "cockroach" and record.archive == "h1/redis-data.sql.zst"


class _NoStore(LocalStore):
    """A store that takes the command and keeps nothing."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def write(self, host: Host, command: str, snapshot_id: str, relative: str, progress: object) -> tuple[int, str]:
        self.commands.append(command)
        return 0, ""


def test_a_files_archive_streams_into_the_local_store_hashed_on_the_way(tmp_path: Path) -> None:
    data = b"tar bytes " * 5000
    runner = FakeRunner(outputs={"tar -C /var/lib/docker/volumes/demo_redis-data/_data": data})
    host = Host(HostSpec("h1"), runner)
    record = archive_volume(host, plan_volume(REDIS_VOLUME, []), LocalStore(tmp_path), "s1", RecordingReporter())
    assert (record.recipe, record.bytes, record.sha256) == ("files", len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "s1.partial" / "h1" / "redis-data.tar.zst").read_bytes() == data


def test_a_redis_archive_waits_for_bgsave_then_archives_the_volume(tmp_path: Path) -> None:
    saves = iter(["1700000000", "1700000000", "1700000005"])

    class Redis(FakeRunner):
        def run(self, command: str, *, timeout: float | None = None, stdin: str | bytes | None = None) -> CommandResult:
            if "LASTSAVE" in command:  # moves on the second look: the save finished
                self.commands.append(command)
                return CommandResult(command, 0, next(saves, "1700000005"), "")
            return super().run(command, timeout=timeout, stdin=stdin)

    runner = Redis({"TIME": (0, "1700000001\n0"), "INFO": (0, "rdb_last_bgsave_status:ok")}, outputs={"tar -C": b"r"})
    reporter = RecordingReporter()
    plan = plan_volume(REDIS_VOLUME, [container("redis", "redis:7")])
    record = archive_volume(Host(HostSpec("h1"), runner), plan, LocalStore(tmp_path), "s1", reporter)
    bgsave = next(i for i, c in enumerate(runner.commands) if "BGSAVE" in c)
    tar = next(i for i, c in enumerate(runner.commands) if "tar -C" in c)
    assert bgsave < tar and record.recipe == "redis" and record.bytes == 1
    assert [e.step for e in reporter.events][:2] == ["redis BGSAVE", "archive"]


def test_a_prometheus_archive_is_of_a_tsdb_snapshot_removed_afterwards(tmp_path: Path) -> None:
    answer = '{"status":"success","data":{"name":"20261123T105000Z-1a2b"}}'
    runner = FakeRunner({"docker exec -i demo-prometheus-1": (0, answer)}, outputs={"tar -C": b"tsdb"})
    plan = plan_volume(REDIS_VOLUME, [container("prometheus", "prom/prometheus:v2")])
    archive_volume(Host(HostSpec("h1"), runner), plan, LocalStore(tmp_path), "s1", RecordingReporter())
    volume_data = "/var/lib/docker/volumes/demo_redis-data/_data"
    snapshot_dir = f"{volume_data}/snapshots/20261123T105000Z-1a2b"
    (tar,) = [c for c in runner.commands if "tar -C" in c]
    assert f"tar -C {snapshot_dir} " in tar
    assert f"rm -rf {snapshot_dir}" in runner.commands[-1]  # removed once archived


def test_a_postgres_archive_is_a_dump_through_the_running_container(tmp_path: Path) -> None:
    runner = FakeRunner({"command -v pg_dumpall": (0, "pg_dumpall\n")}, outputs={"pg_dumpall": b"-- SQL"})
    plan = plan_volume(REDIS_VOLUME, [container("db", "postgres:16")])
    record = archive_volume(Host(HostSpec("h1"), runner), plan, LocalStore(tmp_path), "s1", RecordingReporter())
    assert record.archive == "h1/redis-data.sql.zst" and record.bytes == len(b"-- SQL")
    assert not any("tar -C" in command for command in runner.commands)


def test_an_ssh_failure_mid_archive_is_told_as_such_and_leaves_no_partial_file(tmp_path: Path) -> None:
    runner = FakeRunner({"tar -C": (255, "Connection reset by peer")})
    with pytest.raises(BackupError, match="ssh failed during archive command: Connection reset by peer"):
        archive_volume(
            Host(HostSpec("h1"), runner), plan_volume(REDIS_VOLUME, []), LocalStore(tmp_path), "s", RecordingReporter()
        )
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def restoring(tmp_path: Path, recipe: str, answers: dict[str, tuple[int, str]]) -> tuple[FakeRunner, Snapshot]:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=h1\nPROJECT=demo\n")
    snapshot_dir = tmp_path / "snap"
    (snapshot_dir / "h1").mkdir(parents=True)
    suffix = ".sql" if recipe == "postgres" else ".tar"
    (snapshot_dir / "h1" / f"redis-data{suffix}.zst").write_bytes(b"archived bytes")
    record = ArchiveRecord(
        "h1", "redis-data", "demo_redis-data", ("redis",), recipe, f"h1/redis-data{suffix}.zst", "zstd", 14, "x", 0.1
    )
    return FakeRunner(answers), Snapshot("s1", snapshot_dir, True, archives=[record])


def test_a_files_restore_stops_the_service_refills_the_volume_and_starts_it(tmp_path: Path) -> None:
    redis = '[{"Id": "0123456789ab", "Name": "/demo-redis-1", "Config": {"Labels": {"com.docker.compose.service": "redis"}}, "State": {"Running": true}, "Mounts": [{"Type": "volume", "Name": "demo_redis-data", "Destination": "/data"}]}]'
    runner, snapshot = restoring(
        tmp_path,
        "redis",
        {"docker ps -aq": (0, "0123456789ab"), "docker inspect 0123": (0, redis), "-f '{{": (0, "/v")},
    )
    env = load_environment("t", tmp_path, {})
    reporter = RecordingReporter()
    host = Host(HostSpec("h1"), runner)
    restore_volume(host, env, snapshot, LocalStore(tmp_path), snapshot.archives[0], reporter)
    (fed,) = runner.received
    assert runner.received[fed] == b"archived bytes" and "find /v -mindepth 1 -delete" in fed and "tar -C /v" in fed
    order = [c.split()[1] for c in runner.commands if c.startswith("docker") and c.split()[1] in ("stop", "start")]
    assert order == ["stop", "start"]
    assert runner.commands.index(fed) < next(i for i, c in enumerate(runner.commands) if c.startswith("docker start"))
    assert reporter.events[-1].detail == "redis-data from s1 (redis)"


def test_a_postgres_restore_needs_its_service_running_and_loads_the_dump_into_it(tmp_path: Path) -> None:
    runner, snapshot = restoring(tmp_path, "postgres", {})
    env = load_environment("t", tmp_path, {})
    with pytest.raises(BackupError, match=r"restoring a PostgreSQL dump needs its service running \(redis\)"):
        restore_volume(
            Host(HostSpec("h1"), runner), env, snapshot, LocalStore(tmp_path), snapshot.archives[0], RecordingReporter()
        )
    assert runner.received == {}
    db = '[{"Id": "0123456789ab", "Name": "/demo-db-1", "Config": {"Labels": {"com.docker.compose.service": "db"}}, "State": {"Running": true}, "Mounts": [{"Type": "volume", "Name": "demo_redis-data", "Destination": "/d"}]}]'
    runner.answers.update({"docker ps -aq": (0, "0123456789ab"), "docker inspect 0123": (0, db)})
    reporter = RecordingReporter()
    restore_volume(Host(HostSpec("h1"), runner), env, snapshot, LocalStore(tmp_path), snapshot.archives[0], reporter)
    (fed,) = runner.received
    assert "docker exec -i demo-db-1" in fed and "psql" in fed and runner.received[fed] == b"archived bytes"
    assert not any(c.startswith("docker stop") for c in runner.commands)
    assert reporter.events[-1].detail == "redis-data: dump loaded into db"
