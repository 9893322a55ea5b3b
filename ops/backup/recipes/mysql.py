"""The mysql recipe (MySQL and MariaDB): mariadb-dump or mysqldump through the running container as
one consistent SQL stream (--single-transaction), loaded back with the server's client into the
running service. The root password is read inside the container, never on this machine."""

from __future__ import annotations

import shlex

from ops.backup.commands import DEFAULT_LEVEL, compressor, decompressor
from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.recipe import ArchiveJob, Archiving, DumpRecipe, Restoring, called, find_tool, in_container
from ops.errors import BackupError
from ops.transport import Host

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENTS = ("mariadb", "mysql")
DUMP_OPTIONS = "--single-transaction --routines --events --all-databases"
SERVERS = ("mysqld", "mariadbd", "mysqld_safe", "mariadbd-safe")

# The official images' variables (or their _FILE secrets), exported as MYSQL_PWD for the client:
# never a command-line argument, even inside the container. No password: root over the socket.
LOGIN = """pw="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}"
file="${MARIADB_ROOT_PASSWORD_FILE:-${MYSQL_ROOT_PASSWORD_FILE:-}}"
if [ -z "$pw" ] && [ -n "$file" ] && [ -r "$file" ]; then pw="$(cat "$file")"; fi
if [ -n "$pw" ]; then MYSQL_PWD="$pw"; export MYSQL_PWD; fi
unset pw
"""


def first_of(tools: tuple[str, ...]) -> str:
    """Shell that picks the first of tools found in the container, as $tool."""
    found = " ".join(tools)
    return f'tool=""; for t in {found}; do if command -v "$t" >/dev/null 2>&1; then tool="$t"; break; fi; done\n'


def mysql_dump_command(container: str, compression: str, level: int = DEFAULT_LEVEL) -> str:
    """Every database of the server as one SQL stream on stdout, compressed on the host."""
    script = f'{LOGIN}{first_of(DUMP_TOOLS)}exec "$tool" -uroot {DUMP_OPTIONS}'
    return f"bash -c {shlex.quote(f'set -o pipefail; {in_container(container, script)} | {compressor(compression, level)}')}"


def mysql_restore_command(container: str, compression: str) -> str:
    script = f'{LOGIN}{first_of(CLIENTS)}exec "$tool" -uroot'
    return f"bash -c {shlex.quote(f'set -o pipefail; {decompressor(compression)} | {in_container(container, script, stdin=True)} >/dev/null')}"


CHECK_SQL = (
    "SELECT COUNT(*) FROM information_schema.SCHEMATA; "
    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN "
    "('mysql', 'information_schema', 'performance_schema', 'sys')"
)


def mysql_check_command(container: str) -> str:
    return in_container(container, f'{LOGIN}{first_of(CLIENTS)}exec "$tool" -uroot -N -B -e "{CHECK_SQL}"')


def counted(output: str, what: str, where: str) -> tuple[int, int]:
    """Two counts, one a line, from a check query; BackupError when the answer is not that."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if len(lines) < 2 or not all(line.isdigit() for line in lines[-2:]):
        raise BackupError(f"{what} did not answer its check: {(lines or ['no answer'])[-1][:200]}", where=where)
    return int(lines[-2]), int(lines[-1])


class Mysql(DumpRecipe):
    service_kind = "a MySQL/MariaDB dump"
    restore_hint = "start the service, then restore again"
    name = "mysql"
    suffix = ".sql"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        if called(container, "mysql") or called(container, "mariadb") or container.runs(*SERVERS):
            return True
        return volume is not None and volume.holds("ibdata1", "mysql/")

    def archive(self, job: ArchiveJob) -> Archiving:
        find_tool(job.host, job.container, *DUMP_TOOLS)  # no dump tool: take.py stops or refuses
        return Archiving(mysql_dump_command(job.container, job.compression, job.level))

    def restore(self, job: Restoring) -> str:
        return self.load(job, mysql_restore_command)

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        where = f"{host.name} {container}"
        result = host.run(mysql_check_command(container), check=False)
        if not result.ok:
            raise BackupError(
                f"MySQL/MariaDB does not answer: {(result.stderr or result.stdout).strip()[-200:]}", where=where
            )
        databases, tables = counted(result.stdout, "MySQL/MariaDB", where)
        return f"mysql answers: {databases} databases, {tables} tables"
