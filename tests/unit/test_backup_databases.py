"""Database-aware backups without hosts: the volume markers read in the facts step, detection by
contents and command, the mysql, sqlite and mongodb recipes' command plans, and a live database
that no recipe can dump refused (or stopped) rather than tarred."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest

from ops.backup import ContainerFact, LocalStore, VolumeFact, archive_volume, plan_volume
from ops.backup.facts import contents_script, parse_containers, parse_contents, read_volume_facts
from ops.backup.recipes import RECIPES, detect
from ops.backup.recipes.mongodb import mongo_dump_command, mongo_restore_command
from ops.backup.recipes.mysql import mysql_check_command, mysql_dump_command, mysql_restore_command
from ops.backup.recipes.sqlite import STAGING, backup_script, sqlite_tar_command
from ops.backup.take import VolumeRefused
from ops.config import HostSpec
from ops.console import RecordingReporter
from ops.errors import BackupError
from ops.transport import Host
from tests.fakes import FakeRunner

MOUNT = "/var/lib/docker/volumes/db_data/_data"


def volume(*contents: str) -> VolumeFact:
    return VolumeFact("db_data", "data", MOUNT, contents)


def box(service: str, image: str, command: tuple[str, ...] = (), running: bool = True, **labels: str) -> ContainerFact:
    return ContainerFact(
        id="c1", name=f"db-{service}-1", service=service, image=image, running=running,
        labels={k.replace("_", "."): v for k, v in labels.items()}, mounts={"db_data": "/data"}, command=command,
    )  # fmt: skip


CANNED_LISTING = f"""== {MOUNT}
./17/main/PG_VERSION
./17/main/base/1/PG_VERSION
== /v/maria
./mysql/
./ibdata1
== /v/app
sqlite:./data/notes.db
sqlite:./app.sqlite3
== /v/empty
"""


def test_volume_markers_are_parsed_from_the_listing_script_output() -> None:
    contents = parse_contents(CANNED_LISTING)
    assert contents[MOUNT] == ("17/main/PG_VERSION", "17/main/base/1/PG_VERSION")
    assert contents["/v/maria"] == ("mysql/", "ibdata1")
    assert contents["/v/app"] == ("sqlite:data/notes.db", "sqlite:app.sqlite3")
    assert contents["/v/empty"] == ()
    assert VolumeFact("a", "a", "/v/app", contents["/v/app"]).sqlite_files == ("data/notes.db", "app.sqlite3")


def test_the_listing_script_finds_markers_and_only_real_sqlite_files(tmp_path: Path) -> None:
    (tmp_path / "pg" / "17" / "main").mkdir(parents=True)
    (tmp_path / "pg" / "17" / "main" / "PG_VERSION").write_text("17\n")
    (tmp_path / "maria" / "mysql").mkdir(parents=True)
    (tmp_path / "app" / "data").mkdir(parents=True)
    sqlite3.connect(tmp_path / "app" / "data" / "notes.db").execute("CREATE TABLE t (a)").connection.commit()
    (tmp_path / "app" / "fake.db").write_text("SQLite format 2, not a database")
    mounts = [str(tmp_path / name) for name in ("pg", "maria", "app", "gone")]
    output = subprocess.run(["bash", "-c", contents_script(mounts)], capture_output=True, text=True, check=True).stdout
    contents = parse_contents(output)
    assert contents[mounts[0]] == ("17/main/PG_VERSION",)
    assert contents[mounts[1]] == ("mysql/",)
    assert contents[mounts[2]] == ("sqlite:data/notes.db",)
    assert contents[mounts[3]] == ()


def test_facts_carry_the_markers_and_the_containers_command_in_one_listing_per_host() -> None:
    inspect = json.dumps([{"Name": "db_data", "Mountpoint": MOUNT, "Labels": {"com.docker.compose.volume": "data"}}])
    container = json.dumps(
        [
            {
                "Id": "0123456789abcdef",
                "Name": "/db-db-1",
                "Config": {"Image": "notes-db:1", "Entrypoint": ["/entry.sh"], "Cmd": ["postgres", "-D", "/d"]},
                "State": {"Running": True},
                "Mounts": [{"Type": "volume", "Name": "db_data", "Destination": "/var/lib/postgresql"}],
            }
        ]
    )
    runner = FakeRunner(
        {
            "docker volume ls": (0, "db_data\n"),
            "docker volume inspect": (0, inspect),
            "for d in": (0, CANNED_LISTING),
            "docker ps -aq": (0, "0123456789ab\n"),
            "docker inspect": (0, container),
        }
    )
    volumes, containers = read_volume_facts(Host(HostSpec("h1"), runner), "db")
    assert volumes[0].holds("PG_VERSION") and not volumes[0].holds("ibdata1")
    assert containers[0].command == ("/entry.sh", "postgres", "-D", "/d")
    assert sum("for d in" in command for command in runner.commands) == 1


def test_parse_containers_without_entrypoint_or_command() -> None:
    fact = parse_containers(json.dumps([{"Id": "x" * 12, "Config": {"Image": "a"}, "State": {}}]))[0]
    assert fact.command == ()


@pytest.mark.parametrize(
    ("contents", "recipe"),
    [
        (("17/main/PG_VERSION",), "postgres"),
        (("ibdata1",), "mysql"),
        (("mysql/",), "mysql"),
        (("WiredTiger",), "mongodb"),
        (("dump.rdb",), "redis"),
        (("appendonlydir",), "redis"),
        (("sqlite:data/notes.db",), "sqlite"),
        (("notes.txt",), "files"),
        ((), "files"),
    ],
)
def test_a_database_is_detected_by_what_its_volume_holds(contents: tuple[str, ...], recipe: str) -> None:
    assert detect(box("store", "acme/store:2"), volume(*contents)).name == recipe


@pytest.mark.parametrize(
    ("command", "recipe"),
    [
        (("/usr/lib/postgresql/17/bin/postgres", "-D", "/var/lib/postgresql/17/main"), "postgres"),
        (("pg_ctlcluster", "17", "main", "start", "--foreground"), "postgres"),
        (("sh", "-c", "exec mariadbd --user=mysql"), "mysql"),
        (("docker-entrypoint.sh", "mysqld"), "mysql"),
        (("mongod", "--bind_ip_all"), "mongodb"),
        (("redis-server", "--appendonly", "yes"), "redis"),
        (("/bin/prometheus", "--config.file=/etc/prometheus.yml"), "prometheus"),
        (("python", "app.py", "--redis", "redis://redis:6379", "--db=postgres://db/x"), "files"),
    ],
)
def test_a_database_is_detected_by_its_entrypoint_and_command(command: tuple[str, ...], recipe: str) -> None:
    assert detect(box("store", "acme/store:2", command)).name == recipe


def test_the_label_wins_over_contents_and_names_over_contents() -> None:
    assert detect(box("db", "notes-db:1", opskit_backup_recipe="files"), volume("PG_VERSION")).name == "files"
    # The container says redis; the SQLite file in its volume does not make it a SQLite volume.
    assert detect(box("cache", "redis:7"), volume("sqlite:x.db")).name == "redis"


def test_the_database_is_chosen_over_a_sidecar_mounting_its_volume() -> None:
    sidecar = box("exporter", "acme/exporter:1", ("exporter",))
    db = box("sql", "shop-sql:1", ("mariadbd",))
    plan = plan_volume(volume("ibdata1"), [sidecar, db])
    assert (plan.recipe, plan.recipe_container, plan.recipe_service) == ("mysql", "db-sql-1", "sql")


def _inner_scripts(command: str) -> list[str]:
    """The scripts that `docker exec ... sh -c SCRIPT` runs inside the container."""
    outer = shlex.split(command)[-1]  # bash -c 'set -o pipefail; ...'
    words = shlex.split(outer)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-c" and words[i - 1] == "sh"]


def test_mysql_dump_reads_the_password_inside_the_container_and_is_one_transaction() -> None:
    command = mysql_dump_command("shop-sql-1", "zstd", 3)
    assert "docker exec shop-sql-1 sh -c" in command and command.endswith("zstd -q -c -T0 -3'")
    (script,) = _inner_scripts(command)
    assert "--single-transaction --routines --events --all-databases" in script
    for variable in (
        "MARIADB_ROOT_PASSWORD",
        "MYSQL_ROOT_PASSWORD",
        "MARIADB_ROOT_PASSWORD_FILE",
        "MYSQL_ROOT_PASSWORD_FILE",
    ):
        assert "${" + variable in script
    assert "MYSQL_PWD" in script and " -p" not in script  # never an argument, even in the container
    assert script.index("mariadb-dump") < script.index("mysqldump")  # mariadb-dump when present


def test_mysql_restore_and_check_talk_to_the_running_server() -> None:
    restore = mysql_restore_command("shop-sql-1", "gzip")
    assert restore.startswith("bash -c") and "gzip -dc | docker exec -i shop-sql-1 sh -c" in restore
    (script,) = _inner_scripts(restore)
    assert "for t in mariadb mysql;" in script and 'exec "$tool" -uroot' in script
    check = mysql_check_command("shop-sql-1")
    assert "information_schema.SCHEMATA" in check and "information_schema.TABLES" in check


def _mysql_host(answers: dict[str, tuple[int, str]]) -> Host:
    return Host(HostSpec("h1"), FakeRunner(answers, outputs={"--all-databases": b"-- MariaDB dump"}))


def test_a_mysql_volume_is_dumped_not_tarred(tmp_path: Path) -> None:
    host = _mysql_host({"command -v mariadb-dump": (0, "mariadb-dump\n")})
    plan = plan_volume(volume("ibdata1"), [box("sql", "shop-sql:1", ("mariadbd",))])
    record = archive_volume(host, plan, LocalStore(tmp_path), "s1", RecordingReporter())
    assert (record.recipe, record.archive) == ("mysql", "h1/data.sql.zst")
    assert not any("tar -C" in command for command in host.runner.commands)  # type: ignore[attr-defined]


def test_mysql_check_counts_databases_and_tables() -> None:
    recipe = RECIPES["mysql"]
    host = _mysql_host({"information_schema": (0, "5\n12\n")})
    assert recipe.check(host, "shop-sql-1", MOUNT) == "mysql answers: 5 databases, 12 tables"  # type: ignore[attr-defined]
    down = _mysql_host({"information_schema": (1, "ERROR 2002 (HY000): Can't connect to local server")})
    with pytest.raises(BackupError, match="does not answer: ERROR 2002"):
        recipe.check(down, "shop-sql-1", MOUNT)  # type: ignore[attr-defined]


def test_mongodb_plans_dump_and_restore_as_one_archive_with_credentials_read_inside() -> None:
    dump = mongo_dump_command("chat-mongo-1", "zstd")
    (script,) = _inner_scripts(dump)
    assert "mongodump --quiet --archive $auth" in script and "MONGO_INITDB_ROOT_PASSWORD_FILE" in script
    assert "--config=$conf" in script and "--password" not in script
    restore = mongo_restore_command("chat-mongo-1", "zstd")
    assert "zstd -q -dc | docker exec -i chat-mongo-1" in restore
    assert "mongorestore --quiet --archive --drop $auth" in _inner_scripts(restore)[0]
    assert RECIPES["mongodb"].suffix == ".archive"


def test_mongodb_check_counts_databases_and_collections() -> None:
    host = Host(HostSpec("h1"), FakeRunner({"mongosh": (0, "4\n9\n")}))
    summary = RECIPES["mongodb"].check(host, "chat-mongo-1", MOUNT)  # type: ignore[attr-defined]
    assert summary == "mongodb answers: 4 databases, 9 collections"


def test_sqlite_backup_script_copies_each_file_with_sqlite3_into_the_staging_directory() -> None:
    script = backup_script("/srv/data", ("notes.db", "sub dir/x.sqlite"))
    assert f"sqlite3 /srv/data/notes.db '.backup '\"'\"'/srv/data/{STAGING}/{STAGING}-0'\"'\"''" in script
    assert "'/srv/data/sub dir/x.sqlite'" in script and f"{STAGING}-1" in script


def test_sqlite_archive_holds_the_copies_in_place_of_the_live_files(tmp_path: Path) -> None:
    data = tmp_path / "v"
    (data / "sub").mkdir(parents=True)
    live = sqlite3.connect(data / "sub" / "a,b&c.db")
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("CREATE TABLE notes (body TEXT)")
    live.execute("INSERT INTO notes VALUES ('before')")
    live.commit()
    (data / "keep.txt").write_text("kept")
    (data / STAGING).mkdir()
    copy = sqlite3.connect(data / STAGING / f"{STAGING}-0")
    live.backup(copy)
    copy.close()
    live.execute("INSERT INTO notes VALUES ('after the copy, only in the WAL')")
    live.commit()
    command = sqlite_tar_command(str(data), ("sub/a,b&c.db",), "gzip", "root", 1)
    archive = subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xzf", "-"], input=archive, check=True)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert names == ["keep.txt", "sub", "sub/a,b&c.db"]  # no -wal, no staging directory
    restored = sqlite3.connect(out / "sub" / "a,b&c.db")
    assert restored.execute("SELECT body FROM notes").fetchall() == [("before",)]
    live.close()


def test_sqlite_check_runs_integrity_check_in_the_container() -> None:
    runner = FakeRunner(
        {
            "for d in": (0, f"== {MOUNT}\nsqlite:./notes.db\n"),
            "docker inspect -f": (0, "/data\n"),
            "PRAGMA": (0, "ok\n3\n"),
        }
    )
    summary = RECIPES["sqlite"].check(Host(HostSpec("h1"), runner), "app-1", MOUNT)  # type: ignore[attr-defined]
    assert summary == "sqlite: 1 files pass integrity_check, 3 tables"
    assert any("sqlite3 /data/notes.db" in command for command in runner.commands)
    broken = FakeRunner(
        {
            "for d in": (0, f"== {MOUNT}\nsqlite:./notes.db\n"),
            "docker inspect -f": (0, "/data\n"),
            "PRAGMA": (0, "*** in database main ***\n0\n"),
        }
    )
    with pytest.raises(BackupError, match=r"notes\.db is not usable"):
        RECIPES["sqlite"].check(Host(HostSpec("h1"), broken), "app-1", MOUNT)  # type: ignore[attr-defined]


def test_a_live_database_whose_dump_tool_is_missing_is_refused_with_one_line(tmp_path: Path) -> None:
    runner = FakeRunner()  # `command -v pg_dumpall` finds nothing
    plan = plan_volume(volume("PG_VERSION"), [box("vault", "acme/vault:1", ("/usr/local/bin/vault-db",))])
    assert plan.recipe == "postgres"
    with pytest.raises(VolumeRefused) as refused:
        archive_volume(Host(HostSpec("h1"), runner), plan, LocalStore(tmp_path), "s1", RecordingReporter())
    line = refused.value.one_line()
    assert "\n" not in line and "service vault" in line and "no pg_dumpall" in line
    assert 'opskit.backup.stop: "true"' in line and "opskit.backup.recipe" in line
    assert not any("tar -C" in c or "docker stop" in c for c in runner.commands)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_sqlite_app_without_sqlite3_is_stopped_for_the_archive_and_started_again(tmp_path: Path) -> None:
    runner = FakeRunner(outputs={"tar -C": b"tar bytes"})
    plan = plan_volume(volume("sqlite:notes.db"), [box("app", "acme/notes:1", ("notes",))])
    record = archive_volume(Host(HostSpec("h1"), runner), plan, LocalStore(tmp_path), "s1", RecordingReporter())
    assert (record.recipe, record.archive) == ("sqlite", "h1/data.tar.zst")
    stop = next(i for i, c in enumerate(runner.commands) if c.startswith("docker stop db-app-1"))
    tar = next(i for i, c in enumerate(runner.commands) if "tar -C" in c)
    start = next(i for i, c in enumerate(runner.commands) if c.startswith("docker start db-app-1"))
    assert stop < tar < start


def test_a_sqlite_app_labelled_never_stop_is_refused(tmp_path: Path) -> None:
    plan = plan_volume(volume("sqlite:notes.db"), [box("app", "acme/notes:1", opskit_backup_stop="false")])
    with pytest.raises(VolumeRefused, match="service app"):
        archive_volume(Host(HostSpec("h1"), FakeRunner()), plan, LocalStore(tmp_path), "s1", RecordingReporter())


def test_a_postgres_restore_leaves_out_dropping_and_creating_the_role_it_is_logged_in_as() -> None:
    from ops.backup.recipes.postgres import psql_restore_command

    (script,) = _inner_scripts(psql_restore_command("notes-db-1", "zstd"))
    assert 'u="${POSTGRES_USER:-postgres}"' in script
    assert "/^DROP ROLE IF EXISTS $u;\\$/d" in script and "/^CREATE ROLE $u;\\$/d" in script
    assert script.endswith('psql -v ON_ERROR_STOP=1 -q -U "$u" -d postgres')
