"""The shell pipelines every recipe and store builds on: compress and decompress at a level, run a
script as root. Pure text: nothing here runs a command or knows a recipe."""

from __future__ import annotations

import shlex

from ops.config import Environment
from ops.errors import BackupError

EXTENSIONS = {"zstd": ".zst", "gzip": ".gz"}
# zstd -1: on a 2-core host compression is the bottleneck of a backup; -1 is the fastest level that
# still entropy-codes what it cannot match (benchmarks/backup.py). BACKUP_LEVEL raises it, or
# lowers it below zero to zstd's --fast levels (matches only: faster, larger archives).
DEFAULT_LEVEL = 1
LEVELS = {"zstd": (-10, 19), "gzip": (1, 9)}


def compressor(compression: str, level: int = DEFAULT_LEVEL) -> str:
    if compression == "gzip":
        # pigz compresses on every core when the host has it.
        return f"{{ if command -v pigz >/dev/null; then pigz -c -{min(level, 9)}; else gzip -c -{min(level, 9)}; fi; }}"
    return f"zstd -q -c -T0 --fast={-level}" if level < 0 else f"zstd -q -c -T0 -{level}"


def compression_level(env: Environment, compression: str) -> int:
    """BACKUP_LEVEL checked against the compressor: zstd 1..19 or -1..-10 (--fast), gzip 1..9."""
    level = env.backup.level
    low, high = LEVELS[compression]
    if level == 0 or not low <= level <= high:
        allowed = "1 to 19, or -1 to -10 for zstd --fast" if compression == "zstd" else "1 to 9"
        raise BackupError(
            f"BACKUP_LEVEL={level} is not a {compression} level",
            where=str(env.file.name),
            hint=f"set BACKUP_LEVEL to {allowed}",
        )
    return level


def decompressor(compression: str) -> str:
    return "gzip -dc" if compression == "gzip" else "zstd -q -dc"


def as_root(script: str, user: str) -> str:
    """A bash script (pipefail on) run as root: directly when we are root, else `sudo -n`."""
    wrapped = f"bash -c {shlex.quote('set -o pipefail; ' + script)}"
    return wrapped if user == "root" else f"sudo -n {wrapped}"


def tar_command(directory: str, compression: str, user: str, level: int = DEFAULT_LEVEL) -> str:
    """Stream a directory's contents as a compressed tar on stdout (owners kept as numbers)."""
    return as_root(f"tar -C {shlex.quote(directory)} --numeric-owner -cf - . | {compressor(compression, level)}", user)
