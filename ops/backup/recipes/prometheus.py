"""The prometheus recipe: a TSDB snapshot through the admin API inside the container, archived as
files and removed after; restored like files, as the whole data directory."""

from __future__ import annotations

import re
import shlex

from ops.backup.commands import tar_command
from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.files import Files
from ops.backup.recipes.recipe import ArchiveJob, Archiving, called
from ops.console import OK
from ops.errors import BackupError

PROMETHEUS_SNAPSHOT = """url=http://127.0.0.1:9090/api/v1/admin/tsdb/snapshot
if command -v curl >/dev/null 2>&1; then curl -fsS -XPOST "$url"
elif command -v wget >/dev/null 2>&1; then wget -qO- --post-data= "$url"
else
  exec 3<>/dev/tcp/127.0.0.1/9090
  printf 'POST /api/v1/admin/tsdb/snapshot HTTP/1.0\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\n\\r\\n' >&3
  cat <&3
fi
"""


def prometheus_snapshot_command(container: str) -> str:
    """The admin API's snapshot, called inside the container (the API is never published)."""
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
