"""Provisioning speed, measured side by side in one run on fresh lab hosts.

- provisioning 2 fresh hosts in parallel against 1 fresh host: target at most 1.3x;
- a no-op re-run on the 2 provisioned hosts: target under 10 s.
Each measurement starts from hosts that are purged and started anew (a fresh cloud VM).
Run: .venv/bin/python benchmarks/provision.py
"""

from __future__ import annotations

import os

from common import REPO, inv, verdict

from ops.console import RecordingReporter
from ops.lab import LabSpec, lab_down, lab_up


def fresh_lab(name: str, hosts: int) -> LabSpec:
    spec = LabSpec(name, checkout=REPO, hosts=hosts, env_root=REPO / ".lab" / name)
    lab_down(spec, RecordingReporter(), purge=True)
    lab_up(spec, RecordingReporter())
    return spec


def provision_seconds(spec: LabSpec) -> float:
    assert spec.env_root is not None
    return inv(spec.env_root, "provision", "--env", spec.name)


def main() -> None:
    print("provisioning fresh hosts (about a minute each) ...", flush=True)
    one = fresh_lab("benchp1", 1)
    one_s = provision_seconds(one)
    two = fresh_lab("benchp2", 2)
    two_s = provision_seconds(two)
    noop_s = provision_seconds(two)
    if os.environ.get("OPS_KEEP_LAB") != "1":
        for spec in (one, two):
            lab_down(spec, RecordingReporter(), purge=True)

    print("\none run each, fresh Debian 13 lab hosts")
    print(f"  inv provision, 1 fresh host        {one_s:6.1f} s")
    print(f"  inv provision, 2 fresh hosts       {two_s:6.1f} s")
    ratio = two_s / one_s
    print(f"  ratio 2 hosts / 1 host             {ratio:6.2f} x  target <= 1.3: {verdict(ratio <= 1.3)}")
    print(f"  inv provision again (no-op), 2     {noop_s:6.1f} s    target < 10 s: {verdict(noop_s < 10)}")


if __name__ == "__main__":
    main()
