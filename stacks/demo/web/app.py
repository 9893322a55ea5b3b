"""The demo stack's web app: a visit counter kept in Redis, with /health, /version and /metrics.

Standard library only (Debian's python3), so the image needs nothing from PyPI. It must never
report healthy while Redis is unreachable: the deploy and swap health gates trust /health.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "dev")
HOST = socket.gethostname()
REDIS_HOST = os.environ.get("REDIS_HOST", "redis")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
PORT = int(os.environ.get("PORT", "8000"))
# Lets a test deploy a version whose healthcheck fails, to prove the health gates roll back.
HEALTH_FAIL = os.environ.get("HEALTH_FAIL", "0") not in ("", "0", "false", "no")

_counts: dict[tuple[str, int], int] = {}
_counts_lock = threading.Lock()
_last_visits = 0


class RedisError(Exception):
    pass


def redis(*args: str, timeout: float = 1.0) -> object:
    """Send one command in RESP and read one reply; a connection per call keeps it simple."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=timeout) as conn, conn.makefile("rb") as reply:
            conn.sendall(request.encode())
            line = reply.readline().decode().rstrip("\r\n")
            kind, rest = line[:1], line[1:]
            if kind == "+":
                return rest
            if kind == ":":
                return int(rest)
            if kind == "$":
                return None if rest == "-1" else reply.read(int(rest) + 2)[:-2].decode()
            if kind == "-":
                raise RedisError(rest)
            raise RedisError(f"unexpected reply {line!r}")
    except OSError as error:
        raise RedisError(str(error)) from None


def redis_up() -> bool:
    try:
        return redis("PING") == "PONG"
    except RedisError:
        return False


def memory_limit() -> int:
    """The container's memory limit from its cgroup (v2, then v1); 0 when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit_file:
                text = limit_file.read().strip()
        except OSError:
            continue
        # cgroup v1 reports "no limit" as a huge page-aligned number.
        return int(text) if text.isdigit() and int(text) < 1 << 60 else 0
    return 0


def resident_memory() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def metrics() -> str:
    with _counts_lock:
        counts = dict(_counts)
    lines = [
        "# HELP web_requests_total HTTP requests served, by path and status code.",
        "# TYPE web_requests_total counter",
        *(f'web_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(counts.items())),
        "# HELP web_visits Visit counter as last read from Redis.",
        "# TYPE web_visits gauge",
        f"web_visits {_last_visits}",
        "# HELP redis_up Whether Redis answered PING during this scrape.",
        "# TYPE redis_up gauge",
        f"redis_up {int(redis_up())}",
        "# HELP web_info The running version of the app.",
        "# TYPE web_info gauge",
        f'web_info{{version="{VERSION}"}} 1',
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {resident_memory()}",
        "# HELP web_memory_limit_bytes The container's memory limit (0 when unlimited).",
        "# TYPE web_memory_limit_bytes gauge",
        f"web_memory_limit_bytes {memory_limit()}",
    ]
    return "\n".join(lines) + "\n"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>opskit demo</title></head>
<body><h1>opskit demo</h1>
<p>Version <b id="version">{version}</b> on <b>{host}</b>.</p>
<p>This page has been seen <b id="visits">{visits}</b> times.</p>
</body></html>
"""

# Paths outside this set are counted as "other" so a scanner cannot blow up the label set.
KNOWN_PATHS = {"/", "/health", "/version", "/metrics", "/alert"}


class Handler(BaseHTTPRequestHandler):
    server_version = "opskit-demo"
    # HTTP/1.0 (one request per connection): no idle keep-alive connection can hold up a shutdown
    # or be cut by one while a client reuses it. A stalled client is dropped after the timeout.
    timeout = 10

    def send(self, code: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode()
        # Counted before the client can read the answer: a scrape right after a request sees it.
        path = self.path.split("?")[0]
        key = (path if path in KNOWN_PATHS else "other", code)
        with _counts_lock:
            _counts[key] = _counts.get(key, 0) + 1
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, code: int, data: object) -> None:
        self.send(code, json.dumps(data) + "\n")

    def do_GET(self) -> None:
        global _last_visits
        path = self.path.split("?")[0]
        if path == "/health":
            if HEALTH_FAIL:
                self.send_json(500, {"status": "failing", "reason": "HEALTH_FAIL is set", "version": VERSION})
            elif redis_up():
                self.send_json(200, {"status": "ok", "version": VERSION})
            else:
                self.send_json(503, {"status": "redis unreachable", "version": VERSION})
        elif path == "/version":
            self.send_json(200, {"version": VERSION, "host": HOST})
        elif path == "/metrics":
            self.send(200, metrics(), "text/plain; version=0.0.4")
        elif path == "/":
            try:
                visits = redis("INCR", "visits")
            except RedisError as error:
                self.send(503, f"redis unreachable: {error}\n", "text/plain")
                return
            _last_visits = int(visits) if isinstance(visits, int) else 0
            self.send(200, PAGE.format(version=VERSION, host=HOST, visits=visits), "text/html; charset=utf-8")
        else:
            self.send_json(404, {"error": "not found"})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/alert":
            self.send_json(404, {"error": "not found"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # Alertmanager's webhook: one line per alert in the log is all the demo needs.
        try:
            for alert in json.loads(body or b"{}").get("alerts", []):
                labels, notes = alert.get("labels", {}), alert.get("annotations", {})
                print(
                    f"alert {alert.get('status')} {labels.get('alertname')} runbook={notes.get('runbook')}",
                    file=sys.stderr,
                    flush=True,
                )
        except (ValueError, AttributeError):
            self.send_json(400, {"error": "expected Alertmanager's webhook JSON"})
            return
        self.send_json(200, {"status": "logged"})

    def log_message(self, format: str, *args: object) -> None:
        # Health probes every few seconds would drown the log; keep the requests people make.
        if "/health" not in self.path and "/metrics" not in self.path:
            super().log_message(format, *args)


def main() -> None:
    # All interfaces of the container: the proxy reaches it over the stack network, never published.
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)  # noqa: S104
    # Finish requests in flight on shutdown: a swap retires a container while it still serves.
    server.daemon_threads = False
    server.block_on_close = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"web {VERSION} listening on :{PORT}, redis at {REDIS_HOST}:{REDIS_PORT}", file=sys.stderr, flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
