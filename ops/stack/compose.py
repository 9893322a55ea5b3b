"""A compose stack on the operator's machine: validated with `docker compose config` and read.

Validation runs before any host is touched, so a broken compose file never half-deploys.
This module reads the stack and renders its environment; it never talks to a host.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.config import OPERATOR_SECRETS, Environment
from ops.errors import StackError
from ops.host.labels import SWAP_LABEL

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
SKIP_IN_ARCHIVE = {".git", "__pycache__", ".venv", "node_modules"}


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    builds: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    has_healthcheck: bool = False
    start_period_s: float = 0.0
    published_ports: bool = False
    container_name: str = ""
    build: Mapping[str, object] = field(default_factory=dict)  # compose's resolved build section
    replicas: int = 1

    @property
    def swappable(self) -> bool:
        return self.labels.get(SWAP_LABEL, "").lower() == "true"


@dataclass(frozen=True)
class Stack:
    directory: Path
    compose_files: tuple[str, ...]
    services: Mapping[str, Service]
    config: Mapping[str, Any] = field(default_factory=dict)  # `docker compose config`'s JSON, as resolved

    def service(self, name: str) -> Service:
        if name not in self.services:
            raise StackError(
                f"unknown service {name!r}",
                where=str(self.directory),
                hint=f"services: {', '.join(sorted(self.services))}",
            )
        return self.services[name]


def compose_files(stack_dir: Path) -> tuple[str, ...]:
    for name in COMPOSE_NAMES:
        if (stack_dir / name).is_file():
            return (name,)
    raise StackError(f"no compose file in {stack_dir}", hint=f"add one of: {', '.join(COMPOSE_NAMES)}")


def stack_dir(env: Environment) -> Path:
    if env.stack_dir is None:
        raise StackError(
            "STACK_DIR is not set", where=str(env.file.name), hint="set STACK_DIR=stacks/<name> in the env file"
        )
    if not env.stack_dir.is_dir():
        raise StackError(f"stack directory {env.stack_dir} does not exist", hint="check STACK_DIR")
    return env.stack_dir


def render_env(env: Environment, version: str, stack: Path) -> str:
    """The release's .env: the stack's own .env defaults, STACK_VARS, APP_VERSION, then secrets."""
    values: dict[str, str] = {}
    defaults = stack / ".env"
    if defaults.is_file():
        from dotenv import dotenv_values

        values.update({k: v or "" for k, v in dotenv_values(defaults).items()})
    values.update(dict(env.deploy.stack_vars))
    values["APP_VERSION"] = version
    for name in env.secrets.names():
        if name not in OPERATOR_SECRETS:  # opskit's own (notification URL, S3 keys) stay on this machine
            values[name] = env.secrets[name]
    return "".join(f"{key}={json.dumps(value)}\n" for key, value in sorted(values.items()))


@contextmanager
def env_file(text: str) -> Iterator[Path]:
    """The rendered .env in a private temporary file (mode 0600), removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="opskit-", suffix=".env")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def load_stack(directory: Path, compose_bin: Path, rendered_env: Path) -> Stack:
    """Validate the stack with the real `docker compose config` and read its services."""
    files = compose_files(directory)
    command = [str(compose_bin), "--project-directory", str(directory)]
    for name in files:
        command += ["-f", str(directory / name)]
    command += ["--env-file", str(rendered_env), "config", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no output"]
        raise StackError(f"invalid compose file: {lines[-1][:300]}", where=str(directory / files[0]))
    config = json.loads(done.stdout)
    services = {}
    for name, spec in (config.get("services") or {}).items():
        health = spec.get("healthcheck") or {}
        services[name] = Service(
            name=name,
            image=spec.get("image") or f"{config.get('name', 'stack')}-{name}",
            builds="build" in spec,
            build=dict(spec.get("build") or {}),
            replicas=int((spec.get("deploy") or {}).get("replicas") or spec.get("scale") or 1),
            labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
            has_healthcheck=bool(health) and not health.get("disable", False),
            start_period_s=duration_seconds(str(health.get("start_period", "0s"))),
            published_ports=any(port.get("published") for port in spec.get("ports") or []),
            container_name=str(spec.get("container_name") or ""),
        )
    if not services:
        raise StackError("the compose file defines no services", where=str(directory / files[0]))
    return Stack(directory, files, services, config)


def duration_seconds(text: str) -> float:
    """Compose durations as `config --format json` prints them (e.g. 1m30s, 500ms, 10s)."""
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    index = 0
    while index < len(text):
        char = text[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = text[index : index + 2] if text[index : index + 2] in units else char
        total += float(number or 0) * units.get(unit, 0.0)
        number = ""
        index += len(unit)
    return total + (float(number) if number else 0.0)


def _files(directory: Path) -> list[Path]:
    """The stack's files as a release carries them (no VCS, caches or local .env)."""
    kept = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if SKIP_IN_ARCHIVE & set(relative.parts) or relative.name == ".env" or not path.is_file():
            continue
        kept.append(path)
    return kept


def digest_files(directory: Path, digest: hashlib._Hash) -> None:
    """Feed every file's relative path, mode and content into a digest (stable across runs)."""
    for path in _files(directory):
        digest.update(f"{path.relative_to(directory)}\0{path.stat().st_mode & 0o777}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")


def content_digest(directory: Path, env_text: str) -> str:
    """What a release is made of: the stack's files and its rendered .env, as one sha256.

    Two releases with the same digest and the same image IDs are the same release."""
    digest = hashlib.sha256()
    digest_files(directory, digest)
    digest.update(env_text.encode())
    return digest.hexdigest()


def file_sums(directory: Path, env_text: str) -> dict[str, str]:
    """Each file a release carries (relative path -> sha256), as `sha256sum` on the host tells it."""
    sums = {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest() for path in _files(directory)
    }
    sums[".env"] = hashlib.sha256(env_text.encode()).hexdigest()
    return sums


def archive(directory: Path, env_text: str) -> bytes:
    """A release's files as a gzip'd tar: the stack directory and the rendered .env (mode 0600).
    It is unpacked on the host from stdin, so the secrets never touch a command line or a disk
    on the way."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in _files(directory):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
        data = env_text.encode()
        info = tarfile.TarInfo(".env")
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
