"""The toolbox: a local image with the real tools (docker-compose, promtool, amtool, nginx) that
check a stack before any host is touched, and the docker-compose binary taken out of it.
It must never change a host, and never remove an image, container or volume it did not create.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops.console import CHANGED, OK, Reporter
from ops.errors import StackError
from ops.transport.docker import build_recipe_image, find_image, local_client, recipe_image

if TYPE_CHECKING:
    import docker

TOOLBOX_IMAGE = "opskit/toolbox:trixie"
BASE_IMAGE = "debian:trixie-slim"
LABEL = "opskit.toolbox"
# Debian 13 ships Compose v2 as a CLI plugin; /usr/bin/docker-compose is only a symlink to it.
COMPOSE_IN_IMAGE = "/usr/libexec/docker/cli-plugins/docker-compose"
# Debian's own packages, the same builds the stack's images run: a config that passes here
# loads there. `promtool` alone, not `prometheus`: the server is not needed to check configs.
TOOLBOX_PACKAGES = ("docker-compose", "promtool", "prometheus-alertmanager", "nginx")
TOOLBOX_DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      {" ".join(TOOLBOX_PACKAGES)} \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \\
 && test -x {COMPOSE_IN_IMAGE}
"""
# A change to the recipe rebuilds the image once; otherwise it is reused.
RECIPE_VERSION = hashlib.sha256(TOOLBOX_DOCKERFILE.encode()).hexdigest()[:12]
# Where a stack is mounted (read-only) inside the toolbox container.
STACK_MOUNT = "/stack"


@dataclass(frozen=True)
class ConfigCheck:
    """One config file checked by one real tool; output is what the tool said."""

    tool: str
    file: str
    ok: bool
    output: str


def ensure_toolbox_image(client: docker.DockerClient, reporter: Reporter) -> str:
    """Build the toolbox image once (rebuilt only when its recipe changes); returns its name."""
    import docker

    if recipe_image(client, TOOLBOX_IMAGE, RECIPE_VERSION) is not None:
        reporter.step("local", "toolbox image", OK, TOOLBOX_IMAGE)
        return TOOLBOX_IMAGE
    image = find_image(client, TOOLBOX_IMAGE)  # an older recipe's, removed once the new one is built
    if find_image(client, BASE_IMAGE) is None:
        raise StackError(
            f"the base image {BASE_IMAGE} is missing from the local engine",
            hint="`inv lab.up` (ops.lab.ensure_base_image) builds it with debootstrap",
        )
    reporter.step("local", "toolbox image", CHANGED, f"building {TOOLBOX_IMAGE} (apt, about a minute)")
    build_recipe_image(
        client,
        TOOLBOX_IMAGE,
        {"Dockerfile": TOOLBOX_DOCKERFILE},
        RECIPE_VERSION,
        labels={LABEL: "image"},
        error=StackError,
    )
    if image is not None and image.labels.get(LABEL) == "image":
        # The previous recipe's toolbox, now untagged; ours to remove, kept if something uses it.
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id)
    return TOOLBOX_IMAGE


