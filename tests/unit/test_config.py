"""Environments: parsing, validation errors a person can act on, secrets, env selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import KEYS, HostSpec, load_environment, parse_host, resolve_env_name
from ops.errors import ConfigError
from tests.cli import opskit as run_cli

REPO = Path(__file__).resolve().parents[2]


def write_env(root: Path, name: str, text: str) -> Path:
    (root / "env").mkdir(parents=True, exist_ok=True)
    path = root / "env" / f"{name}.env"
    path.write_text(text)
    return path


def test_a_full_environment_is_read_into_typed_values(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("key")
    (tmp_path / "stacks" / "shop").mkdir(parents=True)
    write_env(
        tmp_path,
        "prod",
        "HOSTS=web1.example.com, ops@10.0.0.5:2222/db+worker\n"
        "SSH_IDENTITY_FILE=keys/id\nSTACK_DIR=stacks/shop\nPARALLEL=4\nSECRETS=DB_PASSWORD\n",
    )
    env = load_environment("prod", tmp_path, {"DB_PASSWORD": "s3cret-value"})
    assert env.hosts == (
        HostSpec("web1.example.com", 22, "deploy", ()),
        HostSpec("10.0.0.5", 2222, "ops", ("db", "worker")),
    )
    assert env.identity_file == tmp_path / "keys" / "id"
    assert env.known_hosts == tmp_path / "env" / "prod.known_hosts"
    assert env.project == "shop"
    assert env.parallel == 4
    assert env.redact("password is s3cret-value") == "password is ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HOSTS=a.example\nHOSTNAME=x\n", "env/bad.env:2: unknown key HOSTNAME (did you mean HOSTS?)"),
        ("HOSTS=root@host:99999\n", "env/bad.env:1: HOSTS: 'root@host:99999' has port 99999, outside 1-65535"),
        ("HOSTS=a.example\nPARALLEL=many\n", "env/bad.env:2: PARALLEL: 'many' is not a whole number"),
        ("HOSTS=a.example\nSSH_IDENTITY_FILE=keys/missing\n", "env/bad.env:2: SSH_IDENTITY_FILE: file keys/missing"),
        ("HOSTS=a.example\n\nSECRETS=API_TOKEN\n", "env/bad.env:3: SECRETS: secret API_TOKEN is not set"),
        ("PARALLEL=2\n", "env/bad.env: HOSTS is required"),
    ],
)
def test_bad_env_files_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    write_env(tmp_path, "bad", text)
    with pytest.raises(ConfigError) as raised:
        load_environment("bad", tmp_path, {})
    assert raised.value.one_line().startswith(expected)
    assert "\n" not in raised.value.one_line()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("REGISTRY=team\n", "env/bad.env:2: REGISTRY: 'team' is not a registry host (it needs a dot or a :port"),
        ("REGISTRY=https://r.example.com/team\n", "env/bad.env:2: REGISTRY: 'https://r.example.com/team': give host"),
        ("REGISTRY=r.example.com/Team\n", "env/bad.env:2: REGISTRY: 'Team' is not a repository path"),
        ("REGISTRY_USER=ci\n", "env/bad.env:2: REGISTRY_USER is set but REGISTRY is empty"),
        ("REGISTRY_CA=ca.crt\n", "env/bad.env:2: REGISTRY_CA is set but REGISTRY is empty"),
        ("REGISTRY=r.example.com\nREGISTRY_CA=certs/none.crt\n", "env/bad.env:3: REGISTRY_CA: file certs/none.crt"),
        (
            "REGISTRY=r.example.com:5443/team\n\nREGISTRY_USER=ci\n",
            "env/bad.env:4: REGISTRY_USER is set but secret REGISTRY_PASSWORD is not"
            " (add REGISTRY_PASSWORD=... to env/bad.secrets.env (mode 0600) or export REGISTRY_PASSWORD)",
        ),
    ],
)
def test_team_registry_keys_hang_together(tmp_path: Path, lines: str, expected: str) -> None:
    write_env(tmp_path, "bad", "HOSTS=a.example\n" + lines)
    with pytest.raises(ConfigError) as raised:
        load_environment("bad", tmp_path, {})
    assert raised.value.one_line().startswith(expected), raised.value.one_line()


def test_the_team_registry_and_its_password(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    write_env(
        tmp_path, "prod", "HOSTS=a\nREGISTRY=10.1.2.3:5443/team/apps/\nREGISTRY_USER=ci\nREGISTRY_CA=certs/ca.crt\n"
    )
    secrets = tmp_path / "env" / "prod.secrets.env"
    secrets.write_text("REGISTRY_PASSWORD=pw-from-file\n")
    secrets.chmod(0o600)
    env = load_environment("prod", tmp_path, {})
    assert (env.registry.registry, env.registry.host, env.registry.path) == (
        "10.1.2.3:5443/team/apps",
        "10.1.2.3:5443",
        "team/apps",
    )
    assert (env.registry.user, env.registry.ca) == ("ci", "certs/ca.crt")
    assert env.secrets["REGISTRY_PASSWORD"] == "pw-from-file"
    assert env.redact("login ci pw-from-file") == "login ci ***"
    secrets.unlink()
    assert (
        load_environment("prod", tmp_path, {"REGISTRY_PASSWORD": "from-ci"}).secrets["REGISTRY_PASSWORD"] == "from-ci"
    )
    write_env(tmp_path, "open", "HOSTS=a\nREGISTRY=localhost:5000\n")  # no user: no password needed
    assert load_environment("open", tmp_path, {}).registry.host == "localhost:5000"
    assert load_environment("open", tmp_path, {}).registry.path == ""


def test_a_missing_environment_lists_the_known_ones(tmp_path: Path) -> None:
    write_env(tmp_path, "staging", "HOSTS=a\n")
    with pytest.raises(ConfigError, match=r"environment 'prod' not found .*\(known: staging\)"):
        load_environment("prod", tmp_path, {})


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    write_env(tmp_path, "prod", "HOSTS=a\nSECRETS=TOKEN\n")
    secrets = tmp_path / "env" / "prod.secrets.env"
    secrets.write_text("TOKEN=abcdef\n")
    secrets.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by group or others \(mode 0644\) \(run: chmod 600"):
        load_environment("prod", tmp_path, {})
    secrets.chmod(0o600)
    assert load_environment("prod", tmp_path, {}).secrets["TOKEN"] == "abcdef"


def test_process_environment_overrides_the_secrets_file(tmp_path: Path) -> None:
    write_env(tmp_path, "prod", "HOSTS=a\nSECRETS=TOKEN\n")
    secrets = tmp_path / "env" / "prod.secrets.env"
    secrets.write_text("TOKEN=from-file\n")
    secrets.chmod(0o600)
    assert load_environment("prod", tmp_path, {"TOKEN": "from-ci-vars"}).secrets["TOKEN"] == "from-ci-vars"


def test_environment_choice_order_and_ambiguity(tmp_path: Path) -> None:
    write_env(tmp_path, "prod", "HOSTS=a\n")
    assert resolve_env_name(None, {}, None, tmp_path) == "prod"
    write_env(tmp_path, "staging", "HOSTS=a\n")
    assert resolve_env_name("x", {"OPS_ENV": "y"}, "z", tmp_path) == "x"
    assert resolve_env_name(None, {"OPS_ENV": "y"}, "z", tmp_path) == "y"
    assert resolve_env_name(None, {}, "z", tmp_path) == "z"
    with pytest.raises(ConfigError, match=r"several environments \(prod, staging\) and none chosen"):
        resolve_env_name(None, {}, None, tmp_path)


@pytest.mark.parametrize("text", ["user@", "host:port", "a b@c", "[::1]:22/Role"])
def test_malformed_host_entries_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_host(text)


def test_ipv6_hosts_in_brackets() -> None:
    assert parse_host("ops@[2001:db8::1]:2222") == HostSpec("2001:db8::1", 2222, "ops", ())


def test_every_key_is_documented_in_the_examples() -> None:
    for example in ("staging.env.example", "prod.env.example"):
        text = (REPO / "env" / example).read_text()
        documented = {line.lstrip("# ").split("=")[0] for line in text.splitlines() if "=" in line}
        assert set(KEYS) <= documented, f"{example} misses {sorted(set(KEYS) - documented)}"


def test_the_examples_are_valid_environments(tmp_path: Path) -> None:
    for example in ("staging.env.example", "prod.env.example"):
        name = example.split(".")[0]
        write_env(tmp_path, name, (REPO / "env" / example).read_text())
        env = load_environment(name, tmp_path, {"REDIS_PASSWORD": "x" * 12})
        assert env.hosts


def test_cli_prints_one_red_line_and_exits_1(tmp_path: Path) -> None:
    write_env(tmp_path, "bad", "HOSTS=a.example\nPARALLEL=0\n")
    done = run_cli(tmp_path, "ops.status", "--env", "bad")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: env/bad.env:2: PARALLEL: 0 is outside 1-100 (hosts worked on at once)"
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_shows_the_traceback_with_debug(tmp_path: Path) -> None:
    write_env(tmp_path, "bad", "HOSTS=a.example\nPARALLEL=0\n")
    done = run_cli(tmp_path, "ops.status", "--env", "bad", "--debug")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "ConfigError" in done.stderr
