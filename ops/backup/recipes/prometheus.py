"""The prometheus recipe: a TSDB snapshot through the admin API inside the container, archived as
files and removed after; restored like files, as the whole data directory. A drill asks the restored
server's /-/ready inside the container and counts the TSDB's blocks."""

from __future__ import annotations

import re
import shlex

from ops.backup.commands import as_root, tar_command
from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.files import Files
from ops.backup.recipes.recipe import ArchiveJob, Archiving, called, running_container
from ops.console import OK
from ops.errors import BackupError
from ops.transport import Host

PROMETHEUS_SNAPSHOT = """url=http://127.0.0.1:9090/api/v1/admin/tsdb/snapshot
if command -v curl >/dev/null 2>&1; then curl -fsS -XPOST "$url"
elif command -v wget >/dev/null 2>&1; then wget -qO- --post-data= "$url"
else
  exec 3<>/dev/tcp/127.0.0.1/9090
  printf 'POST /api/v1/admin/tsdb/snapshot HTTP/1.0\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\n\\r\\n' >&3
  cat <&3
fi
"""


PROMETHEUS_READY = """url=http://127.0.0.1:9090/-/ready
if command -v curl >/dev/null 2>&1; then curl -fsS "$url"
elif command -v wget >/dev/null 2>&1; then wget -qO- "$url"
else
  exec 3<>/dev/tcp/127.0.0.1/9090
  printf 'GET /-/ready HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
  cat <&3
fi
"""
BLOCK = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")  # a TSDB block directory is named by its ULID


def tsdb_summary(listing: str) -> str:
    """The data directory's entries -> "3 blocks, wal"; BackupError when it has neither."""
    names = listing.split()
    blocks = sum(1 for name in names if BLOCK.match(name))
    if not blocks and "wal" not in names:
        raise BackupError("the TSDB has no block and no wal: nothing was restored")
    return f"{blocks} blocks" + (", wal" if "wal" in names else "")


def prometheus_snapshot_command(container: str) -> str:
    """A script on stdin run inside the container, with bash when it has one: the admin API's
    snapshot (the API is never published), or a GET of /-/ready."""
    shell = "if command -v bash >/dev/null 2>&1; then exec bash -s; else exec sh -s; fi"
    return f"docker exec -i {shlex.quote(container)} sh -c {shlex.quote(shell)}"


def snapshot_name(response: str) -> str:
    match = re.search(r'"name"\s*:\s*"([A-Za-z0-9_.-]+)"', response)
    if not match or '"success"' not in response:
        raise BackupError(f"prometheus snapshot failed: {response.strip()[-200:] or 'no answer'}")
    return match.group(1)


class Prometheus(Files):
    name = "prometheus"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        return called(container, "prometheus") or container.runs("prometheus")

    def archive(self, job: ArchiveJob) -> Archiving:
        answer = job.host.run(prometheus_snapshot_command(job.container), stdin=PROMETHEUS_SNAPSHOT).stdout
        name = snapshot_name(answer)
        source = f"{job.volume.mountpoint}/snapshots/{name}"
        command = tar_command(source, job.compression, job.host.spec.user, job.level)
        job.reporter.step(job.host.name, "prometheus snapshot", OK, name)
        return Archiving(command, cleanup=source)

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        container = running_container(container, "GET /-/ready")
        ready = host.run(prometheus_snapshot_command(container), stdin=PROMETHEUS_READY, check=False)
        if "is Ready" not in ready.stdout:
            answer = (ready.stdout + ready.stderr).strip()
            raise BackupError(f"GET /-/ready: {answer[-200:] or 'no answer'}", where=f"{host.name} {container}")
        listing = host.run(as_root(f"ls -A {shlex.quote(mountpoint)}", host.spec.user), check=False)
        return f"ready, {tsdb_summary(listing.stdout)}"
