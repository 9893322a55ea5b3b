"""Images through the local registry and a reverse SSH forward, on provisioned lab hosts: a host
pulls by digest, a later image moves only its new layer, a taken port is one clear line."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from ops.console import RecordingReporter
from ops.deploy.releases import ReleaseStore
from ops.errors import HostError
from ops.images.local_registry import LocalRegistry, PushedImage, ensure_registry, push_image
from ops.transport import Fleet, Host, SSHRunner
from ops.transport.forward import RemoteForward, listening_ports
from tests.integration.conftest import REPO, ProvisionedLab

pytestmark = pytest.mark.integration

REPOSITORY = "itest/layers"
BIG = 3_000_000  # bytes of random data in the shared layer: incompressible, so it shows in rx bytes


@dataclass(frozen=True)
class LayeredImages:
    base: str  # FROM scratch, one 3 MB layer
    app: str  # FROM base, one more small layer


def _build(client: docker.DockerClient, tag: str, dockerfile: str, files: dict[str, bytes]) -> None:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)


@pytest.fixture(scope="module")
def images() -> Iterator[LayeredImages]:
    """Two fresh images (new random bytes each run, so no host or registry has them yet)."""
    client = docker.from_env(version="auto")
    run = os.urandom(4).hex()
    made = LayeredImages(f"opskit-itest/registry-base:{run}", f"opskit-itest/registry-app:{run}")
    _build(client, made.base, "FROM scratch\nCOPY blob.bin /blob.bin\n", {"blob.bin": os.urandom(BIG)})
    _build(client, made.app, f"FROM {made.base}\nCOPY note.txt /note.txt\n", {"note.txt": f"run {run}\n".encode()})
    yield made
    # Only what this module made: the two images and the tags push_image added to them.
    for tag in (made.app, made.base):
        for name in client.images.get(tag).tags:
            client.images.remove(name)
    client.close()


@pytest.fixture(scope="module")
def registry() -> LocalRegistry:
    started = time.monotonic()
    local = ensure_registry(LocalRegistry(REPO), RecordingReporter(), timeout=60)
    print(f"\nensure_registry: {time.monotonic() - started:.1f} s")
    return local


@pytest.fixture
def host(provisioned_lab: ProvisionedLab) -> Iterator[Host]:
    with Fleet.connect(provisioned_lab.env) as fleet:
        yield fleet.hosts[0]


def forward_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("forward-")]


def rx_bytes(host: Host) -> int:
    """Bytes the host received on its network interfaces (not loopback), from its own counters."""
    lines = host.run("cat /proc/net/dev").stdout.splitlines()[2:]
    return sum(int(line.split(":", 1)[1].split()[0]) for line in lines if line.split(":")[0].strip() != "lo")


def pull(host: Host, pushed: PushedImage) -> tuple[str, int]:
    """`docker pull REF` on the host; (its output, bytes the host received meanwhile)."""
    before = rx_bytes(host)
    output = host.run(f"docker pull {pushed.ref}", timeout=120).stdout
    return output, rx_bytes(host) - before


def digests_on(host: Host, ref: str) -> str:
    return host.run(f"docker image inspect --format '{{{{join .RepoDigests \" \"}}}}' {ref}").stdout


def test_a_host_pulls_by_digest_then_only_the_new_layer(
    registry: LocalRegistry, images: LayeredImages, host: Host
) -> None:
    reporter = RecordingReporter()
    started = time.monotonic()
    base = push_image(registry, images.base, REPOSITORY, reporter)
    print(f"first push: {time.monotonic() - started:.1f} s, {base.layers_pushed} layer(s)")
    assert base.ref == f"127.0.0.1:{registry.port}/{REPOSITORY}@{base.digest}"
    assert base.layers_pushed == 1

    with RemoteForward(host.runner.ssh_client(), registry.port, "127.0.0.1", registry.port, where=host.name) as forward:
        started = time.monotonic()
        forward.wait_until_answering("/v2/")
        print(f"forward answering after {time.monotonic() - started:.2f} s")
        output, received = pull(host, base)
        assert base.ref in digests_on(host, base.ref)
        assert "Pull complete" in output
        assert received > BIG, received  # the whole layer crossed, counted by the host itself

        app = push_image(registry, images.app, REPOSITORY, reporter)
        assert (app.layers_pushed, app.layers_present) == (1, 1)  # the registry kept the base layer
        output, received = pull(host, app)
        assert output.count("Already exists") == 1 and output.count("Pull complete") == 1, output
        assert received < 1_000_000, received  # the small layer and a manifest, not 3 MB again
        assert app.ref in digests_on(host, app.ref)
        print(f"forward carried {forward.bytes_to_host} bytes in {forward.connections} connections")
    assert forward_threads() == []
    assert registry.port not in listening_ports(host.run("cat /proc/net/tcp /proc/net/tcp6").stdout)


def test_a_stopped_registry_starts_again_with_its_blobs(registry: LocalRegistry, images: LayeredImages) -> None:
    client = docker.from_env(version="auto")
    try:
        client.containers.get(registry.container).stop(timeout=5)
    finally:
        client.close()
    reporter = RecordingReporter()
    ensure_registry(registry, reporter)
    assert [(e.step, e.status) for e in reporter.events if e.step == "registry"] == [("registry", "changed")]
    again = push_image(registry, images.base, REPOSITORY, reporter)
    assert (again.layers_pushed, again.layers_present) == (0, 1)


def test_a_port_taken_on_the_host_is_one_line_and_leaves_nothing_running(
    registry: LocalRegistry, provisioned_lab: ProvisionedLab, host: Host
) -> None:
    other: Any = SSHRunner.for_environment(host.spec, provisioned_lab.env)  # a second deploy's connection
    try:
        with RemoteForward(
            host.runner.ssh_client(), registry.port, "127.0.0.1", registry.port, where=host.name
        ) as first:
            with (
                pytest.raises(HostError) as raised,
                RemoteForward(other.ssh_client(), registry.port, "127.0.0.1", registry.port, where=host.name),
            ):
                pass
            line = raised.value.one_line()
            assert line.startswith(
                f"{host.name}: cannot forward port {registry.port}: 127.0.0.1:{registry.port} on the host is already in use"
            ), line
            assert "\n" not in line
            first.wait_until_answering()  # the forward that held the port is untouched
        assert forward_threads() == []
        assert registry.port not in listening_ports(host.run("cat /proc/net/tcp /proc/net/tcp6").stdout)
        transport = other.ssh_client().get_transport()
        assert transport.is_active()  # the refused connection is still usable
    finally:
        other.close()


def test_a_deploy_whose_forward_port_is_taken_on_a_host_exits_1_and_that_host_keeps_its_release(
    deployed_lab: ProvisionedLab,
) -> None:
    """The default image source on a host where the registry's port is already forwarded (another
    deploy's tunnel, or any program): one line naming the host and the port, exit 1, the host still
    serves its release, no lock left; the other host is not held back."""
    import json

    from tests.integration.conftest import http_get, opskit

    lab = deployed_lab
    registry = LocalRegistry(lab.env.root)
    with Fleet.connect(lab.env) as fleet:
        before = [ReleaseStore(h, lab.env.project).current_id() for h in fleet.hosts]
        blocked = fleet.hosts[0]
        squatter: Any = SSHRunner.for_environment(blocked.spec, lab.env)
        try:
            with RemoteForward(squatter.ssh_client(), registry.port, "127.0.0.1", 9, where=blocked.name):
                done = opskit(lab.root, "deploy", "--env", "itestp", "--version", "v7-forward")
        finally:
            squatter.close()
        after = [ReleaseStore(h, lab.env.project).current_id() for h in fleet.hosts]
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot forward port {registry.port}" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert after[0] == before[0]  # the blocked host still runs its release
    status, body = http_get(lab.spec.http_port(1), "/version")
    assert status == 200 and json.loads(body)["version"] != "v7-forward"
    assert after[1] != before[1]  # the other host was not held back
    locks = opskit(lab.root, "lock.status", "--env", "itestp", "--json")
    assert all(not row["locked"] for row in json.loads(locks.stdout).values())
    assert opskit(lab.root, "deploy", "--env", "itestp", "--version", "v1").returncode == 0
