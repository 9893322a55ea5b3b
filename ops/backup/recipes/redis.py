"""The redis recipe: BGSAVE (and wait for it) in the running container, then the volume as files,
so the archive holds a dump.rdb no older than the backup. Restores like files; a drill asks the
restored server for PING and DBSIZE."""

from __future__ import annotations

import shlex
import time

from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.files import Files
from ops.backup.recipes.recipe import ArchiveJob, Archiving, called, running_container
from ops.console import OK
from ops.errors import BackupError
from ops.transport import Host
from ops.transport.shell import last_line


def redis_cli(container: str, args: str) -> str:
    cli = f'redis-cli ${{REDIS_PASSWORD:+-a "$REDIS_PASSWORD" --no-auth-warning}} {args}'
    return f"docker exec {shlex.quote(container)} sh -c {shlex.quote(cli)}"


def wait_redis_save(host: Host, container: str, timeout: float) -> None:
    """BGSAVE, then wait until LASTSAVE moves past its value from before."""
    before = host.run(redis_cli(container, "LASTSAVE")).stdout.strip()
    now = host.run(redis_cli(container, "TIME")).stdout.split()
    if now and before and now[0].strip() == before:
        time.sleep(1.1)  # LASTSAVE has one-second resolution: a save this second would not show
    started = host.run(redis_cli(container, "BGSAVE")).stdout.strip()
    if "ERR" in started and "in progress" not in started:
        raise BackupError(f"redis BGSAVE failed: {started}", where=f"{host.name} {container}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(redis_cli(container, "LASTSAVE")).stdout.strip() != before:
            status = host.run(redis_cli(container, "INFO persistence")).stdout
            if "rdb_last_bgsave_status:ok" not in status:
                raise BackupError("redis BGSAVE reported an error", where=f"{host.name} {container}")
            return
        time.sleep(0.2)
    raise BackupError(f"redis BGSAVE did not finish in {timeout:.0f} s", where=f"{host.name} {container}")


class Redis(Files):
    name = "redis"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        if called(container, "redis") or container.runs("redis-server"):
            return True
        return volume is not None and volume.holds("dump.rdb", "appendonlydir")

    def archive(self, job: ArchiveJob) -> Archiving:
        wait_redis_save(job.host, job.container, job.timeout)
        job.reporter.step(job.host.name, "redis BGSAVE", OK, job.container)
        return super().archive(job)

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        container = running_container(container, "redis-cli")
        pong = host.run(redis_cli(container, "PING"), check=False)
        if pong.stdout.strip() != "PONG":
            raise BackupError(
                f"redis-cli PING answered {last_line(pong.stdout + pong.stderr)!r}", where=f"{host.name} {container}"
            )
        size = host.run(redis_cli(container, "DBSIZE"), check=False).stdout.strip()
        if not size.isdigit():
            raise BackupError(f"redis-cli DBSIZE answered {size[-200:]!r}", where=f"{host.name} {container}")
        return f"PING PONG, {size} keys"
