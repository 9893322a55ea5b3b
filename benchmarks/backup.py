"""Backup speed of a 1 GiB volume, measured side by side in one run on one lab host ("benchb").

- `backup.all` of the volume (tar | zstd on the host, streamed over SSH to this machine, sha256)
  against the reference recipe on the same host,
  `docker run --rm -v VOL:/data -v DIR:/backup IMAGE tar czf /backup/x.tar.gz /data`:
  target at least 2x faster;
- against the raw read throughput of the same volume, `tar -cf - DIR | cat > /dev/null`, the
  limit: target at least 60% of it.
Both targets are measured for the local target (archives streamed to this machine) and for the
host target (BACKUP_TARGET=host: tar | zstd > archive, then sha256sum of it, on the host, nothing
transferred), and the host target once more at BACKUP_LEVEL=-1 (zstd --fast=1). Beside them, the
floor that compression sets: `tar -cf - DIR | zstd -T0 -1 > /dev/null` on the same host.
The volume holds half random bytes (incompressible) and half base64 text (compressible only by
entropy coding, which zstd's --fast levels skip), in files.
Run: .venv/bin/python benchmarks/backup.py [--root DIR --env NAME]  (an environment with the demo
deployed; default: a 1-host lab of its own)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import time
from pathlib import Path

from common import bench_lab, verdict

from ops.backup import BackupOptions, backup_all, host_store
from ops.config import load_environment
from ops.console import RecordingReporter
from ops.transport import Fleet

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
        floor = statistics.median(
            timed(f"tar -cf - -C {mount} . | zstd -q -T0 -1 > /dev/null", sudo=True) for _ in range(RUNS)
        )
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
    fast_env = dataclasses.replace(env, settings={**env.settings, "BACKUP_LEVEL": -1})
    variants = {"local": ("local", env), "host": ("host", env), "host --fast=1": ("host", fast_env)}
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    sizes: dict[str, int] = {}
    with Fleet.connect(env) as fleet:
        for _ in range(RUNS):
            for variant, (target, variant_env) in variants.items():  # interleaved: all see the same load
                options = BackupOptions(hosts=[env.hosts[0].name], volumes=[VOLUME], target=target)
                started = time.perf_counter()
                result = backup_all(variant_env, RecordingReporter(), options)
                times[variant].append(time.perf_counter() - started)
                assert result.ok and result.snapshot is not None, result.errors
                sizes[variant] = result.snapshot.bytes
                shutil.rmtree(result.snapshot.path)
                fleet.hosts[0].sudo(f"rm -rf {on_host.base}/{result.snapshot.id}")
        fleet.hosts[0].run(f"docker volume rm -f {name} >/dev/null")
    mib = size / 2**20
    print(f"\nvolume {mib:.0f} MiB, median of {RUNS} runs each")

    def line(label: str, seconds: float, note: str = "") -> None:
        print(f"  {label:<52} {seconds:6.2f} s  {mib / seconds:7.1f} MiB/s{note}")

    line("raw read: tar -cf - | cat > /dev/null (limit)", raw)
    line("floor: tar -cf - | zstd -T0 -1 > /dev/null", floor, f"  ({raw / floor:.0%} of raw read)")
    line("reference: docker run ... tar czf", reference, f"  -> {reference_size / 2**20:.0f} MiB on the host")
    labels = {  # variant: (its line, its verdict's heading)
        "local": ("inv backup.all (zstd -1, SSH, sha256, to here)", "local target"),
        "host": ("inv backup.all --target host (zstd -1, sha256 there)", "host target"),
        "host --fast=1": ("  the same at BACKUP_LEVEL=-1 (zstd --fast=1)", "host target, BACKUP_LEVEL=-1"),
    }
    medians = {variant: statistics.median(times[variant]) for variant in variants}
    for variant, seconds in medians.items():
        where = "here" if variant == "local" else "on the host"
        line(labels[variant][0], seconds, f"  -> {sizes[variant] / 2**20:.0f} MiB {where}")
    for variant, seconds in medians.items():
        print(f"  {labels[variant][1]}:")
        print(
            f"    speed-up vs reference     {reference / seconds:5.2f} x   target >= 2:    "
            f"{verdict(reference / seconds >= 2)}"
        )
        print(f"    share of raw read speed   {raw / seconds:5.0%}     target >= 60%: {verdict(raw / seconds >= 0.6)}")


if __name__ == "__main__":
    main()
