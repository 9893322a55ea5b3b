"""Run the opskit command as a user would, for tests: a fresh process, no terminal, no OPS_ENV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def opskit(root: Path, *args: str, timeout: float = 600, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`opskit ARGS` with the repository root `root` (OPS_ROOT); output captured as text."""
    environ = {**os.environ, "OPS_ROOT": str(root), "COLUMNS": "200"}
    environ.pop("OPS_ENV", None)
    return subprocess.run(
        [sys.executable, "-c", "from ops.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
