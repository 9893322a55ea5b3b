"""The integration tests' own labs, named after this checkout: real sshd, real Docker.

"itest" (bare hosts: hosts and provisioning tests), "itestp" (provisioned, the demo stack
deployed: deploy, swap, backup and on-call tests) and "itests" (3 hosts formed into a Docker Swarm:
swarm provisioning, on-call and deploy tests). They never share containers or ports with the
demo lab of the same checkout or with other checkouts. They are purged at the end of the session
unless OPS_KEEP_LAB=1, which also makes the next session reuse them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.config import Environment, load_environment
from ops.console import RecordingReporter
from ops.images.local_registry import LocalRegistry, remove_registry
from ops.lab import LabSpec, lab_down, lab_up
from tests.cli import opskit

__all__ = ["Lab", "opskit"]

REPO = Path(__file__).resolve().parents[2]


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Two groups for `pytest -n 2` (nox -s integration): every test file that uses the provisioned
    "itestp" lab in one process, the others (the bare, swarm and throwaway labs) in the other, so
    each session-scoped lab is made by exactly one process and the two halves take about as long.
    (xdist's own --dist loadgroup marks do not reach its scheduler under pytest 9.2.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByLab(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lab_group(nodeid.split("::")[0])

    return ByLab(config, log)


@functools.cache
def lab_group(test_file: str) -> str:
    text = (REPO / test_file).read_text()
    return "itestp" if "provisioned_lab" in text or "deployed_lab" in text else "others"


@dataclass(frozen=True)
class Lab:
    spec: LabSpec
    env: Environment

    @property
    def root(self) -> Path:
        assert self.spec.env_root is not None
        return self.spec.env_root


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    spec = LabSpec("itest", checkout=REPO, hosts=2, env_root=REPO / ".lab" / "itest")
    lab_up(spec, RecordingReporter())
    yield Lab(spec, load_environment("itest", spec.env_root or REPO, os.environ))
    if os.environ.get("OPS_KEEP_LAB") != "1":
        lab_down(spec, RecordingReporter(), purge=True)


def write_env(root: Path, name: str, text: str) -> Path:
    (root / "env").mkdir(parents=True, exist_ok=True)
    path = root / "env" / f"{name}.env"
    path.write_text(text)
    return path


ProvisionedLab = Lab


def provisioned(spec: LabSpec, extra: str = "") -> Iterator[Lab]:
    """The lab of spec provisioned once (extra: lines added to its env file), purged afterwards."""
    from ops.provision import provision

    if os.environ.get("OPS_KEEP_LAB") != "1":
        # Fresh servers, whatever an earlier run left; OPS_KEEP_LAB=1 reuses the kept lab (a
        # faster loop while developing: provisioning is then a no-op).
        lab_down(spec, RecordingReporter(), purge=True)
    try:  # a lab that failed half way up is removed too
        lab_up(spec, RecordingReporter())
        if extra:
            with spec.env_file.open("a") as env_file:
                env_file.write(extra)
        env = load_environment(spec.name, spec.env_root or REPO, os.environ)
        result = provision(env, RecordingReporter())
        assert result.ok, [(report.failed_step, str(report.error), report.output) for report in result.failed]
        yield Lab(spec, env)
    finally:
        if os.environ.get("OPS_KEEP_LAB") != "1":
            lab_down(spec, RecordingReporter(), purge=True)
            remove_registry(LocalRegistry(spec.env_root or REPO))  # the one its deploys pushed to, if any


@pytest.fixture(scope="session")
def provisioned_lab() -> Iterator[Lab]:
    """Two hosts provisioned once for the session (test_provision.py checks provisioning itself)."""
    yield from provisioned(LabSpec("itestp", checkout=REPO, hosts=2, env_root=REPO / ".lab" / "itestp"))


# Steps a swarm's tests never look at: left out to keep the fixture's provisioning short.
SWARM_LAB_SKIP = "PROVISION_SKIP=unattended-upgrades fail2ban time\n"


@pytest.fixture(scope="session")
def swarm_lab() -> Iterator[Lab]:
    """Three hosts provisioned once for the session with ORCHESTRATOR=swarm: host 1 the manager
    (node label opskit.role.manager=true), hosts 2 and 3 workers (opskit.role.worker=true)."""
    spec = LabSpec("itests", checkout=REPO, hosts=3, env_root=REPO / ".lab" / "itests", swarm=True)
    yield from provisioned(spec, SWARM_LAB_SKIP)


@pytest.fixture(scope="session")
def deployed_lab(provisioned_lab: Lab) -> Lab:
    """The provisioned lab with the demo stack deployed as v1 (tests may deploy other versions)."""
    from ops.deploy import DeployOptions, deploy

    result = deploy(provisioned_lab.env, RecordingReporter(), DeployOptions(version="v1"))
    assert result.ok, result.as_dict()
    return provisioned_lab


def http_get(port: int, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path as a user's browser would; (status, body)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
