"""The invoke layer: env-named tasks, --debug, and a fast `inv --list`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from invoke.context import Context

from ops.tasks.base import env_collection
from tests.cli import opskit as run_inv

REPO = Path(__file__).resolve().parents[2]


def test_env_collection_has_a_default_task_and_one_per_environment() -> None:
    calls: list[tuple[str | None, bool]] = []

    def deploy(c: Context, env: str | None = None, dry_run: bool = False) -> None:
        """Deploy the stack."""
        calls.append((env, dry_run))

    collection = env_collection("deploy", deploy, ["prod", "staging"])
    assert sorted(collection.task_names) == ["deploy", "prod", "staging"]
    assert collection.default == "deploy"
    collection["prod"](Context(), dry_run=True)
    collection["deploy"](Context(), env="staging")
    assert calls == [("prod", True), ("staging", False)]
    assert "env" not in [arg.name for arg in collection["prod"].get_arguments()]


def test_list_shows_the_collections(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    done = run_inv(tmp_path, "--list")
    assert done.returncode == 0
    for name in ("lab.up", "lab.status", "lab.down", "hosts.trust", "ops.status"):
        assert name in done.stdout


def test_no_environment_chosen_lists_the_choices(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    for name in ("prod", "staging"):
        (tmp_path / "env" / f"{name}.env").write_text("HOSTS=a\n")
    done = run_inv(tmp_path, "ops.status")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: several environments (prod, staging) and none chosen (pass --env NAME or set OPS_ENV)"
    )


def test_list_does_not_import_the_heavy_libraries() -> None:
    code = "import sys, tasks; print(sorted(m for m in ('fabric', 'paramiko', 'docker', 'rich') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
