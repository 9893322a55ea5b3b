"""On-call speed targets, measured side by side in one run.

- `inv ops.status` and `inv ops.doctor` on 3 lab hosts with the demo stack deployed must each take
  under 3 s, and about as long as on 1 host (hosts are queried in parallel, one SSH round trip
  each for the stack; memory and CPU come from cgroups, not `docker stats`);
- for scale: `docker stats --no-stream` alone on one host, which the stack columns replace.

Starts (or reuses) a 3-host lab "bench" in this checkout, provisions it and deploys the demo stack
(the first run takes minutes); `--keep` leaves it running. `--env-root DIR --env NAME` measures an
environment that already runs the stack instead (e.g. the integration lab kept with OPS_KEEP_LAB=1).
Run: .venv/bin/python benchmarks/oncall.py [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ops.config import load_environment  # noqa: E402
from ops.console import RecordingReporter  # noqa: E402
from ops.lab import LabSpec, lab_down, lab_up  # noqa: E402
from ops.transport import Fleet  # noqa: E402

RUNS = 5
TARGET = 3.0


def timed(args: list[str], environ: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=environ, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1) or not done.stdout:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


def median(args: list[str], environ: dict[str, str]) -> float:
    return statistics.median(timed(args, environ) for _ in range(RUNS))


def bench_lab() -> tuple[Path, str, LabSpec]:
    from ops.deploy import DeployOptions, deploy
    from ops.provision import provision

    spec = LabSpec("bench", checkout=REPO, hosts=3, env_root=REPO / ".lab" / "bench")
    print("starting a 3-host lab 'bench' ...", flush=True)
    lab_up(spec, RecordingReporter())
    root = spec.env_root or REPO
    env_file = root / "env" / "bench.env"
    if "STACK_DIR" not in env_file.read_text():
        env_file.write_text(env_file.read_text() + f"STACK_DIR={REPO / 'stacks' / 'demo'}\nPROJECT=demo\n")
    env = load_environment("bench", root, os.environ)
    with Fleet.connect(env) as fleet:
        deployed = fleet.map(lambda host: host.run("readlink /opt/demo/current", check=False).ok)
    if not all(outcome.value for outcome in deployed.outcomes):
        print("provisioning and deploying the demo stack (minutes) ...", flush=True)
        assert provision(env, RecordingReporter()).ok
        assert deploy(env, RecordingReporter(), DeployOptions(version="v1")).ok
    return root, "bench", spec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--env-root", type=Path)
    parser.add_argument("--env")
    args = parser.parse_args()
    inv = str(REPO / ".venv" / "bin" / "inv")
    spec = None
    if args.env_root and args.env:
        root, name = args.env_root.resolve(), args.env
    else:
        root, name, spec = bench_lab()
    env = load_environment(name, root, os.environ)
    one = root / "env" / f"{name}1.env"
    text = (root / "env" / f"{name}.env").read_text()
    hosts_line = next(line for line in text.splitlines() if line.startswith("HOSTS="))
    one.write_text(text.replace(hosts_line, f"HOSTS={env.hosts[0].address}:{env.hosts[0].port}"))
    environ = {**os.environ, "OPS_ROOT": str(root)}
    try:
        results = {}
        for task in ("ops.status", "ops.doctor"):
            results[(task, 1)] = median([inv, task, "--env", f"{name}1"], environ)
            results[(task, len(env.hosts))] = median([inv, task, "--env", name], environ)
        with Fleet.connect(env, only=[env.hosts[0].name]) as fleet:
            host = fleet.hosts[0]
            host.run("true")
            started = time.perf_counter()
            host.run("docker stats --no-stream $(docker ps -q) >/dev/null")
            stats = time.perf_counter() - started
    finally:
        one.unlink()
    n = len(env.hosts)
    print(f"\nmedian of {RUNS} runs each, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for task in ("ops.status", "ops.doctor"):
        many = results[(task, n)]
        verdict = "PASS" if many < TARGET else "FAIL"
        print(f"  inv {task:<11} 1 host   {results[(task, 1)]:6.2f} s")
        print(f"  inv {task:<11} {n} hosts  {many:6.2f} s   target < {TARGET:.0f} s: {verdict}")
        print(f"  ratio {n} hosts / 1 host       {many / results[(task, 1)]:6.2f} x")
    print(f"  docker stats --no-stream (1 host, for scale) {stats:6.2f} s")
    if spec is not None and not args.keep:
        lab_down(spec, RecordingReporter(), purge=True)


if __name__ == "__main__":
    main()
