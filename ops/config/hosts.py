"""Hosts as an env file names them: `[user@]host[:port][/role+role]` parsed into a HostSpec."""

from __future__ import annotations

import re
from dataclasses import dataclass

MANAGER_ROLE = "manager"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# user@host:port/role+role; user, port and roles optional. IPv6 addresses go in brackets.
HOST_RE = re.compile(
    r"^(?:(?P<user>[a-z_][a-z0-9_.-]*)@)?"
    r"(?P<address>\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:/(?P<roles>[a-z0-9_-]+(?:\+[a-z0-9_-]+)*))?$"
)


@dataclass(frozen=True)
class HostSpec:
    """One server of an environment, as written in HOSTS."""

    address: str
    port: int = 22
    user: str = "deploy"
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The short name used in output: host:port (port left out when 22)."""
        return self.address if self.port == 22 else f"{self.address}:{self.port}"

    @property
    def manager(self) -> bool:
        """A swarm manager (role `manager`); the other hosts of a swarm join as workers."""
        return MANAGER_ROLE in self.roles

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def as_user(self, user: str) -> HostSpec:
        return HostSpec(self.address, self.port, user, self.roles)


def parse_host(text: str, default_user: str = "deploy") -> HostSpec:
    """Parse `user@host:port/role+role`; raises ValueError with the reason."""
    match = HOST_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not [user@]host[:port][/role+role]")
    port = int(match["port"]) if match["port"] else 22
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r} has port {port}, outside 1-65535")
    roles = tuple(match["roles"].split("+")) if match["roles"] else ()
    return HostSpec(match["address"].strip("[]"), port, match["user"] or default_user, roles)
