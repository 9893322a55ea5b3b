"""Backup speed, measured side by side in one run on one lab host ("benchb"): a 1 GiB volume, and the
database dump recipes against the files recipe.

- `backup.all` of the volume (tar | zstd on the host, streamed over SSH to this machine, sha256)
  against the reference recipe on the same host,
  `docker run --rm -v VOL:/data -v DIR:/backup IMAGE tar czf /backup/x.tar.gz /data`:
  target at least 2x faster;
- against the raw read throughput of the same volume, `tar -cf - DIR | cat > /dev/null`, the
  limit: target at least 60% of it.
Both targets are measured for the local target (archives streamed to this machine) and for the
host target (BACKUP_TARGET=host: tar | zstd > archive, then sha256sum of it, on the host, nothing
transferred), and the host target once more at BACKUP_LEVEL=-1 (zstd --fast=1). Beside them, the
floor that compression sets: `tar -cf - DIR | zstd -T0 -1 > /dev/null` on the same host.
The volume holds half random bytes (incompressible) and half base64 text (compressible only by
entropy coding, which zstd's --fast levels skip), in files.

Beside it, in the same run on the same host, the dump recipes against the files recipe: `backup.all`
of a PostgreSQL volume through the postgres recipe (pg_dumpall) and of a MariaDB volume through the
mysql recipe (mariadb-dump --single-transaction), each server holding the same table of about
200 MiB (made in the server with SQL: generate_series, a recursive CTE), against `backup.all` of the
same volumes through the files recipe with the server stopped (its raw data directory, as
opskit.backup.stop archives it). Each in MiB/s of table data and of the archive, with the limit of
each dump (its tool alone, in the container) and of each raw read. The databases are the integration
tests' stack (tests/fixtures/stacks/dbstack), deployed with `inv deploy` as an environment of its own
(<env>-dbs) on the lab's host, and removed at the end.
Run: .venv/bin/python benchmarks/backup.py [--dumps | --volume] [--root DIR --env NAME]
(--dumps: only the dump recipes, --volume: only the 1 GiB volume; default both. --root/--env: an
environment with the demo deployed, the database stack goes on its first host; default: a 1-host lab
of its own)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shlex
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, bench_lab, inv, verdict

from ops.backup import BackupOptions, backup_all, host_store
from ops.backup.recipes.mysql import DUMP_OPTIONS as MYSQL_DUMP_OPTIONS
from ops.config import Environment, load_environment
from ops.console import RecordingReporter
from ops.deploy.releases import ReleaseStore
from ops.errors import OpsError
from ops.transport import Fleet, Host

VOLUME = "bench-data"
RUNS = 2


def volume_section(env: Environment) -> None:
    """The 1 GiB volume: backup.all against the reference recipe, the raw read and zstd's floor."""
    name = f"{env.project}_{VOLUME}"
    with Fleet.connect(env) as fleet:
        host = fleet.hosts[0]
        labels = f"--label com.docker.compose.project={env.project} --label com.docker.compose.volume={VOLUME}"
        host.run(f"docker volume rm -f {name} >/dev/null; docker volume create {labels} {name} >/dev/null")
        mount = host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {name}").stdout.strip()
        print("filling a 1 GiB volume ...", flush=True)
        fill = (
            f"for i in 1 2 3 4; do head -c 128M /dev/urandom > {mount}/random-$i.bin; "
            f"head -c 96M /dev/urandom | base64 -w 100 | head -c 128M > {mount}/text-$i.txt; done; sync"
        )
        host.sudo(fill, timeout=900)
        image = host.run(
            f"docker inspect -f '{{{{.Config.Image}}}}' {env.project}-redis-1 2>/dev/null || echo debian:trixie-slim"
        ).stdout.strip()
        size = int(host.sudo(f"du -sb {mount}").stdout.split()[0])

        def timed(command: str, sudo: bool = False) -> float:
            started = time.perf_counter()
            (host.sudo if sudo else host.run)(command, timeout=1800)
            return time.perf_counter() - started

        host.sudo("sync; echo 3 > /proc/sys/vm/drop_caches", check=False)  # may be refused in a lab: then all run warm
        timed(f"tar -cf - -C {mount} . | cat > /dev/null", sudo=True)  # warm the cache for everyone alike
        raw = statistics.median(timed(f"tar -cf - -C {mount} . | cat > /dev/null", sudo=True) for _ in range(RUNS))
        floor = statistics.median(
            timed(f"tar -cf - -C {mount} . | zstd -q -T0 -1 > /dev/null", sudo=True) for _ in range(RUNS)
        )
        host.sudo("mkdir -p /tmp/opskit-bench")
        reference = statistics.median(
            timed(
                f"docker run --rm -v {name}:/data -v /tmp/opskit-bench:/backup --user 0 --entrypoint tar {image} "
                "czf /backup/x.tar.gz /data"
            )
            for _ in range(RUNS)
        )
        reference_size = int(host.sudo("stat -c %s /tmp/opskit-bench/x.tar.gz").stdout)
        host.sudo("rm -rf /tmp/opskit-bench")

    on_host = host_store(env, "host")
    assert on_host is not None
    fast_env = dataclasses.replace(env, settings={**env.settings, "BACKUP_LEVEL": -1})
    variants = {"local": ("local", env), "host": ("host", env), "host --fast=1": ("host", fast_env)}
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    sizes: dict[str, int] = {}
    with Fleet.connect(env) as fleet:
        for _ in range(RUNS):
            for variant, (target, variant_env) in variants.items():  # interleaved: all see the same load
                options = BackupOptions(hosts=[env.hosts[0].name], volumes=[VOLUME], target=target)
                started = time.perf_counter()
                result = backup_all(variant_env, RecordingReporter(), options)
                times[variant].append(time.perf_counter() - started)
                assert result.ok and result.snapshot is not None, result.errors
                sizes[variant] = result.snapshot.bytes
                shutil.rmtree(result.snapshot.path)
                fleet.hosts[0].sudo(f"rm -rf {on_host.base}/{result.snapshot.id}")
        fleet.hosts[0].run(f"docker volume rm -f {name} >/dev/null")
    mib = size / 2**20
    print(f"\nvolume {mib:.0f} MiB, median of {RUNS} runs each")

    def line(label: str, seconds: float, note: str = "") -> None:
        print(f"  {label:<52} {seconds:6.2f} s  {mib / seconds:7.1f} MiB/s{note}")

    line("raw read: tar -cf - | cat > /dev/null (limit)", raw)
    line("floor: tar -cf - | zstd -T0 -1 > /dev/null", floor, f"  ({raw / floor:.0%} of raw read)")
    line("reference: docker run ... tar czf", reference, f"  -> {reference_size / 2**20:.0f} MiB on the host")
    labels = {  # variant: (its line, its verdict's heading)
        "local": ("inv backup.all (zstd -1, SSH, sha256, to here)", "local target"),
        "host": ("inv backup.all --target host (zstd -1, sha256 there)", "host target"),
        "host --fast=1": ("  the same at BACKUP_LEVEL=-1 (zstd --fast=1)", "host target, BACKUP_LEVEL=-1"),
    }
    medians = {variant: statistics.median(times[variant]) for variant in variants}
    for variant, seconds in medians.items():
        where = "here" if variant == "local" else "on the host"
        line(labels[variant][0], seconds, f"  -> {sizes[variant] / 2**20:.0f} MiB {where}")
    for variant, seconds in medians.items():
        print(f"  {labels[variant][1]}:")
        print(
            f"    speed-up vs reference     {reference / seconds:5.2f} x   target >= 2:    "
            f"{verdict(reference / seconds >= 2)}"
        )
        print(f"    share of raw read speed   {raw / seconds:5.0%}     target >= 60%: {verdict(raw / seconds >= 0.6)}")


