"""SSH host keys: read what a server presents, compare with the pinned ones, pin after consent.

Reading a key authenticates nothing and sends no credentials. Pinning writes the environment's
known_hosts file; deciding whether to trust a key is the operator's job, never this module's.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from ops.config import HostSpec
from ops.errors import HostError

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")


@dataclass(frozen=True)
class ServerKey:
    """One host key a server presents."""

    host: str  # as known_hosts names it: address, or [address]:port
    key_type: str
    key_base64: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.key_base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        return f"{self.host} {self.key_type} {self.key_base64}"


def known_hosts_name(spec: HostSpec) -> str:
    return spec.address if spec.port == 22 else f"[{spec.address}]:{spec.port}"


def fetch_server_keys(spec: HostSpec, timeout: float = 10) -> list[ServerKey]:
    """The host keys the server offers, one per key type it supports."""
    import paramiko

    keys: dict[str, ServerKey] = {}
    for wanted in KEY_TYPES:
        try:
            sock = socket.create_connection((spec.address, spec.port), timeout=timeout)
        except OSError as error:
            raise HostError(f"unreachable: {error.strerror or error}", where=spec.name) from None
        transport = paramiko.Transport(sock)
        try:
            transport.get_security_options().key_types = (wanted,)
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
            keys.setdefault(key.get_name(), ServerKey(known_hosts_name(spec), key.get_name(), key.get_base64()))
        except paramiko.SSHException:
            continue  # the server has no key of this type
        finally:
            transport.close()
    if not keys:
        raise HostError("the server offered no host key opskit can use", where=spec.name)
    return list(keys.values())


def pinned_keys(known_hosts: Path, spec: HostSpec) -> list[ServerKey]:
    if not known_hosts.exists():
        return []
    name = known_hosts_name(spec)
    pinned = []
    for line in known_hosts.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and name in parts[0].split(","):
            pinned.append(ServerKey(name, parts[1], parts[2]))
    return pinned


def compare(presented: list[ServerKey], pinned: list[ServerKey]) -> str:
    """'pinned' when a presented key is pinned, 'changed' when a pinned one differs, else 'unknown'."""
    pinned_set = {(key.key_type, key.key_base64) for key in pinned}
    if any((key.key_type, key.key_base64) in pinned_set for key in presented):
        return "pinned"
    same_type = {key.key_type for key in pinned} & {key.key_type for key in presented}
    return "changed" if same_type else "unknown"


def pin(known_hosts: Path, spec: HostSpec, keys: list[ServerKey]) -> None:
    """Replace the host's lines in known_hosts with keys (written atomically)."""
    name = known_hosts_name(spec)
    kept = []
    if known_hosts.exists():
        kept = [
            line
            for line in known_hosts.read_text().splitlines()
            if not (line.split() and name in line.split()[0].split(","))
        ]
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    tmp = known_hosts.with_suffix(known_hosts.suffix + ".tmp")
    tmp.write_text("\n".join([*kept, *(key.line() for key in keys)]) + "\n")
    tmp.replace(known_hosts)
