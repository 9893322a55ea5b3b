"""ssh(1) command lines for bulk data, pinned exactly like the paramiko runner (the argv itself
is built in ops.transport.streams, beside the loops that use it)."""

from __future__ import annotations

from ops.transport.host import Host
from ops.transport.runner import SSHRunner


def openssh_argv(host: Host) -> list[str] | None:
    """ssh(1) to the host with the runner's pinned host keys and identity; None when ssh(1) is not
    installed or the host is not reached over SSHRunner (unit tests): paramiko is used then."""
    runner = host.runner
    return runner.openssh_argv() if isinstance(runner, SSHRunner) else None
