"""How many bytes reach each host, and how fast, with IMAGE_SOURCE=registry against send, side by
side in one run on a 3-host lab ("benchi"). Bytes are read from each host's own network counters
(/proc/net/dev inside the lab host, read through the local engine), not from opskit's arithmetic.

For each source, on hosts emptied of the demo stack and every image:
  (a) the first deploy of v1;                              target: registry no slower than send + 10 %
  (b) v1 -> v2, which changes web's image config only;     target: registry under 1 MB per host
  (c) a one-file change of web's code (app.py), first to 1 host, then another one to 3 hosts;
      target: registry at most twice the changed layer + 1 MB per host, and 3 hosts at most 1.3x
      the time of 1 host.
Run: .venv/bin/python benchmarks/images.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import REPO, bench_lab, inv, verdict

from ops.lab import LabSpec
from ops.transport import Fleet
from ops.transport.docker import local_client

SOURCES = ("send", "registry")
HOSTS = 3
# Every container, image, volume and release of the demo on a host: as a fresh server has them.
EMPTY_HOST = (
    "docker ps -aq | xargs -r docker rm -f >/dev/null; docker volume prune -af >/dev/null;"
    " docker image ls -aq | xargs -r docker rmi -f >/dev/null 2>&1; docker builder prune -af >/dev/null 2>&1;"
    " rm -rf /opt/demo/releases /opt/demo/current; true"
)


def received(spec: LabSpec) -> list[int]:
    """Bytes each lab host has received on its network interface so far (its own counters)."""
    client = local_client()
    try:
        counts = []
        for index in range(1, spec.hosts + 1):
            output = client.containers.get(spec.container(index)).exec_run(["cat", "/proc/net/dev"]).output.decode()
            counts.append(sum(int(line.split(":")[1].split()[0]) for line in output.splitlines()[2:] if "eth" in line))
        return counts
    finally:
        client.close()


def write_env(root: Path, base: str, name: str, source: str, stack: Path | None = None) -> None:
    lines = [line for line in (root / "env" / f"{base}.env").read_text().splitlines() if not line.startswith("#")]
    if stack is not None:
        lines = [line for line in lines if not line.startswith("STACK_DIR=")] + [f"STACK_DIR={stack}"]
    (root / "env" / f"{name}.env").write_text("\n".join([*lines, f"IMAGE_SOURCE={source}"]) + "\n")


def timed(spec: LabSpec, root: Path, *args: str) -> tuple[float, list[int]]:
    """(seconds, bytes each host received) of `inv ARGS`."""
    before = received(spec)
    seconds = inv(root, *args)
    return seconds, [after - start for after, start in zip(received(spec), before, strict=True)]


def changed_stack(work: Path, marker: str) -> Path:
    """A copy of the demo stack whose web/app.py differs by one line (named demo: same project)."""
    stack = work / marker / "demo"
    if not stack.exists():
        shutil.copytree(REPO / "stacks" / "demo", stack)
        app = stack / "web" / "app.py"
        app.write_text(app.read_text() + f"\n# benchmark change {marker}\n")
    return stack


def main() -> None:
    spec, env = bench_lab("benchi", HOSTS, deployed=False)
    root = spec.env_root
    assert root is not None
    first = env.hosts[0].name
    layer = len((REPO / "stacks" / "demo" / "web" / "app.py").read_bytes())
    results: dict[str, dict[str, tuple[float, list[int]]]] = {}
    with tempfile.TemporaryDirectory(dir=REPO / ".lab") as scratch:
        work = Path(scratch)
        for source in SOURCES:
            name, changed = f"benchi{source[0]}", f"benchi{source[0]}x"
            write_env(root, "benchi", name, source)
            with Fleet.connect(env) as fleet:
                emptied = fleet.map(lambda host: host.run(EMPTY_HOST, timeout=600))
                assert emptied.ok, [str(o.error) for o in emptied.failed]
            print(f"{source}: first deploy ...", flush=True)
            runs = results.setdefault(source, {})
            runs["a"] = timed(spec, root, "deploy", "--env", name, "--version", "v1")
            print(f"{source}: v1 -> v2 ...", flush=True)
            runs["b"] = timed(spec, root, "deploy", "--env", name, "--version", "v2")
            print(f"{source}: one-file changes ...", flush=True)
            write_env(root, "benchi", changed, source, changed_stack(work, f"{source}-1"))
            runs["c1"] = timed(spec, root, "deploy", "--env", changed, "--version", "v2", "--host", first)
            write_env(root, "benchi", changed, source, changed_stack(work, f"{source}-3"))
            runs["c3"] = timed(spec, root, "deploy", "--env", changed, "--version", "v2")
            for env_name in (name, changed):
                (root / "env" / f"{env_name}.env").unlink()

    def mb(count: float) -> str:
        return f"{count / 1e6:9.2f} MB"

    print(f"\n{HOSTS} hosts; bytes each host received (its /proc/net/dev), largest host shown; seconds")
    print(f"  {'':44} {'send':>22}   {'registry':>22}")
    labels = {
        "a": "(a) first deploy, v1",
        "b": "(b) v1 -> v2 (image config only)",
        "c1": "(c) one-file change, 1 host",
        "c3": "(c) another one-file change, 3 hosts",
    }
    for key, label in labels.items():
        cells = []
        for source in SOURCES:
            seconds, counts = results[source][key]
            shown = counts[:1] if key == "c1" else counts
            cells.append(f"{mb(max(shown))} {seconds:6.1f} s")
        print(f"  {label:44} {cells[0]:>22}   {cells[1]:>22}")
    reg, send = results["registry"], results["send"]
    a_ratio = reg["a"][0] / send["a"][0]
    b_bytes = max(reg["b"][1])
    c_bytes = max(reg["c3"][1])
    c_limit = 2 * layer + 1e6
    c_ratio = reg["c3"][0] / reg["c1"][0]
    print(
        f"\n  (a) registry / send time                   {a_ratio:6.2f} x  target <= 1.10: {verdict(a_ratio <= 1.10)}"
    )
    print(f"  (b) registry, per host                     {mb(b_bytes)}  target < 1 MB: {verdict(b_bytes < 1e6)}")
    print(
        f"  (c) registry, per host                     {mb(c_bytes)}  target <= 2 x {layer} B + 1 MB:"
        f" {verdict(c_bytes <= c_limit)}"
    )
    print(f"  (c) registry, 3 hosts / 1 host time        {c_ratio:6.2f} x  target <= 1.3: {verdict(c_ratio <= 1.3)}")
    # leave the lab serving v1 from the registry, as the other benchmarks expect
    started = time.perf_counter()
    inv(root, "deploy", "--env", "benchi", "--version", "v1")
    print(
        f"\n(lab benchi back on v1 in {time.perf_counter() - started:.1f} s; `inv lab.down benchi --purge` removes it)"
    )


if __name__ == "__main__":
    main()
