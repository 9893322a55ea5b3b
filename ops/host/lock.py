"""The deploy lock: one change at a time per environment, held on every host.

A lock is a directory created with `mkdir` (atomic on the host's filesystem) holding
info.json: who, when, why. Hosts are locked in a fixed order so that two deploys started at
once cannot each hold half the fleet: exactly one wins. A lock is never broken silently; one
older than its TTL is reported stale and released only on request.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ops.console import CHANGED, FAILED, OK, Reporter
from ops.errors import LockError, OpsError
from ops.host.layout import ProjectLayout
from ops.transport import Fleet, Host

DEFAULT_TTL = 3600


def operator() -> str:
    """Who is acting: OPS_ACTOR (CI sets it), else user@machine."""
    return os.environ.get("OPS_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class LockInfo:
    """Who holds a host's lock, since when and why."""

    holder: str
    since: str  # ISO 8601, UTC
    reason: str
    token: str
    machine: str = ""  # where the holding process runs
    pid: int = 0

    @classmethod
    def from_json(cls, text: str) -> LockInfo:
        """The lock record as try_acquire writes it (info.json); ValueError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"the lock record is not a JSON object: {text[:60]!r}")
        return cls(
            **{key: str(data.get(key, "")) for key in ("holder", "since", "reason", "token", "machine")},
            pid=int(data.get("pid") or 0),
        )

    def held_by_dead_process_here(self) -> bool:
        """True when the holder was a process on this machine that no longer runs (killed, SSH drop)."""
        if self.machine != socket.gethostname() or self.pid <= 0 or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def age_seconds(self, now: datetime | None = None) -> float:
        started = datetime.fromisoformat(self.since)
        return ((now or datetime.now(UTC)) - started).total_seconds()

    def describe(self) -> str:
        return f"locked by {self.holder} since {self.since}: {self.reason or 'no reason given'}"


def lock_dir(project: str) -> str:
    return ProjectLayout(project).lock


def info_path(project: str) -> str:
    """The lock record (LockInfo as JSON) inside the lock directory."""
    return f"{lock_dir(project)}/info.json"


def read_lock(host: Host, project: str) -> LockInfo | None:
    path = lock_dir(project)
    result = host.run(f"cat {shlex.quote(info_path(project))} 2>/dev/null || test -d {shlex.quote(path)}", check=False)
    if result.exit_code != 0:
        return None
    text = result.stdout.strip()
    if not text:  # the directory exists but its info is being written (or was lost)
        return LockInfo(holder="unknown", since=datetime.now(UTC).isoformat(timespec="seconds"), reason="", token="")
    return LockInfo.from_json(text)


def try_acquire(host: Host, project: str, info: LockInfo) -> LockInfo | None:
    """Take the host's lock; None on success, else the current holder's info."""
    path = shlex.quote(lock_dir(project))
    payload = shlex.quote(json.dumps(asdict(info)))
    script = (
        f"mkdir -p {shlex.quote(ProjectLayout(project).base)} && mkdir {path} 2>/dev/null"
        f" && printf '%s\\n' {payload} > {shlex.quote(info_path(project))}"
    )
    if host.run(script, check=False).ok:
        return None
    return read_lock(host, project) or LockInfo("unknown", info.since, "", "")


def release(host: Host, project: str, token: str | None) -> bool:
    """Remove the lock if it is ours (token matches) or if token is None (forced), checked and
    removed on the host in one round trip; False when there was no such lock."""
    path = shlex.quote(lock_dir(project))
    if token is None:
        check = f"test -d {path}"
    else:  # the token as json.dumps wrote it into info.json
        check = (
            f"grep -qF {shlex.quote(json.dumps({'token': token})[1:-1])} {shlex.quote(info_path(project))} 2>/dev/null"
        )
    return host.run(f"{check} && rm -rf {path}", check=False).ok


class DeployLock:
    """The lock over a set of hosts, taken in a fixed order, released on exit."""

    def __init__(
        self,
        hosts: Sequence[Host],
        project: str,
        reason: str,
        *,
        wait_seconds: float = 0,
        until_released: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.hosts = sorted(hosts, key=lambda host: (host.spec.address, host.spec.port))
        self.project = project
        self.wait_seconds = wait_seconds
        self.info = LockInfo(
            holder=operator(),
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason,
            token=os.urandom(8).hex(),
            machine=socket.gethostname(),
            # A lock held until lock.release (maintenance) outlives the command that took it: no
            # process to check, so no later run on this machine takes it over as abandoned.
            pid=0 if until_released else os.getpid(),
        )
        self.held: list[Host] = []
        self.taken_over: list[str] = []
        self.unreleased: list[str] = []
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        """Take the first host's lock (in the fixed order), then the others' all at once.

        The first host decides between two deploys started together: the loser fails (or waits)
        there before it holds anything. A failure on any other host releases what was taken."""
        deadline = self._clock() + self.wait_seconds
        first, rest = self.hosts[:1], self.hosts[1:]
        for host in first:
            self._take(host, deadline)  # holds nothing else yet: a failure leaves no lock behind
        if not rest:
            return
        with ThreadPoolExecutor(max_workers=len(rest)) as pool:
            failures = [error for error in pool.map(lambda host: self._try_take(host, deadline), rest) if error]
        if failures:  # every attempt has ended: release exactly what was taken
            self.release()
            raise failures[0]

    def _try_take(self, host: Host, deadline: float) -> OpsError | None:
        try:
            self._take(host, deadline)
        except OpsError as error:
            return error
        return None

    def _take(self, host: Host, deadline: float) -> None:
        """Take one host's lock, waiting until the deadline; raises LockError naming the holder."""
        while True:
            holder = try_acquire(host, self.project, self.info)
            if holder is None:
                self.held.append(host)
                return
            if holder.held_by_dead_process_here():
                # Our own earlier run was killed (Ctrl-C twice, SSH drop): its lock is provably
                # abandoned, so take it over instead of asking a person to force it.
                release(host, self.project, holder.token)
                self.taken_over.append(f"{host.name}: {holder.describe()}")
                continue
            if self._clock() >= deadline:
                stale = holder.age_seconds() > DEFAULT_TTL if holder.since else False
                hint = (
                    "the lock is STALE; if no deploy runs, release it: inv lock.release --force"
                    if stale
                    else "wait for it (--lock-wait SECONDS) or ask the holder"
                )
                raise LockError(holder.describe(), where=host.name, hint=hint)
            self._sleep(1.0)

    def release(self) -> None:
        """Release every lock we hold (all hosts at once); a broken connection is reopened once
        before giving up on a host."""

        def release_one(host: Host) -> None:
            for attempt in (1, 2):
                try:
                    release(host, self.project, self.info.token)
                    return
                except OpsError:
                    host.close()  # a fresh connection for the second attempt
                    if attempt == 2:
                        self.unreleased.append(host.name)

        if self.held:
            with ThreadPoolExecutor(max_workers=len(self.held)) as pool:
                list(pool.map(release_one, reversed(self.held)))
        self.held = []

    def __enter__(self) -> DeployLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def held(fleet: Fleet, project: str, reason: str, reporter: Reporter, *, wait: float = 0) -> Iterator[DeployLock]:
    """The deploy lock on every host of the fleet for the duration of the block, always released;
    what was taken over or could not be released is reported."""
    fleet.open_connections()
    lock = DeployLock(fleet.hosts, project, reason, wait_seconds=wait)
    lock.acquire()
    for note in lock.taken_over:
        reporter.step("all", "lock", CHANGED, f"took over a lock whose process is gone: {note}")
    reporter.step("all", "lock", OK, f"held on {len(lock.held)} hosts")
    try:
        yield lock
    finally:
        lock.release()
        for name in lock.unreleased:
            reporter.step(name, "lock", FAILED, "not released (host unreachable): run inv lock.release once it is back")
