"""Database-aware backups on the lab: tests/fixtures/stacks/dbstack (PostgreSQL in an image whose
name says nothing, Debian's MariaDB with a root password from the secrets, a SQLite app, and a
PostgreSQL whose image has no pg_dumpall) deployed once on the first host as its own environment.
Each database gets rows before the backup and changes after it; the restore gives the earlier rows
back. The stack, its volumes, releases and env files are removed at the end."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.backup import list_snapshots
from ops.backup.recipes import RECIPES
from ops.deploy.releases import ReleaseStore
from ops.transport import Fleet, Host
from tests.integration.conftest import REPO, Lab, opskit, write_env

pytestmark = pytest.mark.integration

ENV = "itestdb"
PROJECT = "dbstack"
STACK = REPO / "tests" / "fixtures" / "stacks" / "dbstack"


@dataclass(frozen=True)
class DbStack:
    lab: Lab
    host: Host
    backups: Path
    password: str


def env_text(lab: Lab, backups: Path) -> str:
    """The lab's env with this stack, project, secret and backup directory; the first host only."""
    keep = ("STACK_DIR=", "PROJECT=", "HOSTS=", "SECRETS=", "BACKUP_DIR=")
    base = (lab.root / "env" / f"{lab.env.name}.env").read_text().splitlines()
    lines = [line for line in base if not line.startswith(keep)]
    first = lab.env.hosts[0].name
    return "\n".join(
        [
            *lines,
            f"HOSTS={first}",
            f"STACK_DIR={STACK}",
            f"PROJECT={PROJECT}",
            "SECRETS=MARIADB_ROOT_PASSWORD",
            f"BACKUP_DIR={backups}",
            "",
        ]
    )


@pytest.fixture(scope="module")
def dbstack(provisioned_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbStack]:
    """The stack deployed once (its images built once) on the first host of the provisioned lab."""
    lab = provisioned_lab
    started = time.monotonic()
    backups = tmp_path_factory.mktemp("db-backups")
    password = secrets.token_hex(12)  # made here: no secret in the source
    env_file = write_env(lab.root, ENV, env_text(lab, backups))
    secrets_file = lab.root / "env" / f"{ENV}.secrets.env"
    secrets_file.write_text(f"MARIADB_ROOT_PASSWORD={password}\n")
    secrets_file.chmod(0o600)
    fleet = Fleet.connect(lab.env, only=[lab.env.hosts[0].name])
    host = fleet.hosts[0]
    try:
        # Provisioning for this environment makes the project's directory (/opt/dbstack); the rest
        # is already in place (the lab's hosts are provisioned).
        provisioned = opskit(lab.root, "provision", "--env", ENV, timeout=900)
        assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
        done = opskit(lab.root, "deploy", "--env", ENV, "--version", "v1", timeout=1500)
        assert done.returncode == 0, done.stdout + done.stderr
        print(f"\ndbstack deployed in {time.monotonic() - started:.0f} s")
        yield DbStack(lab, host, backups, password)
    finally:
        store = ReleaseStore(host, PROJECT)
        current = store.get(store.current_id() or "")
        if current is not None:
            host.run(store.compose_command(current, "down -v --remove-orphans"), check=False, timeout=300)
        host.sudo(f"rm -rf {store.base}", check=False)
        fleet.close()
        env_file.unlink(missing_ok=True)
        secrets_file.unlink(missing_ok=True)
        print(f"dbstack module: {time.monotonic() - started:.0f} s")


def psql(host: Host, service: str, sql: str, db: str = "notes") -> str:
    run = f"docker exec {PROJECT}-{service}-1 psql -U postgres -d {db} -tA -v ON_ERROR_STOP=1 -c {quote(sql)}"
    return host.run(run).stdout.strip()


def maria(host: Host, sql: str) -> str:
    """A query as root over the container's socket (no password on any command line)."""
    return host.run(f"docker exec {PROJECT}-sql-1 mariadb -uroot -N -B shop -e {quote(sql)}").stdout.strip()


def sqlite(host: Host, sql: str) -> str:
    return host.run(f"docker exec {PROJECT}-notes-1 sqlite3 /srv/notes/notes.db {quote(sql)}").stdout.strip()


def quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def mountpoint(host: Host, volume: str) -> str:
    return host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {PROJECT}_{volume}").stdout.strip()


WRITER = (
    "while [ ! -e /tmp/stop-writer ]; do mariadb -uroot shop -e "
    "'BEGIN; INSERT INTO orders (at) VALUES (NOW(6)); SET @o = LAST_INSERT_ID(); "
    "INSERT INTO order_lines (order_id) VALUES (@o), (@o); COMMIT;' || exit 1; done"
)


