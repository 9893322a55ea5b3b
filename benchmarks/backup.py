"""Backup speed of a 1 GiB volume, measured side by side in one run on one lab host ("benchb").

- `backup.all` of the volume (tar | zstd on the host, streamed over SSH to this machine, sha256)
  against the reference recipe on the same host,
  `docker run --rm -v VOL:/data -v DIR:/backup IMAGE tar czf /backup/x.tar.gz /data`:
  target at least 2x faster;
- against the raw read throughput of the same volume, `tar -cf - DIR | cat > /dev/null`, the
  limit: target at least 60% of it.
Both targets are measured for the local target (archives streamed to this machine) and for the
host target (BACKUP_TARGET=host: tar | zstd | tee | sha256sum on the host, nothing transferred).
The volume holds half random bytes (incompressible) and half base64 text (compressible), in files.
Run: .venv/bin/python benchmarks/backup.py [--root DIR --env NAME]  (an environment with the demo
deployed; default: a 1-host lab of its own)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

from common import bench_lab, verdict

from ops.backup import BackupOptions, backup_all, host_store
from ops.config import load_environment
from ops.console import RecordingReporter
from ops.remote import Fleet

VOLUME = "bench-data"
RUNS = 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path)
    parser.add_argument("--env")
    args = parser.parse_args()
    if args.root and args.env:
        env = load_environment(args.env, args.root.resolve(), os.environ)
    else:
        _, env = bench_lab("benchb", 1)
    name = f"{env.project}_{VOLUME}"
    with Fleet.connect(env) as fleet:
        host = fleet.hosts[0]
        labels = f"--label com.docker.compose.project={env.project} --label com.docker.compose.volume={VOLUME}"
        host.run(f"docker volume rm -f {name} >/dev/null; docker volume create {labels} {name} >/dev/null")
        mount = host.run(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {name}").stdout.strip()
        print("filling a 1 GiB volume ...", flush=True)
        fill = (
            f"for i in 1 2 3 4; do head -c 128M /dev/urandom > {mount}/random-$i.bin; "
            f"head -c 96M /dev/urandom | base64 -w 100 | head -c 128M > {mount}/text-$i.txt; done; sync"
        )
        host.sudo(fill, timeout=900)
        image = host.run(
            f"docker inspect -f '{{{{.Config.Image}}}}' {env.project}-redis-1 2>/dev/null || echo debian:trixie-slim"
        ).stdout.strip()
        size = int(host.sudo(f"du -sb {mount}").stdout.split()[0])

        def timed(command: str, sudo: bool = False) -> float:
            started = time.perf_counter()
            (host.sudo if sudo else host.run)(command, timeout=1800)
            return time.perf_counter() - started

        host.sudo("sync; echo 3 > /proc/sys/vm/drop_caches", check=False)  # may be refused in a lab: then all run warm
        timed(f"tar -cf - -C {mount} . | cat > /dev/null", sudo=True)  # warm the cache for everyone alike
        raw = statistics.median(timed(f"tar -cf - -C {mount} . | cat > /dev/null", sudo=True) for _ in range(RUNS))
        host.sudo("mkdir -p /tmp/opskit-bench")
        reference = statistics.median(
            timed(
                f"docker run --rm -v {name}:/data -v /tmp/opskit-bench:/backup --user 0 --entrypoint tar {image} "
                "czf /backup/x.tar.gz /data"
            )
            for _ in range(RUNS)
        )
        reference_size = int(host.sudo("stat -c %s /tmp/opskit-bench/x.tar.gz").stdout)
        host.sudo("rm -rf /tmp/opskit-bench")

    on_host = host_store(env, "host")
    assert on_host is not None
    times: dict[str, list[float]] = {"local": [], "host": []}
    sizes = []
    with Fleet.connect(env) as fleet:
        for _ in range(RUNS):
            for target in ("local", "host"):  # interleaved, so both see the same machine load
                options = BackupOptions(hosts=[env.hosts[0].name], volumes=[VOLUME], target=target)
                started = time.perf_counter()
                result = backup_all(env, RecordingReporter(), options)
                times[target].append(time.perf_counter() - started)
                assert result.ok and result.snapshot is not None, result.errors
                sizes.append(result.snapshot.bytes)
                shutil.rmtree(result.snapshot.path)
                fleet.hosts[0].sudo(f"rm -rf {on_host.base}/{result.snapshot.id}")
        fleet.hosts[0].run(f"docker volume rm -f {name} >/dev/null")
    ours = statistics.median(times["local"])
    ours_host = statistics.median(times["host"])

    mib = size / 2**20
    print(f"\nvolume {mib:.0f} MiB, median of {RUNS} runs each")
    print(f"  raw read: tar -cf - | cat > /dev/null (limit)   {raw:6.2f} s  {mib / raw:7.1f} MiB/s")
    print(
        f"  reference: docker run ... tar czf                {reference:6.2f} s  {mib / reference:7.1f} MiB/s"
        f"  -> {reference_size / 2**20:.0f} MiB on the host"
    )
    print(
        f"  inv backup.all (zstd, SSH, sha256, to here)     {ours:6.2f} s  {mib / ours:7.1f} MiB/s"
        f"  -> {sizes[0] / 2**20:.0f} MiB here"
    )
    print(
        f"  inv backup.all --target host (zstd | sha256 there) {ours_host:6.2f} s  {mib / ours_host:7.1f} MiB/s"
        f"  -> {sizes[1] / 2**20:.0f} MiB on the host"
    )
    for label, seconds in (("local target", ours), ("host target", ours_host)):
        print(f"  {label}:")
        print(
            f"    speed-up vs reference     {reference / seconds:5.2f} x   target >= 2:    "
            f"{verdict(reference / seconds >= 2)}"
        )
        print(f"    share of raw read speed   {raw / seconds:5.0%}     target >= 60%: {verdict(raw / seconds >= 0.6)}")


if __name__ == "__main__":
    main()
