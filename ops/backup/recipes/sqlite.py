"""The sqlite recipe: each SQLite file of the volume copied with `sqlite3 DB .backup` inside the
running container (a consistent copy while the app writes), archived as files with those copies in
place of the live files; restored like files, with the service stopped. A container without sqlite3
is stopped for the archive instead (take.py). It never tars a live SQLite file."""

from __future__ import annotations

import re
import shlex

from ops.backup.commands import as_root, compressor
from ops.backup.facts import contents_script, parse_contents
from ops.backup.model import ContainerFact, VolumeFact
from ops.backup.recipes.files import Files
from ops.backup.recipes.recipe import ArchiveJob, Archiving, RecipeUnusable, find_tool, in_container
from ops.console import OK
from ops.errors import BackupError
from ops.transport import Host

STAGING = ".opskit-sqlite"  # in the volume while its archive is written, removed after
SIDE_FILES = ("", "-wal", "-shm", "-journal")  # a live database's own files, never archived


def sed_pattern(text: str) -> str:
    """text matched literally by a GNU tar --transform (sed) expression delimited by commas."""
    return re.sub(r"([\\.*\[\]^$,])", r"\\\1", text)


def sed_replacement(text: str) -> str:
    return re.sub(r"([\\&,])", r"\\\1", text)


def sqlite_tar_command(mountpoint: str, files: tuple[str, ...], compression: str, user: str, level: int) -> str:
    """The volume as a tar in which each live file (and its -wal/-shm/-journal) is replaced by its
    staged copy STAGING/.opskit-sqlite-N, renamed back to the file's own path."""
    options = ["--numeric-owner", "--anchored", "--no-wildcards", f"--exclude=./{STAGING}"]
    staged = []
    for index, path in enumerate(files):
        options += [f"--exclude=./{path}{side}" for side in SIDE_FILES]
        copy = f"{STAGING}-{index}"
        options.append(f"--transform=s,^\\./{sed_pattern(copy)}$,./{sed_replacement(path)},")
        staged.append(f"./{copy}")
    directory = shlex.quote(mountpoint)
    tar = (
        f"tar {' '.join(map(shlex.quote, options))} -C {directory} -cf - . "
        f"-C {shlex.quote(f'{mountpoint}/{STAGING}')} {' '.join(map(shlex.quote, staged))}"
    )
    return as_root(f"{tar} | {compressor(compression, level)}", user)


def backup_script(inside: str, files: tuple[str, ...]) -> str:
    """sqlite3 .backup of each file into the staging directory, as the container sees the volume."""
    lines = ["set -e"]
    for index, path in enumerate(files):
        target = f"{inside}/{STAGING}/{STAGING}-{index}"
        command = f".backup '{target}'"
        lines.append(f"sqlite3 {shlex.quote(f'{inside}/{path}')} {shlex.quote(command)}")
    return "\n".join(lines)


def container_path(host: Host, container: str, mountpoint: str) -> str:
    """Where the container mounts the volume whose host directory is mountpoint."""
    template = '{{range .Mounts}}{{if eq .Source "' + mountpoint + '"}}{{.Destination}}{{end}}{{end}}'
    inside = host.run(f"docker inspect -f {shlex.quote(template)} {shlex.quote(container)}", check=False).stdout.strip()
    if not inside:
        raise BackupError(f"{container} does not mount {mountpoint}", where=host.name)
    return inside


def sqlite_files(host: Host, mountpoint: str) -> tuple[str, ...]:
    listing = host.run(as_root(contents_script([mountpoint]), host.spec.user), check=False).stdout
    return VolumeFact("", "", mountpoint, parse_contents(listing).get(mountpoint, ())).sqlite_files


class Sqlite(Files):
    name = "sqlite"

    def detect(self, container: ContainerFact, volume: VolumeFact | None) -> bool:
        return volume is not None and bool(volume.sqlite_files)

    def archive(self, job: ArchiveJob) -> Archiving:
        files = job.volume.sqlite_files
        try:
            find_tool(job.host, job.container, "sqlite3")
        except RecipeUnusable as error:
            raise RecipeUnusable(error.message, where=error.where, stop_is_safe=True) from None
        user = job.host.spec.user
        staging = f"{job.volume.mountpoint}/{STAGING}"
        inside = container_path(job.host, job.container, job.volume.mountpoint)
        job.host.run(as_root(f"rm -rf {shlex.quote(staging)} && mkdir -m 1777 {shlex.quote(staging)}", user))
        result = job.host.run(
            in_container(job.container, backup_script(inside, files)), check=False, timeout=job.timeout
        )
        if not result.ok:
            job.host.run(as_root(f"rm -rf {shlex.quote(staging)}", user), check=False)
            raise BackupError(
                f"sqlite3 .backup failed: {(result.stderr or result.stdout).strip()[-200:]}",
                where=f"{job.host.name} {job.container}",
            )
        job.reporter.step(job.host.name, "sqlite3 .backup", OK, f"{len(files)} files in {job.container}")
        command = sqlite_tar_command(job.volume.mountpoint, files, job.compression, user, job.level)
        return Archiving(command, cleanup=staging)

    def check(self, host: Host, container: str, mountpoint: str) -> str:
        files = sqlite_files(host, mountpoint)
        if not files:
            raise BackupError(f"no SQLite file in {mountpoint}", where=host.name)
        inside = container_path(host, container, mountpoint)
        tables = 0
        for path in files:
            query = "PRAGMA integrity_check; SELECT COUNT(*) FROM sqlite_master WHERE type='table';"
            script = f"sqlite3 {shlex.quote(f'{inside}/{path}')} {shlex.quote(query)}"
            result = host.run(in_container(container, script), check=False)
            lines = result.stdout.split()
            if not result.ok or len(lines) < 2 or lines[0] != "ok" or not lines[-1].isdigit():
                answer = (result.stderr or result.stdout).strip()[-200:] or "no answer"
                raise BackupError(f"SQLite file {path} is not usable: {answer}", where=f"{host.name} {container}")
            tables += int(lines[-1])
        return f"sqlite: {len(files)} files pass integrity_check, {tables} tables"
