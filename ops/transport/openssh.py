"""ssh(1) command lines for bulk data, pinned exactly like the paramiko runner."""

from __future__ import annotations

import os
import shutil

from ops.transport.host import Host
from ops.transport.runner import SSHRunner


def openssh_argv(host: Host) -> list[str] | None:
    """The OpenSSH client for bulk data, with the same pinned host keys and identity as the runner.

    paramiko moves data in Python (tens of MB/s on a busy machine); ssh(1) does it in C. Host keys
    are checked against the environment's known_hosts only (StrictHostKeyChecking=yes, no global
    file, no user config), as for every other connection. None when ssh(1) is not installed or the
    host is not reached over SSHRunner (unit tests): paramiko is used then.
    """
    runner = host.runner
    if not isinstance(runner, SSHRunner) or shutil.which("ssh") is None or os.environ.get("OPS_BACKUP_PARAMIKO"):
        return None
    spec = runner.spec
    argv = ["ssh", "-F", "/dev/null", "-T", "-x", "-a", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", f"UserKnownHostsFile={runner.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", f"ConnectTimeout={int(runner.connect_timeout)}", "-o", "LogLevel=ERROR"]
    argv += ["-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com"]
    argv += ["-o", "ServerAliveInterval=15", "-p", str(spec.port), "-l", spec.user]
    if runner.identity_file:
        argv += ["-i", str(runner.identity_file), "-o", "IdentitiesOnly=yes"]
    return [*argv, "--", spec.address]
