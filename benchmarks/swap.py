"""Blue-green swap under load against a plain compose recreate, side by side in one run.

Load through the proxy of the first host of a lab ("benchd") from separate threads, with and
without keep-alive, while 10 swaps alternate v1 and v2; then the same load while 10 plain
`docker compose up -d --force-recreate web` run as the baseline. Prints requests, failures
(non-2xx and connection errors) and each swap's duration. Target: 0 failures over the 10 swaps,
each within health-gate time + drain + 5 s.
Run: .venv/bin/python benchmarks/swap.py [--swaps N]
"""

from __future__ import annotations

import sys
import time

from common import bench_lab, inv, verdict
from loadgen import Load, LoadResult

from ops.deploy.releases import ReleaseStore
from ops.transport import Fleet

SWAPS = int(sys.argv[sys.argv.index("--swaps") + 1]) if "--swaps" in sys.argv else 10


def under_load(port: int, action: object, count: int) -> tuple[list[float], LoadResult, LoadResult]:
    plain = Load(port, keepalive=False, threads=2, max_seconds=900).start()
    kept = Load(port, keepalive=True, threads=2, max_seconds=900).start()
    durations = []
    for index in range(count):
        started = time.perf_counter()
        action(index)  # type: ignore[operator]
        durations.append(time.perf_counter() - started)
    return durations, plain.stop(), kept.stop()


def report(title: str, durations: list[float], plain: LoadResult, kept: LoadResult) -> int:
    failures = plain.failures + kept.failures
    print(f"\n{title}")
    print(f"  durations (s): {', '.join(f'{d:.1f}' for d in durations)}")
    for name, result in (("no keep-alive", plain), ("keep-alive", kept)):
        print(
            f"  {name:<14} {result.requests:7d} requests  {result.failures:4d} failed  {result.rate:6.0f} req/s"
            + (f"  e.g. {result.examples[0]}" if result.examples else "")
        )
    return failures


def main() -> None:
    spec, env = bench_lab("benchd", 1 if "--one" in sys.argv else 3)
    root = spec.env_root
    assert root is not None
    first = env.hosts[0].name
    port = spec.http_port(1)
    drain = env.deploy.swap_drain
    inv(root, "deploy", "--env", "benchd", "--version", "v1", "--host", first)

    def swap(index: int) -> None:
        inv(root, "swap", "web", "--env", "benchd", "--host", first, "--version", ("v2", "v1")[index % 2])

    swaps, plain, kept = under_load(port, swap, SWAPS)
    swap_failures = report(f"{SWAPS} blue-green swaps (inv swap web, v1 <-> v2)", swaps, plain, kept)

    with Fleet.connect(env, only=[first]) as fleet:
        host = fleet.hosts[0]
        store = ReleaseStore(host, env.project)
        release = store.get(store.current_id() or "")
        assert release is not None
        recreate = store.compose_command(release, "up -d --no-deps --force-recreate --no-build web")
        baseline, plain_b, kept_b = under_load(port, lambda _: host.run(recreate, timeout=300), SWAPS)
    report(
        f"{SWAPS} plain recreates (docker compose up -d --force-recreate web), the baseline", baseline, plain_b, kept_b
    )

    # The gate needs web's healthcheck to pass once after start (interval 3 s) plus the scale-up.
    budget = 3 * 3 + drain + 5
    slowest = max(swaps)
    print(f"\nswap failures: {swap_failures}  target 0: {verdict(swap_failures == 0)}")
    print(f"slowest swap: {slowest:.1f} s (command start to old retired, incl. local validation)")
    print(
        f"  target within gate ({3 * 3:.0f} s) + drain ({drain:.0f} s) + 5 s = {budget:.0f} s: {verdict(slowest <= budget)}"
    )


if __name__ == "__main__":
    main()
