"""Deploy and rollback speed, measured side by side in one run on a 3-host lab ("benchd").

- rollback, command start to health gate passed: target under 10 s;
- `inv deploy` of an unchanged release against a bare `docker compose up -d` over SSH on the
  same host: target at most 1.5x. The bare command is timed as a person runs it, a whole
  `ssh host 'cd /opt/demo/current && docker compose ... up -d'` (connection included, as `inv`
  includes its own), and also over an already open connection, for reference;
- deploy to 3 hosts against 1 host: target at most 1.3x.
Run: .venv/bin/python benchmarks/deploy.py
"""

from __future__ import annotations

import statistics
import subprocess
import time

from common import bench_lab, inv, verdict

from ops.deploy.releases import ReleaseStore
from ops.transport import Fleet, openssh_argv

RUNS = 3


def main() -> None:
    spec, env = bench_lab("benchd", 3)
    root = spec.env_root
    assert root is not None
    first = env.hosts[0].name
    inv(root, "deploy", "--env", "benchd", "--version", "v1")  # warm: every host on v1, images present

    with Fleet.connect(env, only=[first]) as fleet:
        host = fleet.hosts[0]
        store = ReleaseStore(host, env.project)
        release = store.get(store.current_id() or "")
        assert release is not None
        bare_command = store.compose_command(release, "up -d --no-build")
        ssh = openssh_argv(host)
        assert ssh is not None, "ssh(1) is needed for the bare baseline"

        def bare_typed() -> float:
            started = time.perf_counter()
            subprocess.run([*ssh, bare_command], check=True, capture_output=True, timeout=300)
            return time.perf_counter() - started

        def bare_open() -> float:
            started = time.perf_counter()
            host.run(bare_command, timeout=300)
            return time.perf_counter() - started

        bare_typed()  # warm: whatever the last deploy left, converged
        bare_s = statistics.median(bare_typed() for _ in range(RUNS))
        bare_open_s = statistics.median(bare_open() for _ in range(RUNS))
    deploy_1 = statistics.median(
        inv(root, "deploy", "--env", "benchd", "--version", "v1", "--host", first) for _ in range(RUNS)
    )
    deploy_3 = statistics.median(inv(root, "deploy", "--env", "benchd", "--version", "v1") for _ in range(RUNS))

    inv(root, "deploy", "--env", "benchd", "--version", "v2")
    rollback_s = inv(root, "rollback", "--env", "benchd")

    print(f"\nmedian of {RUNS} runs each (rollback: one run)")
    print(f"  bare ssh host docker compose up -d, 1 host   {bare_s:6.2f} s")
    print(f"  (the same over an already open connection    {bare_open_s:6.2f} s)")
    print(f"  inv deploy, unchanged release, 1 host        {deploy_1:6.2f} s")
    print(
        f"  ratio deploy / bare compose up               {deploy_1 / bare_s:6.2f} x  target <= 1.5: {verdict(deploy_1 / bare_s <= 1.5)}"
    )
    print(f"  inv deploy, unchanged release, 3 hosts       {deploy_3:6.2f} s")
    print(
        f"  ratio 3 hosts / 1 host                       {deploy_3 / deploy_1:6.2f} x  target <= 1.3: {verdict(deploy_3 / deploy_1 <= 1.3)}"
    )
    print(
        f"  inv rollback (v2 -> v1), 3 hosts, gated      {rollback_s:6.2f} s    target < 10 s: {verdict(rollback_s < 10)}"
    )


if __name__ == "__main__":
    main()
