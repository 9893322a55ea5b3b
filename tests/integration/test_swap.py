"""Blue-green swaps under load on the deployed lab: no failed request, safe failure, safe re-run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import docker
import pytest

from benchmarks.loadgen import Load
from ops.transport import Fleet
from tests.integration.conftest import REPO, Lab, http_get, opskit

pytestmark = pytest.mark.integration


def web_containers(lab: Lab) -> list[tuple[str, str]]:
    """(name, image id) of every web container on the lab's first host, running or not."""
    with Fleet.connect(lab.env, only=[lab.env.hosts[0].name]) as fleet:
        containers = (
            fleet.hosts[0]
            .docker()
            .containers.list(
                all=True, filters={"label": ["com.docker.compose.project=demo", "com.docker.compose.service=web"]}
            )
        )
        return [(c.name, c.image.id) for c in containers]


def proxy_complaints(lab: Lab) -> list[str]:
    """The demo proxy's nginx warnings and errors on the lab's first host (why a request failed)."""
    with Fleet.connect(lab.env, only=[lab.env.hosts[0].name]) as fleet:
        proxies = (
            fleet.hosts[0]
            .docker()
            .containers.list(filters={"label": ["com.docker.compose.project=demo", "com.docker.compose.service=proxy"]})
        )
        lines = [line for c in proxies for line in c.logs(stdout=False, stderr=True, tail=200).decode().splitlines()]
        return [line for line in lines if "[warn]" in line or "[error]" in line][-20:]


def swap(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return opskit(lab.root, "swap", "web", "--env", "itestp", "--host", lab.env.hosts[0].name, *args)


def test_three_swaps_under_load_fail_no_request(deployed_lab: Lab) -> None:
    port = deployed_lab.spec.http_port(1)
    loads = [Load(port, keepalive=False, threads=2).start(), Load(port, keepalive=True, threads=2).start()]
    outcomes = [swap(deployed_lab, "--version", version) for version in ("v2", "v1", "v2")]
    results = [load.stop() for load in loads]
    for outcome in outcomes:
        assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    for result in results:
        assert result.requests > 500
        assert result.failures == 0, (result.examples, proxy_complaints(deployed_lab))
    status, body = http_get(port, "/version")
    assert status == 200 and '"v2"' in body
    assert len(web_containers(deployed_lab)) == 1  # the old ones were retired


def test_a_swap_to_an_unhealthy_image_keeps_the_old_serving(deployed_lab: Lab) -> None:
    local = docker.from_env(version="auto")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = b'FROM opskit-demo/web:v1\nCMD ["sleep", "infinity"]\n'  # never listens: health fails
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    local.images.build(fileobj=context, custom_context=True, tag="opskit-demo/web:broken", rm=True)
    before = web_containers(deployed_lab)
    load = Load(deployed_lab.spec.http_port(1), threads=2).start()
    failed = swap(deployed_lab, "--image", "opskit-demo/web:broken", "--timeout", "40")
    result = load.stop()
    assert failed.returncode == 1
    said = " ".join(failed.stdout.split())  # as read: the line may wrap at the terminal's width
    assert "service web" in said and "the old containers keep serving" in said
    assert result.failures == 0, result.examples
    assert web_containers(deployed_lab) == before


def test_a_swap_killed_half_way_converges_when_run_again(deployed_lab: Lab) -> None:
    command = [sys.executable, "-c", "from ops.cli import main; main()", "swap", "web", "--env", "itestp"]
    command += ["--host", deployed_lab.env.hosts[0].name, "--version", "v1"]
    env = {**os.environ, "OPS_ROOT": str(deployed_lab.root)}
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(web_containers(deployed_lab)) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    process.send_signal(signal.SIGKILL)  # like an SSH drop: no cleanup at all
    process.wait()
    assert len(web_containers(deployed_lab)) == 2  # killed with old and new side by side

    again = swap(deployed_lab, "--version", "v1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "took over a lock whose process is gone" in again.stdout
    containers = web_containers(deployed_lab)
    assert len(containers) == 1
    status, body = http_get(deployed_lab.spec.http_port(1), "/version")
    assert status == 200 and '"v1"' in body
    status_json = opskit(deployed_lab.root, "lock.status", "--env", "itestp", "--json")
    assert '"locked": true' not in status_json.stdout
