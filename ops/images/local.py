"""Local builds for the images a deploy sends: `docker compose build` on this machine's engine,
skipped when nothing it reads changed (build fingerprints remembered in stamps), and the image IDs
the local engine holds. Never touches a host.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from ops.errors import StackError
from ops.stack.compose import Service, Stack, digest_files


def build_locally(compose_bin: Path, directory: Path, files: tuple[str, ...], env_path: Path) -> None:
    """`docker compose build` on the operator's engine (for the send source)."""
    command = [str(compose_bin), "--project-directory", str(directory)]
    for name in files:
        command += ["-f", str(directory / name)]
    command += ["--env-file", str(env_path), "build", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()] or ["no output"]
        raise StackError(f"building the stack's images locally failed: {lines[-1][:300]}", where=str(directory))


FROM_LINE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)


def _build_context(stack: Stack, service: Service) -> Path:
    return Path(str(service.build.get("context") or stack.directory))


def base_images(stack: Stack) -> list[str]:
    """The images the stack's local builds start FROM: earlier stages, scratch and names built
    from ARGs (resolved only by the build) left out."""
    bases: set[str] = set()
    for service in stack.services.values():
        if not service.builds:
            continue
        try:
            text = (_build_context(stack, service) / str(service.build.get("dockerfile") or "Dockerfile")).read_text()
        except OSError:
            continue  # the build reports it
        stages: set[str] = set()
        for match in FROM_LINE.finditer(text):
            image, stage = match.group(1), match.group(2)
            if image.lower() != "scratch" and image.lower() not in stages and "$" not in image:
                bases.add(image)
            if stage:
                stages.add(stage.lower())
    return sorted(bases)


def build_fingerprint(stack: Stack, base_ids: Mapping[str, str] | None = None) -> str | None:
    """A digest of everything a local build of the stack reads: each building service's resolved
    build section (context, dockerfile, args), every file of its context and the IDs of the base
    images. None when a context is not a local directory (a git URL, say): such builds always run."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted((base_ids or {}).items())).encode())
    for name, service in sorted(stack.services.items()):
        digest.update(json.dumps([name, service.image, service.build], sort_keys=True).encode())
        if not service.builds:
            continue
        context = _build_context(stack, service)
        if not context.is_dir():
            return None
        digest_files(context, digest)
    return digest.hexdigest()


def build_if_changed(
    compose_bin: Path,
    stack: Stack,
    env_path: Path,
    stamps: Path,
    *,
    build: Callable[[Path, Path, tuple[str, ...], Path], None] = build_locally,
    inspect_ids: Callable[[Mapping[str, str]], dict[str, str]] | None = None,
) -> tuple[dict[str, str], bool]:
    """Build the stack's images locally unless an earlier build of the very same inputs (base
    images included: a refreshed debian:trixie-slim means a rebuild) left exactly these images
    (same IDs under the same names); returns (service -> image ID, built).

    `stamps` (a JSON file) remembers, per build fingerprint, the image IDs that build produced.
    One `docker image inspect` answers for the stack's images and their bases alike. `build` and
    `inspect_ids` are the local engine's (build_locally, local_image_ids) unless a test passes its own.
    """
    read_ids = inspect_ids or local_image_ids
    refs = {name: service.image for name, service in stack.services.items()}
    bases = {f"FROM {image}": image for image in base_images(stack)}

    def inspect() -> tuple[dict[str, str], str | None]:
        ids = read_ids({**refs, **bases})
        fingerprint = build_fingerprint(stack, {ref: ids[ref] for ref in bases})
        return {service: ids[service] for service in refs}, fingerprint

    try:
        ids, fingerprint = inspect()
    except StackError:
        pass  # an image or a base is missing: build (which reports what it cannot find)
    else:
        if fingerprint and _read_stamps(stamps).get(fingerprint) == ids:
            return ids, False
    build(compose_bin, stack.directory, stack.compose_files, env_path)
    ids, fingerprint = inspect()
    if fingerprint:
        _write_stamp(stamps, fingerprint, ids)
    return ids, True


def _read_stamps(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(path: Path, fingerprint: str, ids: dict[str, str], keep: int = 20) -> None:
    stamps = _read_stamps(path)
    stamps.pop(fingerprint, None)
    stamps[fingerprint] = ids
    kept = dict(list(stamps.items())[-keep:])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(kept, indent=1, sort_keys=False) + "\n")
    temporary.replace(path)


def local_image_ids(refs: Mapping[str, str]) -> dict[str, str]:
    """service -> image ID on this machine's engine, asked through the docker CLI in one call (a
    deploy with nothing to build or send never loads the Docker SDK)."""
    names = list(refs.values())
    if not names:
        return {}
    try:
        done = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", *names], capture_output=True, text=True
        )
    except FileNotFoundError:
        raise StackError("the docker command is not installed on this machine", hint="./scripts/bootstrap") from None
    ids = done.stdout.split()
    if done.returncode == 0 and len(ids) == len(names):
        return dict(zip(refs, ids, strict=True))
    for service, ref in refs.items():
        if f"No such image: {ref}" in done.stderr:
            raise StackError(f"image {ref} of service {service} is not on this machine", hint="build it first")
    lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
    raise StackError(f"docker image inspect failed: {lines[-1][:200]}", hint="is the local Docker engine running?")