# The dump recipes beside the files recipe: the integration tests' database stack
# (tests/fixtures/stacks/dbstack, its images FROM debian:trixie-slim with Debian's packages, built
# once and shared with them) deployed with opskit as its own environment on the same host.
DB_STACK = REPO / "tests" / "fixtures" / "stacks" / "dbstack"
DB_PROJECT = "dbstack"
ROWS = 1_100_000  # about 200 MiB of table data in each server: generated there, nothing sent
ROW_SHAPE = "bigint id, int, timestamp, 128 hex characters"


@dataclasses.dataclass(frozen=True)
class Database:
    """One database server of the stack and how the benchmark drives it."""

    recipe: str  # the dump recipe backup.all must pick
    tool: str  # what that recipe runs
    service: str
    volume: str
    fill: tuple[str, ...]  # commands in the container that make the table
    table_bytes: str  # a command in the container printing the table data's size in bytes
    dump: str  # the recipe's dump tool and options, run alone (its output counted): the limit
    ready: str  # a command in the container that succeeds once the server answers

    @property
    def container(self) -> str:
        return f"{DB_PROJECT}-{self.service}-1"


def psql(sql: str, db: str = "bench") -> str:
    return f"psql -U postgres -d {db} -qtA -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}"


def mariadb(sql: str) -> str:
    # root over the container's socket (unix_socket): no password anywhere
    return f"mariadb -uroot -N -B -e {shlex.quote(sql)}"


