"""A stack update on a 3-node swarm against the same update with compose on 1 host, and the time
from a killed node to all of the stack's replicas running again, side by side in one run.

Two labs of this checkout: "benchs" (3 hosts formed into a swarm, stacks/demo-swarm) and "benchc"
(1 host, compose, stacks/demo: the same services and images). Each gets v1, then N updates
alternating v2 and v1 (`inv deploy`, command start to gate passed). Then a worker of the swarm that
runs a web task is killed and the time until every service runs its desired replicas again is
measured (bounded: 120 s), the node is started and provisioned again. Prints each duration and the
ratios.
Run: .venv/bin/python benchmarks/swarm.py [--updates N]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import docker
from common import bench_lab, inv, verdict

from ops.console import RecordingReporter
from ops.deploy.swarm_gate import read_stack, service_states
from ops.provision import provision
from ops.transport import Fleet

UPDATES = int(sys.argv[sys.argv.index("--updates") + 1]) if "--updates" in sys.argv else 4
KILL_BOUND = 120.0


def updates(root: Path | None, env_name: str) -> list[float]:
    assert root is not None
    inv(root, "deploy", "--env", env_name, "--version", "v1")
    return [inv(root, "deploy", "--env", env_name, "--version", ("v2", "v1")[index % 2]) for index in range(UPDATES)]


def main() -> None:
    swarm_spec, swarm_env = bench_lab("benchs", 3, deployed=False, swarm=True)
    compose_spec, _ = bench_lab("benchc", 1, deployed=False)
    swarm_times = updates(swarm_spec.env_root, "benchs")
    compose_times = updates(compose_spec.env_root, "benchc")
    print(f"\n{UPDATES} stack updates (v1 <-> v2, inv deploy: command start to gate passed)")
    print(f"  swarm, 3 nodes:  {', '.join(f'{t:.1f}' for t in swarm_times)} s")
    print(f"  compose, 1 host: {', '.join(f'{t:.1f}' for t in compose_times)} s")
    ratio = statistics.median(swarm_times) / statistics.median(compose_times)
    print(f"  median swarm / compose: {ratio:.2f}")

    with Fleet.connect(swarm_env, only=[swarm_env.hosts[0].name]) as fleet:
        manager = fleet.hosts[0]
        nodes = {n["ID"]: n["Description"]["Hostname"] for n in manager.docker().api.nodes()}
        services, tasks = read_stack(manager, swarm_env.project)
        web = next(s["ID"] for s in services if s["Spec"]["Name"].endswith("_web"))
        victim = next(
            nodes[t["NodeID"]]
            for t in tasks
            if t["ServiceID"] == web and t["DesiredState"] == "running" and not nodes[t["NodeID"]].endswith("1")
        )
        index = int(victim[-1])
        killed = time.monotonic()
        docker.from_env(version="auto").containers.get(swarm_spec.container(index)).kill()
        recovered = None
        while time.monotonic() - killed < KILL_BOUND:
            services, tasks = read_stack(manager, swarm_env.project)
            live = [t for t in tasks if nodes.get(t["NodeID"]) != victim]
            if all(state.ok for state in service_states(swarm_env.project, services, live, set())):
                recovered = time.monotonic() - killed
                break
            time.sleep(0.5)
    docker.from_env(version="auto").containers.get(swarm_spec.container(index)).start()
    provision(swarm_env, RecordingReporter())  # its engine, and the others' firewalls for its new address
    shown = f"{recovered:.1f} s" if recovered is not None else f"more than {KILL_BOUND:.0f} s"
    print(f"\nnode {victim} killed: every replica running again on the others in {shown}")
    print(f"  recovered within {KILL_BOUND:.0f} s: {verdict(recovered is not None)}")
    print(f"  recovery / median compose update: {(recovered or KILL_BOUND) / statistics.median(compose_times):.2f}")


if __name__ == "__main__":
    main()
