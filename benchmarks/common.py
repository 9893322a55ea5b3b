"""Shared set-up for the benchmarks: a lab of this checkout, provisioned, with the demo deployed.

Idempotent: a second run reuses the hosts (provisioning and deploy are no-ops then).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ops.config import Environment, load_environment  # noqa: E402
from ops.console import RecordingReporter  # noqa: E402
from ops.lab import LabSpec, lab_up  # noqa: E402


def bench_lab(
    name: str, hosts: int, *, provisioned: bool = True, deployed: bool = True, swarm: bool = False
) -> tuple[LabSpec, Environment]:
    from ops.deploy import DeployOptions, deploy
    from ops.deploy.releases import ReleaseStore
    from ops.provision import provision
    from ops.transport import Fleet

    spec = LabSpec(name, checkout=REPO, hosts=hosts, env_root=REPO / ".lab" / name, swarm=swarm)
    print(f"lab {name}: {hosts} hosts ...", flush=True)
    lab_up(spec, RecordingReporter())
    env = load_environment(name, spec.env_root or REPO, os.environ)
    if provisioned:
        result = provision(env, RecordingReporter())
        assert result.ok, [str(r.error) for r in result.failed]
    if deployed:
        with Fleet.connect(env) as fleet:
            current = fleet.map(lambda host: ReleaseStore(host, env.project).current_id())
        if not all(outcome.value for outcome in current.outcomes):
            assert deploy(env, RecordingReporter(), DeployOptions(version="v1")).ok
    return spec, env


def inv(env_root: Path, *args: str) -> float:
    """Run `inv ARGS` for the lab's environment; seconds it took (exits on failure)."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "inv"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OPS_ROOT": str(env_root)},
        cwd=REPO,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"inv {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
