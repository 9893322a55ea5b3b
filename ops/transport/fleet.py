"""A Fleet maps work over an environment's hosts with bounded concurrency and reports per host;
one failing host never stops the others."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ops.config import Environment, HostSpec
from ops.errors import HostError, OpsError
from ops.transport.host import Host
from ops.transport.runner import Runner, SSHRunner

T = TypeVar("T")


@dataclass
class HostOutcome(Generic[T]):
    """The result of one host's share of a fleet operation."""

    host: str
    value: T | None = None
    error: OpsError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FleetResult(Generic[T]):
    outcomes: list[HostOutcome[T]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> list[HostOutcome[T]]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


class Fleet:
    """The hosts of an environment, worked on in parallel with bounded concurrency."""

    def __init__(self, hosts: Sequence[Host], parallel: int = 10):
        self.hosts = list(hosts)
        self.parallel = max(1, parallel)

    @classmethod
    def connect(
        cls,
        env: Environment,
        *,
        only: Iterable[str] | None = None,
        user: str | None = None,
        runner_factory: Callable[[HostSpec], Runner] | None = None,
    ) -> Fleet:
        """Hosts for env (lazy: nothing connects until a host is used)."""
        specs = list(env.hosts)
        if only:
            wanted = set(only)
            specs = [s for s in specs if wanted & {s.name, s.address, s.target}]
            if not specs:
                raise HostError(
                    f"no host of environment {env.name} matches {', '.join(sorted(wanted))}",
                    hint=f"hosts: {', '.join(s.name for s in env.hosts)}",
                )
        if user:
            specs = [s.as_user(user) for s in specs]

        make = runner_factory or (lambda spec: SSHRunner.for_environment(spec, env))
        return cls([Host(spec, make(spec)) for spec in specs], env.parallel)

    def map(self, work: Callable[[Host], T]) -> FleetResult[T]:
        """Run work on every host, at most `parallel` at once; errors are kept per host."""

        def one(host: Host) -> HostOutcome[T]:
            started = time.monotonic()
            try:
                value = work(host)
            except OpsError as error:
                return HostOutcome(host.name, error=error, seconds=time.monotonic() - started)
            return HostOutcome(host.name, value=value, seconds=time.monotonic() - started)

        if len(self.hosts) == 1:
            return FleetResult([one(self.hosts[0])])
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(self.hosts))) as pool:
            return FleetResult(list(pool.map(one, self.hosts)))

    def open_connections(self) -> None:
        """Open every host's SSH connection at once, so the handshakes overlap each other and
        whatever runs meanwhile. A host that cannot be reached fails its first command."""
        self.map(lambda host: host.runner.ssh_client())

    def close(self) -> None:
        for host in self.hosts:
            host.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
