"""The mongodb recipe: `mongodump --archive` through the running container as one compressed
stream, loaded back with `mongorestore --archive --drop` into the running service. Credentials
(MONGO_INITDB_ROOT_USERNAME / _PASSWORD or its _FILE) are read inside the container."""

from __future__ import annotations

import shlex

from ops.backup.commands import DEFAULT_LEVEL, compressor, decompressor
from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.recipe import ArchiveJob, Archiving, DumpRecipe, Restoring, called, find_tool, in_container
from ops.errors import BackupError
from ops.transport import Host

# A config file holds the password (mongodump --config), so it is on no command line even inside
# the container; removed as soon as the tool has read it.
LOGIN = """user="${MONGO_INITDB_ROOT_USERNAME:-}"
pw="${MONGO_INITDB_ROOT_PASSWORD:-}"
if [ -z "$pw" ] && [ -n "${MONGO_INITDB_ROOT_PASSWORD_FILE:-}" ]; then pw="$(cat "$MONGO_INITDB_ROOT_PASSWORD_FILE")"; fi
auth=""
if [ -n "$user" ]; then
  umask 077; conf="$(mktemp)"; trap 'rm -f "$conf"' EXIT
  printf 'password: "%s"\\n' "$pw" > "$conf"
  auth="--username=$user --authenticationDatabase=admin --config=$conf"
fi
unset pw
"""


def mongo_dump_command(container: str, compression: str, level: int = DEFAULT_LEVEL) -> str:
    script = f"{LOGIN}mongodump --quiet --archive $auth"
    return f"bash -c {shlex.quote(f'set -o pipefail; {in_container(container, script)} | {compressor(compression, level)}')}"


def mongo_restore_command(container: str, compression: str) -> str:
    script = f"{LOGIN}mongorestore --quiet --archive --drop $auth"
    return f"bash -c {shlex.quote(f'set -o pipefail; {decompressor(compression)} | {in_container(container, script, stdin=True)} >/dev/null')}"


CHECK_JS = (
    "let n = 0, dbs = db.adminCommand({listDatabases: 1}).databases;"
    " dbs.forEach(d => { n += db.getSiblingDB(d.name).getCollectionNames().length });"
    " print(dbs.length); print(n)"
)


def mongo_check_command(container: str) -> str:
    script = (
        'user="${MONGO_INITDB_ROOT_USERNAME:-}"; pw="${MONGO_INITDB_ROOT_PASSWORD:-}"\n'
        'if [ -z "$pw" ] && [ -n "${MONGO_INITDB_ROOT_PASSWORD_FILE:-}" ]; then pw="$(cat "$MONGO_INITDB_ROOT_PASSWORD_FILE")"; fi\n'
        'if [ -n "$user" ]; then url="mongodb://$user:$pw@127.0.0.1/?authSource=admin"; else url="mongodb://127.0.0.1/"; fi\n'
        f'exec mongosh --quiet --eval {shlex.quote(CHECK_JS)} "$url"'
    )
    return in_container(container, script)


class Mongodb(DumpRecipe):
    service_kind = "a MongoDB archive"
    restore_hint = "start the service, then restore again"
    name = "mongodb"
    suffix = ".archive"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        if called(container, "mongo") or container.runs("mongod"):
            return True
        return volume is not None and volume.holds("WiredTiger")

    def archive(self, job: ArchiveJob) -> Archiving:
        find_tool(job.host, job.container, "mongodump")
        return Archiving(mongo_dump_command(job.container, job.compression, job.level))

    def restore(self, job: Restoring) -> str:
        return self.load(job, mongo_restore_command, loaded="archive")

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        where = f"{host.name} {container}"
        result = host.run(mongo_check_command(container), check=False)
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if not result.ok or len(lines) < 2 or not (lines[-2].isdigit() and lines[-1].isdigit()):
            answer = (result.stderr or result.stdout).strip()[-200:] or "no answer"
            raise BackupError(f"MongoDB does not answer: {answer}", where=where)
        return f"mongodb answers: {lines[-2]} databases, {lines[-1]} collections"