POSTGRES = Database(
    recipe="postgres",
    tool="pg_dumpall",
    service="db",
    volume="db-data",
    fill=(
        "createdb -U postgres bench",
        psql(
            "CREATE TABLE events (id bigint PRIMARY KEY, n integer NOT NULL, at timestamp NOT NULL, body text NOT NULL)"
        ),
        psql(
            "INSERT INTO events SELECT i, i % 100000, timestamp '2026-01-01' + i * interval '1 second', "
            "md5(i::text) || md5((i + 1)::text) || md5(random()::text) || md5(random()::text) "
            f"FROM generate_series(1, {ROWS}) AS i"
        ),
        psql("VACUUM ANALYZE events"),  # hint bits set now, not by the first dump
        psql("CHECKPOINT"),
    ),
    table_bytes=psql("SELECT pg_table_size('events')"),
    dump="pg_dumpall -U postgres --clean --if-exists",
    ready="pg_isready -q -U postgres",
)
MYSQL = Database(
    recipe="mysql",
    tool="mariadb-dump --single-transaction",
    service="sql",
    volume="sql-data",
    fill=(
        mariadb(
            "CREATE DATABASE bench; CREATE TABLE bench.events (id bigint PRIMARY KEY, n int NOT NULL, "
            "at datetime NOT NULL, body varchar(128) NOT NULL) ENGINE=InnoDB"
        ),
        # 1,000 x ROWS/1,000 from a recursive CTE of ROWS/1,000 rows
        mariadb(
            f"SET SESSION max_recursive_iterations = {ROWS}; "
            "INSERT INTO bench.events (id, n, at, body) "
            f"WITH RECURSIVE k (i) AS (SELECT CAST(0 AS SIGNED) UNION ALL SELECT i + 1 FROM k WHERE i < {ROWS // 1000 - 1}) "
            "SELECT a.i * 1000 + b.i + 1 AS id, (a.i * 1000 + b.i + 1) % 100000, "
            "TIMESTAMP '2026-01-01 00:00:00' + INTERVAL (a.i * 1000 + b.i + 1) SECOND, "
            "CONCAT(MD5(a.i * 1000 + b.i + 1), MD5(a.i * 1000 + b.i + 2), MD5(RAND()), MD5(RAND())) "
            "FROM k AS a JOIN k AS b ON b.i < 1000"
        ),
        mariadb("ANALYZE TABLE bench.events"),  # data_length from fresh statistics
    ),
    table_bytes=mariadb(
        "SELECT data_length FROM information_schema.TABLES WHERE table_schema = 'bench' AND table_name = 'events'"
    ),
    dump=f"mariadb-dump -uroot {MYSQL_DUMP_OPTIONS}",
    ready="mariadb-admin ping --silent",
)
DATABASES = (POSTGRES, MYSQL)


def in_container(database: Database, command: str) -> str:
    return f"docker exec {database.container} sh -c {shlex.quote(command)}"