def dumped_orders(archive: Path) -> int:
    """How many rows of shop.orders the dump itself holds (its extended INSERTs' tuples)."""
    text = subprocess.run(["zstd", "-q", "-dc", str(archive)], capture_output=True, check=True).stdout.decode()
    # One INSERT per batch of rows, a row a line or all on one line (as the version writes them).
    batches = re.findall(r"^INSERT INTO `orders` VALUES(.*?);$", text, re.S | re.M)
    return sum(len(re.findall(r"\(\d+,'", batch)) for batch in batches)


def test_databases_are_dumped_by_contents_and_a_live_database_without_a_recipe_is_refused(dbstack: DbStack) -> None:
    host, lab = dbstack.host, dbstack.lab
    # Before the backup: rows in each database.
    psql(host, "db", "SELECT 1", db="postgres")
    host.run(f"docker exec {PROJECT}-db-1 createdb -U postgres notes")
    psql(host, "db", "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept one'), ('kept two')")
    host.run(f"docker exec {PROJECT}-vault-1 createdb -U postgres secrets")
    host.run(
        f"docker exec {PROJECT}-sql-1 mariadb -uroot -e "
        + quote(
            "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6)) "
            "ENGINE=InnoDB; CREATE TABLE shop.order_lines (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT) ENGINE=InnoDB"
        )
    )
    sqlite(host, "INSERT INTO notes VALUES ('sqlite before');")
    # A writer keeps inserting (an order and its two lines in one transaction) during the backup.
    host.run(f"docker exec -d {PROJECT}-sql-1 sh -c {quote(WRITER)}")
    deadline = time.monotonic() + 30
    while int(maria(host, "SELECT COUNT(*) FROM orders") or 0) < 20:
        assert time.monotonic() < deadline, "the writer inserted nothing"
        time.sleep(0.2)

    done = opskit(lab.root, "backup.all", "--env", ENV)
    at_end = int(maria(host, "SELECT COUNT(*) FROM orders"))
    host.run(f"docker exec {PROJECT}-sql-1 touch /tmp/stop-writer")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert dbstack.password not in output
    refused = [line for line in done.stderr.splitlines() if "vault-data" in line]
    assert len(refused) == 1, done.stderr
    assert "service vault" in refused[0] and "no pg_dumpall" in refused[0]
    assert 'opskit.backup.stop: "true"' in refused[0] and "opskit.backup.recipe" in refused[0]
    assert "Traceback" not in output
    (snapshot,) = list_snapshots(dbstack.backups)
    assert snapshot.complete  # it holds the other volumes, whole
    archives = {record.volume: record for record in snapshot.archives}
    assert sorted(archives) == ["db-data", "notes-data", "sql-data"]
    assert (archives["db-data"].recipe, archives["db-data"].archive.endswith(".sql.zst")) == ("postgres", True)
    assert (archives["sql-data"].recipe, archives["sql-data"].archive.endswith(".sql.zst")) == ("mysql", True)
    assert (archives["notes-data"].recipe, archives["notes-data"].archive.endswith(".tar.zst")) == ("sqlite", True)
    manifest = (snapshot.path / "manifest.json").read_text()
    assert dbstack.password not in manifest and json.loads(manifest)["complete"] is True
    in_dump = dumped_orders(snapshot.path / archives["sql-data"].archive)
    assert 20 <= in_dump <= at_end  # the writer went on during the dump
    assert ".opskit-sqlite" not in host.sudo(f"ls -A {mountpoint(host, 'notes-data')}").stdout  # staging removed

    # After the backup: every database changed.
    psql(host, "db", "DELETE FROM notes WHERE body = 'kept two'; INSERT INTO notes VALUES ('after')")
    maria(host, "DELETE FROM order_lines; DELETE FROM orders WHERE id > 5")
    sqlite(host, "DELETE FROM notes; INSERT INTO notes VALUES ('sqlite after');")

    restored = opskit(lab.root, "backup.restore", snapshot.id, "--env", ENV, "--yes", timeout=900)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restore: 3 volumes" in restored.stdout and "health gate" in restored.stdout
    assert psql(host, "db", "SELECT body FROM notes ORDER BY body").splitlines() == ["kept one", "kept two"]
    orders = int(maria(host, "SELECT COUNT(*) FROM orders"))
    lines = int(maria(host, "SELECT COUNT(*) FROM order_lines"))
    assert orders == in_dump and lines == 2 * orders  # one consistent point: no half transaction
    assert sqlite(host, "SELECT body FROM notes;") == "sqlite before"
    # The recipes' own checks say the restored data is usable.
    mysql_summary = RECIPES["mysql"].check(host, f"{PROJECT}-sql-1", mountpoint(host, "sql-data"))  # type: ignore[attr-defined]
    assert re.fullmatch(r"mysql answers: \d+ databases, 2 tables", mysql_summary), mysql_summary
    sqlite_summary = RECIPES["sqlite"].check(host, f"{PROJECT}-notes-1", mountpoint(host, "notes-data"))  # type: ignore[attr-defined]
    assert sqlite_summary == "sqlite: 1 files pass integrity_check, 1 tables"
