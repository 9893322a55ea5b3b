"""Releases on a host: /opt/<project>/releases/<id>/ with compose files, .env and release.json,
which release a rollback goes back to, and which ones a prune removes.

`current` is a symlink switched atomically (rename) only after a release passed its health
gate. Images are pinned by ID and by a per-release tag, so a rollback needs no pull and no
build, and pruning never removes what a kept release still needs (nor the current release).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from ops.console import CHANGED, Reporter
from ops.errors import DeployError
from ops.host.layout import ProjectLayout
from ops.transport import Host

PIN_REPOSITORY = "opskit-pin"
OVERRIDE_FILE = "compose.opskit.yaml"


@dataclass(frozen=True)
class Release:
    """One release as recorded in its release.json."""

    id: str
    version: str
    git_commit: str
    who: str
    created: str
    compose_files: tuple[str, ...]
    images: dict[str, str] = field(default_factory=dict)  # service -> image ID
    pins: dict[str, str] = field(default_factory=dict)  # service -> pin tag (per image ID)
    digests: dict[str, str] = field(default_factory=dict)  # service -> registry@sha256:... it was pulled by
    swappable: tuple[str, ...] = ()  # services deployed by blue-green swap once running
    content: str = ""  # sha256 of the stack's files and rendered .env (ops.stack.content_digest)
    status: str = "new"  # new | active | failed

    def to_json(self) -> str:
        data = asdict(self)
        data["compose_files"] = list(self.compose_files)
        data["swappable"] = list(self.swappable)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Release:
        data = json.loads(text)
        data["compose_files"] = tuple(data.get("compose_files", ()))
        data["swappable"] = tuple(data.get("swappable", ()))
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def with_status(self, status: str) -> Release:
        return replace(self, status=status)


def new_release_id(version: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:40] or "unversioned"
    return f"{stamp}-{safe}"


def pin_tag(project: str, service: str, release_id: str) -> str:
    return f"{PIN_REPOSITORY}/{project}-{service}:{release_id}".lower()


def override_yaml(release: Release, project: str) -> str:
    """The compose override that runs exactly the images this release pinned.

    `build` is reset because compose hashes the (absolute) build context into a service's config:
    left in, every new release directory would recreate every container, volumes' users included.
    Containers carry no per-release label for the same reason: an unchanged service stays running.
    """
    lines = ["# Written by opskit: the images this release pinned (by image ID).", "services:"]
    for service in sorted(release.pins):
        lines += [f"  {service}:", f"    image: {release.pins[service]}", "    build: !reset null"]
    return "\n".join(lines) + "\n"


class ReleaseStore:
    """The releases of one project on one host."""

    def __init__(self, host: Host, project: str):
        self.host = host
        self.project = project
        self.layout = ProjectLayout(project)
        self.base = self.layout.base

    def path(self, release_id: str) -> str:
        return self.layout.release(release_id)

    def list(self) -> list[Release]:
        script = (
            f"for f in {self.layout.releases}/*/release.json; do "
            '[ -f "$f" ] && { cat "$f"; printf "\\n\\036\\n"; }; done; true'
        )
        releases = []
        for chunk in self.host.run(script).stdout.split("\x1e"):
            if chunk.strip():
                try:
                    releases.append(Release.from_json(chunk))
                except (json.JSONDecodeError, TypeError):
                    continue  # a release directory that was never completed
        return sorted(releases, key=lambda release: release.id)

    def current_id(self) -> str | None:
        result = self.host.run(f"readlink {self.layout.current}", check=False)
        target = result.stdout.strip()
        return target.rsplit("/", 1)[-1] if result.ok and target else None

    def current(self) -> Release | None:
        """The release `current` points at, read in one round trip."""
        current = self.layout.current
        result = self.host.run(f"readlink {current} && cat {current}/release.json", check=False)
        if not result.ok:
            return None
        link, _, text = result.stdout.partition("\n")
        try:
            release = Release.from_json(text)
        except (json.JSONDecodeError, TypeError):
            return None
        return release if release.id == link.strip().rsplit("/", 1)[-1] else None

    def get(self, release_id: str) -> Release | None:
        return next((release for release in self.list() if release.id == release_id), None)

    def _replace_metadata(self, release_id: str) -> str:
        """A command that replaces the release's release.json with its stdin (renamed into place)."""
        path = self.path(release_id)
        return f"cat > {path}/release.json.tmp && mv {path}/release.json.tmp {path}/release.json"

    def write_metadata(self, release: Release) -> None:
        self.host.run(self._replace_metadata(release.id), stdin=release.to_json() + "\n")

    def write_override(self, release: Release) -> None:
        path = self.path(release.id)
        self.host.run(f"cat > {path}/{OVERRIDE_FILE}", stdin=override_yaml(release, self.project))

    def activate(self, release: Release) -> Release:
        """Record the release as active and point current at it: a new symlink renamed over the
        old one (atomic), in one round trip. Returns the release as recorded."""
        active = release.with_status("active")
        self.host.run(
            f"{self._replace_metadata(release.id)} && "
            f"cd {self.base} && ln -sfn releases/{shlex.quote(release.id)} current.new && mv -T current.new current",
            stdin=active.to_json() + "\n",
        )
        return active

    def remove(self, release_id: str) -> None:
        self.host.run(f"rm -rf {shlex.quote(self.path(release_id))}")

    def compose_command(self, release: Release, args: str) -> str:
        files = " ".join(f"-f {shlex.quote(name)}" for name in (*release.compose_files, OVERRIDE_FILE))
        return (
            f"cd {shlex.quote(self.path(release.id))} && "
            f"docker compose -p {shlex.quote(self.project)} {files} --env-file .env {args}"
        )


