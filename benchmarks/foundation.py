"""Foundation speed targets, measured side by side in one run.

- `inv --list` must answer in under 0.5 s (heavy imports are lazy);
- `inv ops.status` on 3 lab hosts must take under 2 s, and about as long as on 1 host
  (hosts are queried in parallel).

Starts (or reuses) a 3-host lab named "bench" in this checkout; `--keep` leaves it running.
Run: .venv/bin/python benchmarks/foundation.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ops.console import RecordingReporter  # noqa: E402
from ops.lab import LabSpec, lab_down, lab_up  # noqa: E402

RUNS = 5


def timed(args: list[str], environ: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=environ, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


def median(args: list[str], environ: dict[str, str]) -> float:
    return statistics.median(timed(args, environ) for _ in range(RUNS))


def main() -> None:
    inv = str(REPO / ".venv" / "bin" / "inv")
    spec = LabSpec("bench", checkout=REPO, hosts=3, env_root=REPO / ".lab" / "bench")
    print("starting a 3-host lab 'bench' ...", flush=True)
    lab_up(spec, RecordingReporter())
    environ = {**os.environ, "OPS_ROOT": str(spec.env_root)}
    env_file = (spec.env_root or REPO) / "env" / "bench.env"
    one_host = env_file.read_text().replace(
        ",".join(f"127.0.0.1:{spec.ssh_port(i)}" for i in (1, 2, 3)), f"127.0.0.1:{spec.ssh_port(1)}"
    )
    (env_file.parent / "bench1.env").write_text(one_host)

    python_start = median([sys.executable, "-c", "pass"], environ)
    inv_list = median([inv, "--list"], environ)
    status_1 = median([inv, "ops.status", "--env", "bench1"], environ)
    status_3 = median([inv, "ops.status", "--env", "bench"], environ)

    print(f"\nmedian of {RUNS} runs each")
    print(f"  python -c pass               {python_start:6.3f} s")
    print(f"  inv --list                   {inv_list:6.3f} s   target < 0.5 s: {'PASS' if inv_list < 0.5 else 'FAIL'}")
    print(f"  inv ops.status, 1 host       {status_1:6.3f} s")
    print(f"  inv ops.status, 3 hosts      {status_3:6.3f} s   target < 2 s: {'PASS' if status_3 < 2 else 'FAIL'}")
    print(f"  ratio 3 hosts / 1 host       {status_3 / status_1:6.2f} x")
    if "--keep" not in sys.argv:
        lab_down(spec, RecordingReporter(), purge=True)


if __name__ == "__main__":
    main()
