"""A bounded HTTP load from separate threads, counting every non-2xx answer and connection error.

Used by benchmarks/swap.py and the swap integration test. Only ever aimed at 127.0.0.1; stops
by itself after max_seconds or max_requests, whichever comes first.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)
    last_failure: float | None = None  # seconds after the start

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Load:
    """GET path on 127.0.0.1:port from `threads` threads, with or without keep-alive."""

    def __init__(
        self,
        port: int,
        *,
        path: str = "/version",
        threads: int = 4,
        keepalive: bool = False,
        max_seconds: float = 300,
        max_requests: int = 500_000,
    ):
        self.port, self.path, self.keepalive = port, path, keepalive
        self.threads = threads
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.started = 0.0

    def _record(self, ok: bool, what: str = "") -> bool:
        with self._lock:
            self.result.requests += 1
            if not ok:
                at = time.monotonic() - self.started
                self.result.failures += 1
                self.result.last_failure = at
                if len(self.result.examples) < 10:
                    self.result.examples.append(f"{at:.2f}s {what}")
            return self.result.requests < self.max_requests

    def _worker(self) -> None:
        deadline = self.started + self.max_seconds
        connection: http.client.HTTPConnection | None = None
        headers = {} if self.keepalive else {"Connection": "close"}
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                response.read()
                more = self._record(200 <= response.status < 300, f"HTTP {response.status}")
                if not self.keepalive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                more = self._record(False, f"{type(error).__name__}: {error}")
                if connection is not None:
                    connection.close()
                connection = None
            if not more:
                break
        if connection is not None:
            connection.close()

    def start(self) -> Load:
        self.started = time.monotonic()
        self._workers = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)
        self.result.seconds = time.monotonic() - self.started
        return self.result
