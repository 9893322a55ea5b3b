"""`opskit init` and the env-file edits it shares with the lab: files written once, never replaced,
and env files whose own lines survive every lab.up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ops.config import KEYS, load_environment
from ops.config.envfile import set_keys
from ops.console import RecordingReporter
from ops.errors import ConfigError
from ops.oncall.runbook import load_all
from ops.scaffold import init_repository, render_env
from tests.cli import opskit

REPO = Path(__file__).resolve().parents[2]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


EXAMPLES = {
    "staging": {"HOSTS": "10.0.10.11, 10.0.10.12/web+worker"},
    "prod": {"HOSTS": "10.0.20.11, 10.0.20.12, 10.0.20.13/db", "PARALLEL": "5"},
}


def write_examples() -> None:
    for name, values in EXAMPLES.items():
        (REPO / "env" / f"{name}.env.example").write_text(render_env(name, values))


def test_the_env_examples_are_the_shipped_template(tmp_path: Path) -> None:
    # env/*.env.example in this repository and the env files `opskit init` writes come from one template.
    staging, prod = (render_env(name, values) for name, values in EXAMPLES.items())
    # A key is documented in ops/scaffold/templates/env.example; the examples are written from it with
    # `python -c 'from tests.unit.test_scaffold import write_examples; write_examples()'`.
    assert (REPO / "env" / "staging.env.example").read_text() == staging, "env/staging.env.example: see above"
    assert (REPO / "env" / "prod.env.example").read_text() == prod, "env/prod.env.example: see above"
    documented = {line.lstrip("# ").split("=")[0] for line in staging.splitlines() if "=" in line}
    assert set(KEYS) <= documented


def test_init_writes_a_repository_that_opskit_understands(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    result = init_repository(tmp_path, reporter, stack="shop")

    assert result.paths("kept") == []
    assert {".gitignore", "tasks.py", "env/lab.env", "env/prod.env", "stacks/shop/compose.yaml"} <= set(
        result.paths("created")
    )
    for name in ("lab", "prod"):
        text = (tmp_path / "env" / f"{name}.env").read_text()
        assert "STACK_DIR=stacks/shop\n" in text and "PROJECT=shop\n" in text
        (tmp_path / "env" / f"{name}.env").write_text(set_keys(text, {"HOSTS": "10.0.0.1"}).text)
        env = load_environment(name, tmp_path, {})
        assert env.stack_dir == tmp_path / "stacks" / "shop" and env.project == "shop"
    compose = (tmp_path / "stacks" / "shop" / "compose.yaml").read_text()
    assert "image: shop/web:" in compose and "healthcheck:" in compose and "@STACK@" not in compose
    assert load_all(tmp_path)["web-down"].source != "shipped"
    assert "env/*.secrets.env" in (tmp_path / ".gitignore").read_text().splitlines()


def test_init_again_changes_nothing_and_names_what_it_kept(tmp_path: Path) -> None:
    init_repository(tmp_path, RecordingReporter())
    (tmp_path / "env" / "lab.env").write_text("HOSTS=mine\n")
    before = tree(tmp_path)

    done = opskit(tmp_path, "init", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert tree(tmp_path) == before
    assert "0 files created" in done.stdout and "env/lab.env" in done.stdout
    assert done.stdout.rstrip().endswith("opskit lab.up\n  opskit provision.lab\n  opskit deploy.lab")


def test_an_existing_gitignore_gains_only_the_lines_it_lacks(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n.lab/")
    result = init_repository(tmp_path, RecordingReporter())
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules/", ".lab/"] and lines.count(".lab/") == 1
    assert "env/*.secrets.env" in lines and result.paths("extended") == [".gitignore"]
    assert init_repository(tmp_path, RecordingReporter()).changed is False


def test_a_bad_stack_name_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stack name 'My App' is not valid"):
        init_repository(tmp_path, RecordingReporter(), stack="My App")
    assert list(tmp_path.iterdir()) == []
    done = opskit(tmp_path, "init", "--stack", "My App", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_every_template_ships_in_the_wheel() -> None:
    import fnmatch
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "ops.scaffold"
    ]
    templates = REPO / "ops" / "scaffold"
    for path in (templates / "templates").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = str(path.relative_to(templates))
            assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns), relative


def test_init_json_lists_each_file_and_what_became_of_it(tmp_path: Path) -> None:
    import json

    (tmp_path / "tasks.py").write_text("# mine\n")
    done = opskit(tmp_path, "init", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    outcome = {f["path"]: f["outcome"] for f in json.loads(done.stdout)["files"]}
    assert outcome["tasks.py"] == "kept" and outcome["env/prod.env"] == "created"
    assert (tmp_path / "tasks.py").read_text() == "# mine\n"
