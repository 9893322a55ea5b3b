"""The one error hierarchy of opskit.

Every failure a person can act on is an OpsError: it says what happened, where, and what to do
next. The task layer renders it as one red line and exit code 1; nothing here prints or exits.
"""

from __future__ import annotations


class OpsError(Exception):
    """Base of every error opskit reports to a person."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def one_line(self) -> str:
        """The single line shown to the user: `where: message (hint)`."""
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return text

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(OpsError):
    """An environment file, secret or setting is missing or wrong."""


class HostError(OpsError):
    """A host could not be reached or a command on it failed."""


class HostKeyError(HostError):
    """A host presented an unknown or changed SSH host key."""


class AuthenticationError(HostError):
    """The host refused our key for that user."""


class CommandError(HostError):
    """A command on a host exited non-zero where success was required."""

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
        output: str = "",
    ):
        super().__init__(message, where=where, hint=hint)
        self.exit_code = exit_code
        self.output = output


class LockError(OpsError):
    """The deploy lock is held by someone else (or could not be taken)."""


class HealthGateError(OpsError):
    """A service did not become healthy in time, or failed its healthcheck."""

    service: object = None  # the ops.health.ServiceHealth that failed, with its logs


class StackError(OpsError):
    """The compose stack is missing or invalid (caught before any host changes), or its checks failed to run."""


class DeployError(OpsError):
    """A deploy or rollback failed on a host; the host was put back where it was."""


class RegistryError(OpsError):
    """A registry could not be built, started, reached, logged in to, pushed to or pulled from."""


class BackupError(OpsError):
    """A backup, verify, restore or prune could not be done; what was there before is untouched."""


class SwarmError(OpsError):
    """A swarm has no manager that answers, no such node, or a drain that did not finish."""


class LabError(OpsError):
    """The local lab could not be built, started or stopped."""


class FleetError(OpsError):
    """One or more hosts of a fleet operation failed; the others finished."""


class ScanError(OpsError):
    """A scanner could not run, found nothing to scan, or could not reach its data (never a pass)."""
