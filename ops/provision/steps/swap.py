"""Swap: a SWAP_SIZE_MB swap file in /etc/fstab; skipped when off, and in containers (no swapon).
Never turns a swap off.
"""

from __future__ import annotations

import re

from ops.provision.facts import HostFacts
from ops.provision.step import Change, Context, Step, StepSkipped

SWAP_FILE = "/swapfile"


class SwapStep(Step):
    name, key = "swap", "swap"

    def plan(self, facts: HostFacts, ctx: Context) -> list[Change]:
        size = ctx.settings.swap_mb
        if size <= 0:
            raise StepSkipped("off (SWAP_SIZE_MB=0)")
        if facts.in_container:
            raise StepSkipped(f"{size} MB wanted, but a container cannot enable swap (swapon is refused)")
        changes: list[Change] = []
        fstab = facts.file("/etc/fstab") or ""
        if SWAP_FILE not in facts.swaps:
            changes.append(
                Change(
                    f"create and enable {SWAP_FILE} ({size} MB)",
                    (
                        (
                            f"[ -f {SWAP_FILE} ] && [ $(stat -c %s {SWAP_FILE}) -eq {size * 1024 * 1024} ] || "
                            f"{{ rm -f {SWAP_FILE}; fallocate -l {size}M {SWAP_FILE} || dd if=/dev/zero of={SWAP_FILE} bs=1M "
                            f"count={size} status=none; }}"
                        ),
                        f"chmod 600 {SWAP_FILE} && mkswap {SWAP_FILE} >/dev/null && swapon {SWAP_FILE}",
                    ),
                    may_fail=True,
                    timeout=600,
                )
            )
        if not re.search(rf"^{re.escape(SWAP_FILE)}\s", fstab, re.MULTILINE):
            changes.append(
                Change(f"{SWAP_FILE} in /etc/fstab", (f"echo '{SWAP_FILE} none swap sw 0 0' >> /etc/fstab",))
            )
        return changes

    def summary(self, facts: HostFacts, ctx: Context) -> str:
        return f"{SWAP_FILE} {ctx.settings.swap_mb} MB active"