def _compose_works(binary: Path) -> bool:
    try:
        done = subprocess.run([str(binary), "version"], check=False, capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and "Docker Compose" in done.stdout


def ensure_compose(checkout: Path, reporter: Reporter) -> Path:
    """`<checkout>/.lab/bin/docker-compose`, copied out of the toolbox image unless already there."""
    target = checkout / ".lab" / "bin" / "docker-compose"
    if target.is_file() and os.access(target, os.X_OK):
        reporter.step("local", "docker-compose", OK, str(target))
        return target
    import docker  # only now: the fast path above needs no SDK

    try:
        client = local_client()
    except docker.errors.DockerException as error:
        raise StackError(f"the local Docker engine does not answer: {error}", hint="`inv lab.up` starts it") from None
    try:
        image = ensure_toolbox_image(client, reporter)
        # A created (never started) container is the way to read a file out of an image.
        container = client.containers.create(image, command=["true"], labels={LABEL: "extract"})
        try:
            chunks, _ = container.get_archive(COMPOSE_IN_IMAGE)
            archive = io.BytesIO(b"".join(chunks))
        finally:
            container.remove(force=True)
    except docker.errors.APIError as error:
        raise StackError(f"copying docker-compose out of {TOOLBOX_IMAGE} failed: {error.explanation}") from None
    finally:
        client.close()
    with tarfile.open(fileobj=archive) as tar:
        member = tar.next()
        source = tar.extractfile(member) if member is not None else None
        if source is None:
            raise StackError(f"{TOOLBOX_IMAGE} has no file at {COMPOSE_IN_IMAGE}")
        binary = source.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so a half-copied binary is never taken for a good one (aside per
    # process: two test workers may copy it at once).
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    if not _compose_works(target):
        target.unlink()
        raise StackError(
            f"the docker-compose taken from {TOOLBOX_IMAGE} does not run here",
            where=str(target),
            hint="it is linked against Debian 13's libc; install the docker-compose-plugin package instead",
        )
    reporter.step("local", "docker-compose", CHANGED, f"copied to {target}")
    return target


def _planned_checks(stack_dir: Path) -> list[tuple[str, Path, list[str]]]:
    """Which tool checks which file, found by the stack's layout conventions."""

    def inside(path: Path) -> str:
        return f"{STACK_MOUNT}/{path.relative_to(stack_dir).as_posix()}"

    plan: list[tuple[str, Path, list[str]]] = []
    for path in sorted(stack_dir.glob("**/prometheus.yml")):
        plan.append(("promtool check config", path, ["promtool", "check", "config", inside(path)]))
    for pattern in ("**/rules/*.yml", "**/rules/*.yaml"):
        for path in sorted(stack_dir.glob(pattern)):
            plan.append(("promtool check rules", path, ["promtool", "check", "rules", inside(path)]))
    # Alert rules' own unit tests: each failure mode fires its alert with its runbook.
    for path in sorted(stack_dir.glob("**/*.test.yml")):
        plan.append(("promtool test rules", path, ["promtool", "test", "rules", inside(path)]))
    for path in sorted(stack_dir.glob("**/alertmanager.yml")):
        plan.append(("amtool check-config", path, ["amtool", "check-config", inside(path)]))
    for path in sorted(stack_dir.glob("**/nginx.conf")):
        plan.append(("nginx -t", path, ["nginx", "-t", "-c", inside(path)]))
    return plan


def check_stack_configs(stack_dir: Path, client: docker.DockerClient) -> list[ConfigCheck]:
    """Check every config file of a stack with the real tool, in the toolbox, stack mounted read-only.

    A config that fails its check is a result (ok=False, with the tool's output), not an error:
    the caller decides. StackError means the checking itself could not happen. The client must
    be the local engine, since the stack is bind-mounted from this machine's filesystem.
    """
    import docker

    stack_dir = stack_dir.resolve()
    if not stack_dir.is_dir():
        raise StackError(f"no stack directory at {stack_dir}")
    plan = _planned_checks(stack_dir)
    if not plan:
        raise StackError(
            f"no config files to check in {stack_dir}",
            hint="expected prometheus.yml, rules/*.yml, *.test.yml, alertmanager.yml or nginx.conf",
        )
    if find_image(client, TOOLBOX_IMAGE) is None:
        raise StackError(f"the toolbox image {TOOLBOX_IMAGE} is missing", hint="call ensure_toolbox_image first")
    try:
        # One container for all checks; no network, so no check depends on names resolving.
        container = client.containers.run(
            TOOLBOX_IMAGE,
            command=["sleep", "600"],
            name=f"opskit-toolbox-check-{uuid.uuid4().hex[:8]}",
            detach=True,
            network_mode="none",
            volumes={str(stack_dir): {"bind": STACK_MOUNT, "mode": "ro"}},
            labels={LABEL: "check"},
        )
    except docker.errors.APIError as error:
        raise StackError(f"could not start the toolbox container: {error.explanation}") from None
    results = []
    try:
        for tool, path, command in plan:
            code, output = container.exec_run(command, workdir=STACK_MOUNT)
            text = output.decode(errors="replace").strip() if output else ""
            results.append(ConfigCheck(tool, path.relative_to(stack_dir).as_posix(), code == 0, text))
    except docker.errors.APIError as error:
        raise StackError(f"running a check in the toolbox failed: {error.explanation}") from None
    finally:
        container.remove(force=True)
    return results


def compose_config(
    stack_dir: Path,
    compose_bin: Path,
    env_file: Path | None = None,
    *,
    environment: Mapping[str, str] | None = None,
) -> str:
    """The stack's compose file as Compose resolves it; StackError with Compose's reason if invalid.

    Only env_file and environment feed interpolation: this process's own environment does not
    leak into what a release would run with.
    """
    compose_file = stack_dir / "compose.yaml"
    if not compose_file.is_file():
        raise StackError(f"no compose file at {compose_file}")
    command = [str(compose_bin), "--project-directory", str(stack_dir), "-f", str(compose_file)]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    command.append("config")
    try:
        done = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.defpath, **(environment or {})},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackError(
            f"could not run {compose_bin}: {error}", hint="ops.toolbox.ensure_compose provides it"
        ) from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise StackError(
            f"compose file is invalid: {lines[0] if lines else f'exit code {done.returncode}'}",
            where=str(compose_file),
            hint="fix it before deploying; nothing was changed on any host",
        )
    return done.stdout
