"""Ports on 127.0.0.1 that the lab hosts and the local registry publish, derived from a name.

Every checkout gets the same ports on every run (its known_hosts and env files name them), and
they all lie below the kernel's ephemeral range (Linux: 32768-60999): an outgoing connection's
local port is taken from that range, so a long-lived SSH session or a connection in TIME_WAIT
could otherwise hold a lab's port when its host is created.

A block is 20 ports: a lab takes offsets 1-9 (ssh) and 11-19 (http), the local registry offset 0,
so a registry never collides with any lab; two names collide only when they hash to one block.
"""

from __future__ import annotations

import hashlib
import socket
import time

FIRST_PORT = 10000
BLOCK_SIZE = 20
BLOCKS = 1100  # 10000-31999, under the ephemeral range
REGISTRY_OFFSET = 0


def port_block(key: str) -> int:
    """The first port of the block `key` (a checkout path and a name) hashes to."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return FIRST_PORT + (int(digest[:8], 16) % BLOCKS) * BLOCK_SIZE


def port_free(port: int) -> bool:
    """Nothing holds 127.0.0.1:port (a bind test, with the reuse flag a publishing engine sets)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_free_soon(port: int, wait: float = 30) -> bool:
    """The port is free, or frees within `wait` seconds: a removed container's port forwarder
    lets go of it a moment after the container is gone."""
    deadline = time.monotonic() + wait
    while not port_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)
    return True
