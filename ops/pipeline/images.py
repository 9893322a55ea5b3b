"""Dev-only (nox -s build): build a stack's images on this machine's engine, as a deploy with the
send source does. Never imported by a task or a capability; it uses the lab's base image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ops.console import OK, Reporter
from ops.errors import StackError
from ops.images.local import build_locally, local_image_ids
from ops.stack.compose import compose_files, env_file, load_stack
from ops.stack.toolbox import ensure_compose


def build_stack_images(
    checkout: Path, directory: Path, reporter: Reporter, environment: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Build a stack's images on this machine's engine, as a deploy with the send source does
    (the toolbox's Compose, base image made locally); returns service -> image reference.
    environment feeds the compose file's variables (the stack's defaults otherwise)."""
    import docker as sdk

    from ops.lab import ensure_base_image

    try:
        client = sdk.from_env(version="auto", timeout=600)
    except sdk.errors.DockerException as error:
        raise StackError(f"the local Docker engine does not answer: {error}", hint="`inv lab.up` starts it") from None
    try:
        ensure_base_image(client, reporter)
        compose_bin = ensure_compose(checkout, reporter)
        text = "".join(f"{key}={value}\n" for key, value in sorted((environment or {}).items()))
        with env_file(text) as rendered:
            stack = load_stack(directory, compose_bin, rendered)
            files = compose_files(directory)
            build_locally(compose_bin, directory, files, rendered)
            refs = {name: service.image for name, service in stack.services.items() if service.builds}
            local_image_ids(refs)  # every image is really there
    finally:
        client.close()
    reporter.step("local", "build images", OK, f"{len(refs)} images of {directory.name}")
    return refs
