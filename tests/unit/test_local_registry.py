"""The local registry's pure parts: its port per checkout, refs and digests, the push stream, and
how it tells a registry from any other HTTP server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.images.local_registry import (
    REGISTRY_CONFIG,
    REGISTRY_DOCKERFILE,
    LocalRegistry,
    PushedImage,
    RegistryError,
    answers,
    parse_pull_ref,
    pull_ref,
    read_push_stream,
)
from ops.lab import LabSpec

DIGEST = "sha256:" + "ab12" * 16


def test_the_port_follows_the_checkout_and_never_meets_a_lab_port() -> None:
    one, other = LocalRegistry(Path("/srv/a/opskit")), LocalRegistry(Path("/srv/b/opskit"))
    assert one.port == LocalRegistry(Path("/srv/a/opskit")).port  # stable across runs
    assert one.port != other.port and one.container != other.container and one.volume != other.volume
    lab_ports = set()
    for n in range(300):
        checkout = Path(f"/work/checkout-{n}")
        for name in ("demo", "itest", "itestp"):
            spec = LabSpec(name, checkout=checkout, hosts=9)
            lab_ports |= {spec.ssh_port(i) for i in range(1, 10)} | {spec.http_port(i) for i in range(1, 10)}
    registry_ports = {LocalRegistry(Path(f"/work/checkout-{n}")).port for n in range(300)}
    assert not registry_ports & lab_ports
    # below the kernel's ephemeral range, so no outgoing connection ever holds one
    assert all(10000 <= port < 32768 for port in registry_ports | lab_ports)
    assert one.address == f"127.0.0.1:{one.port}" and one.url == f"http://127.0.0.1:{one.port}"


def test_pull_refs_are_checked_and_read_back() -> None:
    ref = pull_ref("127.0.0.1:20590", "demo/web", DIGEST)
    assert ref == f"127.0.0.1:20590/demo/web@{DIGEST}"
    assert parse_pull_ref(ref) == ("127.0.0.1:20590", "demo/web", DIGEST)
    assert PushedImage("127.0.0.1:20590", "demo/web", DIGEST).ref == ref
    with pytest.raises(RegistryError, match="not a repository digest"):
        pull_ref("127.0.0.1:20590", "demo/web", "sha256:abc")
    with pytest.raises(RegistryError, match="not a valid repository name"):
        pull_ref("127.0.0.1:20590", "Demo/Web", DIGEST)
    for bad in (
        f"registry.example.com/web@{DIGEST}",
        "127.0.0.1:20590/demo/web:v1",
        f"127.0.0.1:20590/web@{DIGEST[:-1]}",
    ):
        with pytest.raises(RegistryError, match="not a local registry ref"):
            parse_pull_ref(bad)


PUSH_STREAM = [
    {"status": "The push refers to repository [127.0.0.1:20590/demo/web]"},
    {"status": "Preparing", "progressDetail": {}, "id": "aaa"},
    {"status": "Preparing", "progressDetail": {}, "id": "bbb"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "aaa"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 2048}, "id": "bbb"},
    {"status": "Pushing", "progressDetail": {"current": 2048, "total": 2048}, "id": "bbb"},
    {"status": "Pushing", "progressDetail": {"current": 2048, "total": 2048}, "id": "bbb"},
    {"status": "Pushed", "progressDetail": {}, "id": "bbb"},
    {"status": f"3f2a: digest: {DIGEST} size: 739"},
    {"progressDetail": {}, "aux": {"Tag": "3f2a", "Digest": DIGEST, "Size": 739}},
]


def test_the_push_stream_gives_the_digest_layer_counts_and_byte_progress() -> None:
    sent: list[int] = []
    pushed = read_push_stream(PUSH_STREAM, "127.0.0.1:20590", "demo/web", sent.append)
    assert pushed == PushedImage("127.0.0.1:20590", "demo/web", DIGEST, layers_pushed=1, layers_present=1)
    assert sum(sent) == 2048 and sent == [512, 1536]


def test_a_push_stream_error_or_missing_digest_is_one_line_naming_the_registry() -> None:
    failing = [*PUSH_STREAM[:5], {"errorDetail": {"message": "write /var/lib/x: no space left on device"}}]
    with pytest.raises(RegistryError) as raised:
        read_push_stream(failing, "127.0.0.1:20590", "demo/web", lambda n: None)
    line = raised.value.one_line()
    assert line.startswith("127.0.0.1:20590: push failed: write /var/lib/x: no space left on device")
    assert "disk is full" in line and "\n" not in line
    with pytest.raises(RegistryError, match="ended without a repository digest"):
        read_push_stream(PUSH_STREAM[:-1], "127.0.0.1:20590", "demo/web", lambda n: None)


def test_the_recipe_is_debians_registry_with_deletes_on_and_loopback_data() -> None:
    assert "FROM debian:trixie-slim" in REGISTRY_DOCKERFILE
    assert "docker-registry" in REGISTRY_DOCKERFILE and "USER docker-registry" in REGISTRY_DOCKERFILE
    assert '"/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"' in REGISTRY_DOCKERFILE
    assert "delete:\n    enabled: true" in REGISTRY_CONFIG


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, str]]]:
    """An HTTP server on 127.0.0.1 whose /v2/ answer headers the test chooses."""
    headers: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = int(headers.get("status", "200"))
            self.send_response(status)
            for name, value in headers.items():
                if name != "status":
                    self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", headers
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_only_a_distribution_registry_counts_as_answering(http_server: tuple[str, dict[str, str]]) -> None:
    url, headers = http_server
    assert not answers(url)  # some other web server on the port
    headers["Docker-Distribution-Api-Version"] = "registry/2.0"
    assert answers(url)
    headers["status"] = "401"  # a registry that wants a login still answers
    assert answers(url)
    del headers["Docker-Distribution-Api-Version"]
    assert not answers(url)
    assert not answers("http://127.0.0.1:9")  # nothing listens
