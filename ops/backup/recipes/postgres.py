"""The postgres recipe: pg_dumpall through the running container as one compressed SQL stream,
loaded back with psql into the running service; a drill lists the restored databases and counts
their tables. It never copies the data directory."""

from __future__ import annotations

import shlex

from ops.backup.commands import DEFAULT_LEVEL, compressor, decompressor
from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.recipe import ArchiveJob, Archiving, DumpRecipe, Restoring, called, find_tool, running_container
from ops.errors import BackupError
from ops.transport import Host
from ops.transport.shell import last_line


def pg_dump_command(container: str, compression: str, level: int = DEFAULT_LEVEL) -> str:
    """Every database of a PostgreSQL container as one SQL stream (pg_dumpall: roles and all dbs)."""
    dump = 'pg_dumpall -U "${POSTGRES_USER:-postgres}" --clean --if-exists'
    return f"bash -c {shlex.quote(f'set -o pipefail; docker exec {shlex.quote(container)} sh -c {shlex.quote(dump)} | ' + compressor(compression, level))}"


def psql_restore_command(container: str, compression: str) -> str:
    # pg_dumpall --clean drops and creates every role, the one psql is logged in as too: PostgreSQL
    # refuses that ("current user cannot be dropped"), and under ON_ERROR_STOP the load would stop
    # after the databases were dropped. Those two lines are left out, in the container.
    run = (
        'u="${POSTGRES_USER:-postgres}"; '
        'sed -e "/^DROP ROLE IF EXISTS $u;\\$/d" -e "/^CREATE ROLE $u;\\$/d" | '
        'psql -v ON_ERROR_STOP=1 -q -U "$u" -d postgres'
    )
    return f"bash -c {shlex.quote(f'set -o pipefail; {decompressor(compression)} | docker exec -i {shlex.quote(container)} sh -c {shlex.quote(run)} >/dev/null')}"


# Each database (templates aside) and its tables outside the catalogues: "name count" lines.
PG_TABLES = (
    'u="${POSTGRES_USER:-postgres}"; '
    'dbs=$(psql -v ON_ERROR_STOP=1 -At -U "$u" -d postgres '
    '-c "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"); '
    "for db in $dbs; do "
    'n=$(psql -v ON_ERROR_STOP=1 -At -U "$u" -d "$db" -c "SELECT count(*) FROM information_schema.tables '
    "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')\"); "
    'echo "$db $n"; done'
)


def psql_tables_command(container: str) -> str:
    """Every database of the container with its count of tables, one `name count` line each."""
    return f"docker exec {shlex.quote(container)} sh -c {shlex.quote('set -e; ' + PG_TABLES)}"


def tables_summary(output: str) -> str:
    """`name count` lines -> "2 databases, 5 tables (app: 5, postgres: 0)"."""
    counts = [
        (name, int(count))
        for name, _, count in (line.partition(" ") for line in output.split("\n"))
        if count.strip().isdigit()
    ]
    if not counts:
        raise BackupError(f"psql listed no database: {last_line(output)!r}")
    listed = ", ".join(f"{name}: {count}" for name, count in counts[:6]) + (", ..." if len(counts) > 6 else "")
    return f"{len(counts)} databases, {sum(count for _, count in counts)} tables ({listed})"


class Postgres(DumpRecipe):
    service_kind = "a PostgreSQL dump"
    name = "postgres"
    suffix = ".sql"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        if called(container, "postgres") or container.runs("postgres", "postmaster", "pg_ctlcluster"):
            return True
        return volume is not None and volume.holds("PG_VERSION")

    def archive(self, job: ArchiveJob) -> Archiving:
        find_tool(job.host, job.container, "pg_dumpall")  # none: take.py stops or refuses, never tars
        return Archiving(pg_dump_command(job.container, job.compression, job.level))

    def restore(self, job: Restoring) -> str:
        return self.load(job, psql_restore_command)

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        container = running_container(container, "psql")
        listed = host.run(psql_tables_command(container), check=False)
        if not listed.ok:
            raise BackupError(
                f"psql could not list the databases: {last_line(listed.stderr or listed.stdout)}",
                where=f"{host.name} {container}",
            )
        return tables_summary(listed.stdout)
