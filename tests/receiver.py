"""A real HTTP receiver on 127.0.0.1 for notification tests: records every POST body, and can answer
slowly, with an error status, or drop the connection, as a webhook that is down or slow would."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """What the server received and how it answers next: ok, slow (never within a timeout),
    a status code (e.g. 500), or drop (close the connection without an answer)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.answers: list[str] = []  # consumed one per request; "ok" when empty
        self.slow_seconds = 30.0
        self.port = 0
        self.received = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T000/B000"

    def messages(self) -> list[dict[str, object]]:
        return [json.loads(body) for body in self.bodies]


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = state.answers.pop(0) if state.answers else "ok"
            if answer == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if answer == "slow":  # the sender has given up by then: not counted as received
                time.sleep(state.slow_seconds)
            else:
                state.bodies.append(body)
            state.received.set()
            status = 200 if answer in ("ok", "slow") else int(answer)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a webhook that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