def dbstack_env(env: Environment) -> tuple[str, list[Path]]:
    """An environment beside env's: its first host, the database stack, a MariaDB root password
    made here (never printed), archives in a temporary directory. Returns (name, files made)."""
    name = f"{env.name}-dbs"
    backups = Path(tempfile.mkdtemp(prefix="opskit-bench-dumps-"))
    env_dir = env.root / "env"
    keep = ("HOSTS=", "STACK_DIR=", "PROJECT=", "SECRETS=", "BACKUP_")
    lines = [line for line in env.file.read_text().splitlines() if not line.startswith(keep)]
    lines += [
        f"HOSTS={env.hosts[0].name}",
        f"STACK_DIR={DB_STACK}",
        f"PROJECT={DB_PROJECT}",
        "SECRETS=MARIADB_ROOT_PASSWORD",
        f"BACKUP_DIR={backups}",
    ]
    env_file = env_dir / f"{name}.env"
    env_file.write_text("\n".join(lines) + "\n")
    secrets_file = env_dir / f"{name}.secrets.env"
    fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"MARIADB_ROOT_PASSWORD={secrets.token_hex(12)}\n")
    return name, [env_file, secrets_file, backups]


def dumps_section(env: Environment) -> None:
    """The postgres and mysql recipes against the files recipe on the same databases."""
    name, made = dbstack_env(env)
    root = env.root
    try:
        print(f"database stack: provision and deploy as environment {name} ...", flush=True)
        inv(root, "provision", "--env", name)
        deployed = inv(root, "deploy", "--env", name, "--version", "v1")
        print(f"  deployed in {deployed:.0f} s", flush=True)
        db_env = load_environment(name, root, os.environ)
        with Fleet.connect(db_env) as fleet:
            measure_dumps(db_env, fleet.hosts[0])
    finally:
        remove_dbstack(env, name)
        for path in made:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def remove_dbstack(env: Environment, name: str) -> None:
    """The stack's containers, volumes and releases on the host (whatever got made)."""
    try:
        db_env = load_environment(name, env.root, os.environ)
    except OpsError:
        return
    with Fleet.connect(db_env) as fleet:
        host = fleet.hosts[0]
        store = ReleaseStore(host, DB_PROJECT)
        current = store.get(store.current_id() or "")
        if current is not None:
            host.run(store.compose_command(current, "down -v --remove-orphans"), check=False, timeout=300)
        project = f"label=com.docker.compose.project={DB_PROJECT}"  # whatever a failed deploy left
        host.run(f"docker ps -aq --filter {project} | xargs -r docker rm -f >/dev/null", check=False)
        host.run(f"docker volume ls -q --filter {project} | xargs -r docker volume rm >/dev/null", check=False)
        host.sudo(f"rm -rf {store.base}", check=False)


