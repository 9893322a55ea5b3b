"""The lab's env file: lab.up sets the keys it owns and keeps every other line (issue 18)."""

from __future__ import annotations

from pathlib import Path

from ops.config.envfile import set_keys
from ops.lab import OWNED_KEYS, LabSpec, update_lab_env


def test_set_keys_changes_only_the_keys_given_and_keeps_every_other_line() -> None:
    text = "# top comment\nexport HOSTS=a:1 # lab hosts\n\nSTACK_DIR=mine\nPROJECT=x\n"
    edit = set_keys(text, {"HOSTS": "b:2", "PROJECT": "x", "DEPLOY_USER": "deploy"})
    assert edit.text == "# top comment\nexport HOSTS=b:2 # lab hosts\n\nSTACK_DIR=mine\nPROJECT=x\nDEPLOY_USER=deploy\n"
    assert edit.changed == ("HOSTS", "DEPLOY_USER")
    assert set_keys(edit.text, {"HOSTS": "b:2"}).changed == ()


def test_lab_up_keeps_the_users_lines_of_its_env_file(tmp_path: Path) -> None:
    spec = LabSpec("inunit", checkout=tmp_path, hosts=2)
    identity = spec.state_dir / "id_ed25519"
    assert update_lab_env(spec, identity) == OWNED_KEYS  # a new file: every key it owns
    mine = spec.env_file.read_text().replace("DEPLOY_USER=deploy", "# my note\nSTACK_DIR=stacks/shop")
    spec.env_file.write_text(mine + "PROJECT=shop\nSTACK_VARS=HTTP_PORT=8080\nHOSTS=10.9.9.9\n")
    spec.env_file.chmod(0o600)

    changed = update_lab_env(spec, identity)

    text = spec.env_file.read_text()
    assert changed == ("HOSTS", "DEPLOY_USER")
    assert "# my note\nSTACK_DIR=stacks/shop\n" in text and "PROJECT=shop\nSTACK_VARS=HTTP_PORT=8080\n" in text
    assert "10.9.9.9" not in text and text.count("HOSTS=127.0.0.1:") == 2  # both copies agree
    assert spec.env_file.stat().st_mode & 0o777 == 0o600
    assert update_lab_env(spec, identity) == ()
