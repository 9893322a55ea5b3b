"""A new user's first hour (issue 18): the built wheel in a fresh virtualenv, `opskit init` in an empty
directory (no git), a lab of one host, provisioning, a deploy of the sample stack reached over HTTP.
The same lab then shows that a host stopped and started comes back as a server does, and that lab.up
keeps the user's own lines of env/lab.env. One host is provisioned for the whole module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.console import RecordingReporter
from ops.images.local_registry import LocalRegistry, remove_registry
from ops.lab import LabSpec, lab_down
from tests.integration.conftest import http_get

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STACK = "inhello"  # images inhello/web:*, removed at the end; never a name someone else uses


@dataclass(frozen=True)
class NewRepo:
    root: Path
    python: Path  # the fresh virtualenv's interpreter (opskit from the wheel)
    spec: LabSpec

    def opskit(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.python.parent / "opskit"), *args, timeout=timeout)

    def inv(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.python), "-m", "invoke", *args)

    def run(self, *command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k not in ("OPS_ROOT", "OPS_ENV", "VIRTUAL_ENV")}
        environ["COLUMNS"] = "200"
        return subprocess.run(
            command,
            cwd=self.root,
            env=environ,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )


def built_wheel(scratch: Path) -> Path:
    """dist/'s wheel when `nox -s build` made it after the last change to ops/ (as in CI), else a new one."""
    sources = [p for p in (REPO / "ops").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    newest = max(p.stat().st_mtime for p in [*sources, REPO / "pyproject.toml"])
    wheels = sorted((REPO / "dist").glob("opskit-*-py3-none-any.whl"), key=lambda p: p.stat().st_mtime)
    if wheels and wheels[-1].stat().st_mtime > newest:
        return wheels[-1]
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(scratch), str(REPO)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return next(scratch.glob("opskit-*.whl"))


def fresh_virtualenv(where: Path, wheel: Path) -> Path:
    """A new virtualenv with opskit installed from the wheel by pip. Its dependencies are this venv's
    (a .pth line; pip from PyPI takes 45 s here), and `pip check` proves the wheel asks for no more."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    )
    (Path(site.stdout.strip()) / "opskit-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--isolated", "--python", str(python)]
    for args in (["install", "-q", "--no-deps", "--no-index", str(wheel)], ["check"]):
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return python


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NewRepo]:
    scratch = tmp_path_factory.mktemp("wheel")
    python = fresh_virtualenv(tmp_path_factory.mktemp("venv"), built_wheel(scratch))
    root = tmp_path_factory.mktemp("myinfra")  # an empty directory, not a git repository
    new = NewRepo(root, python, LabSpec("lab", checkout=root, hosts=1))
    yield new
    lab_down(new.spec, RecordingReporter(), purge=True)
    remove_registry(LocalRegistry(root))
    import docker

    client = docker.from_env(version="auto")
    for image in client.images.list(name=f"{STACK}/web"):
        client.images.remove(image.id, force=True)
    client.close()


def test_a_new_repository_deploys_its_sample_stack_on_the_lab(repo: NewRepo) -> None:
    init = repo.opskit("init", "--stack", STACK)
    assert init.returncode == 0, init.stderr
    assert init.stdout.rstrip().endswith("opskit lab.up\n  opskit provision.lab\n  opskit deploy.lab")
    for step in (("lab.up", "--hosts", "1"), ("provision.lab",), ("deploy.lab",)):
        done = repo.opskit(*step)
        assert done.returncode == 0, f"opskit {' '.join(step)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    status, body = http_get(repo.spec.http_port(1))
    assert status == 200 and f"{STACK} runs" in body
    assert http_get(repo.spec.http_port(1), "/version") == (200, "v1\n")

    before = tree(repo.root)
    again = repo.opskit("init", "--stack", STACK)
    assert again.returncode == 0 and "0 files created" in again.stdout
    assert tree(repo.root) == before


def test_a_lab_host_started_again_comes_back_as_a_server_would(repo: NewRepo) -> None:
    assert repo.opskit("lab.down").returncode == 0
    up = repo.opskit("lab.up", "--hosts", "1")
    assert up.returncode == 0, up.stderr

    # Its engine, firewall and fail2ban are running, and the stack restarted: no provisioning needed.
    doctor = repo.opskit("ops.doctor", "--env", "lab")
    deadline = time.monotonic() + 60
    while doctor.returncode != 0 and time.monotonic() < deadline:  # a container may still be starting
        time.sleep(2)
        doctor = repo.opskit("ops.doctor", "--env", "lab")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert " 0 fail" in doctor.stdout and "engine" in doctor.stdout
    import docker

    host = docker.from_env(version="auto").containers.get(repo.spec.container(1))
    code, output = host.exec_run(["sh", "-c", "ufw status | head -1; fail2ban-client status | tail -1"])
    assert code == 0 and "Status: active" in output.decode() and "sshd" in output.decode()
    assert http_get(repo.spec.http_port(1))[0] == 200


def test_lab_up_keeps_the_users_lines_of_env_lab(repo: NewRepo) -> None:
    env_file = repo.root / "env" / "lab.env"
    shutil.copytree(repo.root / "stacks" / STACK, repo.root / "stacks" / "mine")
    edited = (
        env_file.read_text().replace(f"STACK_DIR=stacks/{STACK}", "# my own stack\nSTACK_DIR=stacks/mine")
        + "HEALTH_TIMEOUT=90\nSTACK_VARS=HTTP_PORT=80,GREETING=hello\n"
    )
    hosts_line = next(line for line in edited.splitlines() if line.startswith("HOSTS="))
    env_file.write_text(edited.replace(hosts_line, "HOSTS=10.1.2.3"))

    done = repo.inv("lab.up", "--hosts", "1")  # `inv` reads the tasks.py that init wrote

    assert done.returncode == 0, done.stdout + done.stderr
    assert env_file.read_text() == edited  # HOSTS set back, every other line as the user left it
    assert "set HOSTS in" in done.stdout and "other lines kept" in done.stdout