def rollback_target(releases: list[Release], current_id: str | None, to: str | None, host: Host) -> Release:
    """The named release (id, id prefix or version; the newest match), else the one before current."""
    usable = [release for release in releases if release.status != "failed" and release.pins]
    if to:
        matches = [r for r in releases if r.id == to or r.id.startswith(to) or r.version == to]
        if not matches:
            kept = ", ".join(f"{release.id} ({release.version})" for release in usable) or "none"
            raise DeployError(f"no release {to!r}", where=host.name, hint=f"kept: {kept}")
        if matches[-1] not in usable:
            raise DeployError(f"release {matches[-1].id} failed its gate; refusing to roll back to it", where=host.name)
        return matches[-1]
    older = [release for release in usable if current_id is None or release.id < current_id]
    if not older:
        raise DeployError("no earlier release to roll back to", where=host.name, hint="see inv releases")
    current = next((release for release in releases if release.id == current_id), None)
    # A release the same as the current one is no place to roll back to: skip identical ones.
    different = [r for r in older if current is None or (r.version, r.images) != (current.version, current.images)]
    if not different:
        raise DeployError(
            "every earlier release runs the same version and images as the current one",
            where=host.name,
            hint="name one with --to (see inv releases), or deploy the version you want",
        )
    return different[-1]


def releases_to_prune(releases: list[Release], current_id: str | None, keep: int) -> list[Release]:
    """What a prune removes (oldest first): a release that is the same as a newer one (files,
    .env and images: nothing new to roll back to), then all but the newest `keep` of the rest that
    can be rolled back to, and failed releases older than those. Never the current release."""
    seen: set[object] = set()
    distinct: list[Release] = []  # newest first
    removed: list[Release] = []
    for release in reversed(releases):
        same = (release.content, tuple(sorted(release.images.items())))
        key = same if release.content and release.status != "failed" else release.id
        if key in seen and release.id != current_id:
            removed.append(release)
        else:
            seen.add(key)
            distinct.append(release)
    kept_good = [release for release in distinct if release.status != "failed"][:keep]
    oldest_kept = kept_good[-1].id if kept_good else ""
    for release in distinct:
        if release.id == current_id or release in kept_good:
            continue
        if release.status != "failed" or release.id < oldest_kept:
            removed.append(release)
    return sorted(removed, key=lambda release: release.id)


def prune(store: ReleaseStore, keep: int, reporter: Reporter) -> list[str]:
    """Keep the newest `keep` distinct releases (and the current one) and the images they pin."""
    releases = store.list()
    removed = releases_to_prune(releases, store.current_id(), keep)
    kept = {release.id for release in releases} - {release.id for release in removed}
    if not removed:
        return []
    kept_pins = {pin for release in releases if release.id in kept for pin in release.pins.values()}
    for release in removed:
        store.remove(release.id)
    stale = sorted({pin for release in removed for pin in release.pins.values()} - kept_pins)
    if stale:
        # rmi refuses images that containers use; that is the safety we want.
        store.host.run(f"docker rmi {' '.join(shlex.quote(pin) for pin in stale)} >/dev/null 2>&1; true")
    reporter.step(store.host.name, "prune", CHANGED, f"removed {len(removed)} old releases")
    return [release.id for release in removed]