def measure_dumps(env: Environment, host: Host) -> None:
    def timed(command: str) -> float:
        started = time.perf_counter()
        host.sudo(command, timeout=1800)
        return time.perf_counter() - started

    def wait_ready(database: Database) -> None:
        deadline = time.monotonic() + 300
        while not host.run(in_container(database, database.ready), check=False).ok:
            if time.monotonic() > deadline:
                raise SystemExit(f"{database.container} did not answer within 300 s of its start")
            time.sleep(0.05)

    table: dict[str, int] = {}
    volume: dict[str, int] = {}
    mount: dict[str, str] = {}
    for database in DATABASES:
        print(f"filling {database.container} with {ROWS} rows ...", flush=True)
        wait_ready(database)
        started = time.perf_counter()
        for command in database.fill:
            host.run(in_container(database, command), timeout=1800)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        table[database.recipe] = int(host.run(in_container(database, database.table_bytes)).stdout.split()[-1])
        mount[database.recipe] = host.run(
            f"docker volume inspect -f '{{{{.Mountpoint}}}}' {DB_PROJECT}_{database.volume}"
        ).stdout.strip()

    # The limit of each dump: its own tool, output counted in the container (nothing compressed or sent).
    limit: dict[str, float] = {}
    sql: dict[str, int] = {}
    for database in DATABASES:
        count = in_container(database, f"{database.dump} | wc -c")
        host.run(count, timeout=1800)  # warm: the table read once by the server, as by every run after
        runs = []
        for _ in range(RUNS):
            started = time.perf_counter()
            sql[database.recipe] = int(host.run(count, timeout=1800).stdout.split()[-1])
            runs.append(time.perf_counter() - started)
        limit[database.recipe] = statistics.median(runs)

    variants = [(database, stopped) for _ in range(RUNS) for database in DATABASES for stopped in (False, True)]
    times: dict[tuple[str, bool], list[float]] = {}
    sizes: dict[tuple[str, bool], int] = {}
    downtime: dict[str, list[tuple[float, float]]] = {}  # (stop, start)
    raw: dict[str, list[float]] = {}
    stop_s = 0.0
    for database, stopped in variants:  # interleaved: all see the same load
        key = (database.recipe, stopped)
        if stopped:  # the raw data directory with the server stopped: the files recipe
            started = time.perf_counter()
            host.run(f"docker stop -t 120 {database.container} >/dev/null", timeout=300)
            stop_s = time.perf_counter() - started
        options = BackupOptions(hosts=[env.hosts[0].name], volumes=[database.volume], target="local")
        started = time.perf_counter()
        result = backup_all(env, RecordingReporter(), options)
        times.setdefault(key, []).append(time.perf_counter() - started)
        assert result.ok and result.snapshot is not None, result.errors
        (record,) = result.snapshot.archives
        expected = "files" if stopped else database.recipe
        assert record.recipe == expected, f"{database.volume}: recipe {record.recipe}, expected {expected}"
        sizes[key] = record.bytes
        shutil.rmtree(result.snapshot.path)
        if stopped:
            raw.setdefault(database.recipe, []).append(
                timed(f"tar -cf - -C {mount[database.recipe]} . | cat > /dev/null")
            )
            volume[database.recipe] = int(host.sudo(f"du -sb {mount[database.recipe]}").stdout.split()[0])
            started = time.perf_counter()
            host.run(f"docker start {database.container} >/dev/null", timeout=300)
            wait_ready(database)
            downtime.setdefault(database.recipe, []).append((stop_s, time.perf_counter() - started))

    print(
        f"\ndump recipes against the files recipe: {ROWS} rows ({ROW_SHAPE}) in each server, "
        f"median of {RUNS} runs each;\nbackup.all to the local target (zstd -1 on the host, SSH, sha256, to here)"
    )
    for database in DATABASES:
        data = table[database.recipe] / 2**20

        def line(label: str, seconds: float, note: str = "", data: float = data) -> None:
            print(f"    {label:<50} {seconds:6.2f} s  {data / seconds:6.1f} MiB/s of table data{note}")

        def archive(key: tuple[str, bool], seconds: float) -> str:
            size = sizes[key] / 2**20
            return f"  -> {size:4.0f} MiB archive, {size / seconds:6.1f} MiB/s"

        dumped = statistics.median(times[(database.recipe, False)])
        files = statistics.median(times[(database.recipe, True)])
        stop_s = statistics.median(stop for stop, _ in downtime[database.recipe])
        start_s = statistics.median(start for _, start in downtime[database.recipe])
        read = statistics.median(raw[database.recipe])
        print(
            f"  {database.recipe} ({database.container}): table data {data:.0f} MiB, "
            f"volume {volume[database.recipe] / 2**20:.0f} MiB on disk, dump {sql[database.recipe] / 2**20:.0f} MiB of SQL"
        )
        line(f"limit: {database.tool} | wc -c, in the container", limit[database.recipe])
        line(
            f"inv backup.all, {database.recipe} recipe ({database.tool})",
            dumped,
            archive((database.recipe, False), dumped),
        )
        line("inv backup.all, files recipe, server stopped", files, archive((database.recipe, True), files))
        line(
            "  raw read of the stopped volume: tar | cat",
            read,
            f"  ({volume[database.recipe] / 2**20 / read:.0f} MiB/s of the volume)",
        )
        print(
            f"    files recipe's downtime: stop {stop_s:.1f} s + archive {files:.1f} s + start to ready {start_s:.1f} s "
            f"= {stop_s + files + start_s:.1f} s; the dump's: none"
        )
        print(f"    dump / files recipe time: {dumped / files:.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path)
    parser.add_argument("--env")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dumps", action="store_true", help="only the dump recipes against the files recipe")
    which.add_argument("--volume", action="store_true", help="only the 1 GiB volume")
    args = parser.parse_args()
    if args.root and args.env:
        env = load_environment(args.env, args.root.resolve(), os.environ)
    else:
        _, env = bench_lab("benchb", 1, deployed=not args.dumps)  # the dumps need no demo
    if not args.dumps:
        volume_section(env)
    if not args.volume:
        dumps_section(env)


if __name__ == "__main__":
    main()
