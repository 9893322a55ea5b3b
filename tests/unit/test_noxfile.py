"""The local pipeline's shape: `nox -l` describes every session in one line, and `nox -s ci`
runs the stages in CI's order."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ["lint", "typecheck", "tests", "scan", "build", "integration"]


def test_nox_lists_every_session_with_a_one_line_description() -> None:
    done = subprocess.run([sys.executable, "-m", "nox", "-l"], cwd=REPO, capture_output=True, text=True, check=True)
    described = dict(re.findall(r"^[*-] (\w+) -> (.+)$", done.stdout, re.MULTILINE))
    assert list(described) == [*STAGES, "ci"]
    assert all(len(text) > 20 for text in described.values()), described


def test_ci_runs_the_stages_in_order() -> None:
    spec = importlib.util.spec_from_file_location("noxfile_under_test", REPO / "noxfile.py")
    assert spec is not None and spec.loader is not None
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    assert noxfile.CI_STAGES == STAGES
