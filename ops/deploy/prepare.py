"""Everything a deploy does on this machine before any host is touched: validate the stack with
the real compose, render its .env, pack the release archive, and let the image delivery build
what it sends. Nothing here connects to a host.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ops.config import Environment
from ops.console import OK, Reporter
from ops.images import ImageDelivery, ReleaseImages, delivery_for
from ops.stack.compose import Stack, archive, content_digest, env_file, file_sums, load_stack, render_env, stack_dir
from ops.stack.toolbox import ensure_compose


@dataclass(frozen=True)
class Prepared:
    """Everything checked and built on the operator's machine before any host changes."""

    stack: Stack
    env_text: str
    archive: bytes
    refs: dict[str, str]  # service -> image reference
    local_ids: dict[str, str]  # service -> image ID on the local engine (a delivery that builds here)
    git_commit: str
    content: str = ""  # ops.stack.content_digest of the stack and its rendered .env
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 (ops.stack.file_sums)
    version: str = ""  # APP_VERSION the .env was rendered with

    def images(self, compose: Callable[[str], str]) -> ReleaseImages:
        """What an image delivery brings to a host for this release; compose turns compose
        arguments into the release's command on that host."""
        return ReleaseImages(self.refs, self.local_ids, compose)

    def only(self, service: str) -> Prepared:
        """The same release narrowed to one service's image (a swap brings only that one)."""
        local = {service: self.local_ids[service]} if service in self.local_ids else {}
        return replace(self, refs={service: self.refs[service]}, local_ids=local)


def git_commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True)
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def prepare(
    env: Environment,
    reporter: Reporter,
    version: str,
    *,
    build: bool = True,
    delivery: ImageDelivery | None = None,
) -> Prepared:
    """Validate the stack with the real compose, and build images locally when the delivery sends them."""
    delivery = delivery or delivery_for(env)
    directory = stack_dir(env)
    compose_bin = ensure_compose(env.root, reporter)
    env_text = render_env(env, version, directory)
    with env_file(env_text) as rendered:
        stack = load_stack(directory, compose_bin, rendered)
        reporter.step("local", "validate stack", OK, f"{len(stack.services)} services in {directory.name}")
        refs = {name: service.image for name, service in stack.services.items()}
        local_ids: dict[str, str] = {}
        if build:
            stamps = env.root / ".opskit" / "builds.json"
            local_ids = delivery.prepare_locally(compose_bin, stack, rendered, stamps, reporter)
    content = content_digest(directory, env_text)
    files = file_sums(directory, env_text)
    return Prepared(
        stack,
        env_text,
        archive(directory, env_text),
        refs,
        local_ids,
        git_commit(env.root),
        content,
        files,
        version,
    )
