"""The demo web app, run in-process against a fake Redis speaking RESP: counts visits, reports
its version, and its /health follows Redis (and HEALTH_FAIL). No Docker needed.
"""

from __future__ import annotations

import importlib.util
import json
import socketserver
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

APP = Path(__file__).resolve().parents[2] / "stacks" / "demo" / "web" / "app.py"


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_web_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeRedis(socketserver.ThreadingTCPServer):
    """Just enough Redis for the app: PING and INCR, one command per connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeRedisHandler)
        self.counters: dict[str, int] = {}


class FakeRedisHandler(socketserver.StreamRequestHandler):
    server: FakeRedis

    def handle(self) -> None:
        count = int(self.rfile.readline()[1:])
        args = []
        for _ in range(count):
            self.rfile.readline()  # $<length>
            args.append(self.rfile.readline().rstrip(b"\r\n").decode())
        if args[0] == "PING":
            self.wfile.write(b"+PONG\r\n")
        elif args[0] == "INCR":
            value = self.server.counters.get(args[1], 0) + 1
            self.server.counters[args[1]] = value
            self.wfile.write(b":%d\r\n" % value)
        else:
            self.wfile.write(b"-ERR unknown command\r\n")


@pytest.fixture
def fake_redis() -> Iterator[FakeRedis]:
    server = FakeRedis()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def app(fake_redis: FakeRedis, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = _load_app()
    monkeypatch.setattr(module, "REDIS_HOST", "127.0.0.1")
    monkeypatch.setattr(module, "REDIS_PORT", fake_redis.server_address[1])
    monkeypatch.setattr(module, "VERSION", "v9")
    return module


@pytest.fixture
def base_url(app: ModuleType) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), app.Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _get(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_each_visit_increments_the_counter_in_redis(base_url: str, fake_redis: FakeRedis) -> None:
    first, second = _get(f"{base_url}/"), _get(f"{base_url}/")
    assert first[0] == second[0] == 200
    assert 'id="visits">1<' in first[1] and 'id="visits">2<' in second[1]
    assert 'id="version">v9<' in second[1]
    assert fake_redis.counters == {"visits": 2}


def test_version_reports_version_and_host(base_url: str) -> None:
    status, body = _get(f"{base_url}/version")
    assert status == 200
    data = json.loads(body)
    assert data["version"] == "v9" and data["host"]


def test_health_follows_redis(base_url: str, app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _get(f"{base_url}/health")[0] == 200
    # A port nothing listens on: Redis is gone.
    monkeypatch.setattr(app, "REDIS_PORT", 1)
    status, body = _get(f"{base_url}/health")
    assert status == 503 and json.loads(body)["status"] == "redis unreachable"
    assert _get(f"{base_url}/")[0] == 503


def test_health_fail_forces_500_even_with_redis_up(
    base_url: str, app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "HEALTH_FAIL", True)
    status, body = _get(f"{base_url}/health")
    assert status == 500 and json.loads(body)["version"] == "v9"


def test_metrics_are_prometheus_text(base_url: str) -> None:
    _get(f"{base_url}/")
    status, body = _get(f"{base_url}/metrics")
    assert status == 200
    assert "redis_up 1" in body.splitlines()
    assert "web_visits 1" in body.splitlines()
    assert 'web_requests_total{path="/",code="200"} 1' in body
    assert 'web_info{version="v9"} 1' in body


def test_unknown_paths_are_counted_as_other(base_url: str) -> None:
    assert _get(f"{base_url}/wp-admin")[0] == 404
    assert 'web_requests_total{path="other",code="404"} 1' in _get(f"{base_url}/metrics")[1]


def test_alert_webhook_is_accepted(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    payload = {
        "alerts": [{"status": "firing", "labels": {"alertname": "RedisDown"}, "annotations": {"runbook": "redis-down"}}]
    }
    status, _ = _get(f"{base_url}/alert", json.dumps(payload).encode())
    assert status == 200
    assert "alert firing RedisDown runbook=redis-down" in capsys.readouterr().err
    assert _get(f"{base_url}/alert", b"not json")[0] == 400


def test_redis_errors_are_raised(app: ModuleType) -> None:
    with pytest.raises(app.RedisError, match="unknown command"):
        app.redis("FLUSHALL")
