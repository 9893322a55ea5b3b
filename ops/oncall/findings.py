"""What the doctor's checks report: a Finding from a check function, a Check once the registry has
named it and placed it on a host. Shared by the host, local and swarm checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One check on one host (or on this machine: host "local")."""

    name: str
    host: str
    status: str  # pass | warn | fail | skipped
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Finding:
    """What a check function found; the registry adds the check's name and the host."""

    status: str  # pass | warn | fail | skipped
    detail: str
    fix: str = ""

    def as_check(self, name: str, host: str) -> Check:
        return Check(name, host, self.status, self.detail, self.fix)
