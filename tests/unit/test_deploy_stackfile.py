"""A release's compose config turned into a swarm stack file: pinned images, no build, restart as a
restart policy, update and rollback settings, refused keys, secrets named by content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops.deploy.stackfile import monitor_seconds, stack_file
from ops.errors import StackError

FIXTURE = Path(__file__).parent / "fixtures" / "demo-compose-config.json"
DIGEST = "sha256:" + "ab" * 32


def demo_config(stack_dir: Path) -> dict[str, Any]:
    """The demo stack as `docker compose config --format json` printed it, paths under stack_dir."""
    return json.loads(FIXTURE.read_text().replace("STACK_DIR", str(stack_dir)))


def pinned(config: dict[str, Any]) -> dict[str, str]:
    return {name: f"127.0.0.1:5000/demo/{name}@{DIGEST}" for name in config["services"]}


def test_the_demo_becomes_a_stack_file_with_images_pinned_and_no_build(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    converted = stack_file(config, pinned(config), project="demo", stack_dir=tmp_path)
    services = converted.spec["services"]
    assert converted.services() == ["alertmanager", "prometheus", "proxy", "redis", "web"]
    assert services["web"]["image"] == f"127.0.0.1:5000/demo/web@{DIGEST}"
    assert all("build" not in service and "restart" not in service for service in services.values())
    assert services["web"]["deploy"]["restart_policy"] == {"condition": "any"}
    assert services["web"]["labels"] == {"opskit.swap": "true"}
    assert services["proxy"]["networks"] == ["backend", "edge"]
    assert "name" not in converted.spec["networks"]["backend"]  # the stack's namespace names it
    assert converted.spec["services"]["redis"]["volumes"] == [
        {"type": "volume", "source": "redis-data", "target": "/data"}
    ]
    assert services["web"]["deploy"]["resources"]["limits"]["cpus"] == "0.5"
    assert converted.notes == (
        "service proxy: depends_on dropped (a swarm starts services in no order: each must wait for what it needs)",
        "service web: depends_on dropped (a swarm starts services in no order: each must wait for what it needs)",
    )
    assert json.loads(converted.text) == converted.spec


def test_updates_start_first_roll_back_on_failure_and_watch_a_whole_health_check(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    web = stack_file(config, pinned(config), project="demo", stack_dir=tmp_path).spec["services"]["web"]
    # web: start_period 5 s + interval 1 s x 5 retries
    assert web["deploy"]["update_config"] == {
        "parallelism": 1,
        "order": "start-first",
        "failure_action": "rollback",
        "monitor": "10s",
    }
    assert web["deploy"]["rollback_config"] == {
        "parallelism": 1,
        "order": "start-first",
        "failure_action": "pause",
        "monitor": "10s",
    }


def test_what_the_stack_sets_for_updates_wins(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    config["services"]["web"]["deploy"]["update_config"] = {"monitor": "1m", "parallelism": 2}
    web = stack_file(config, pinned(config), project="demo", stack_dir=tmp_path).spec["services"]["web"]
    assert web["deploy"]["update_config"]["monitor"] == "1m"
    assert web["deploy"]["update_config"]["parallelism"] == 2
    assert web["deploy"]["update_config"]["order"] == "start-first"


def test_a_service_with_a_volume_updates_stop_first_never_two_writers(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    redis = stack_file(config, pinned(config), project="demo", stack_dir=tmp_path).spec["services"]["redis"]
    assert redis["deploy"]["update_config"]["order"] == "stop-first"
    assert redis["deploy"]["rollback_config"]["order"] == "stop-first"


def test_a_port_published_on_the_node_itself_updates_stop_first(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    config["services"]["proxy"]["ports"] = [{"mode": "host", "target": 80, "published": "8080", "protocol": "tcp"}]
    proxy = stack_file(config, pinned(config), project="demo", stack_dir=tmp_path).spec["services"]["proxy"]
    assert proxy["ports"] == [{"mode": "host", "target": 80, "published": 8080, "protocol": "tcp"}]
    assert proxy["deploy"]["update_config"]["order"] == "stop-first"


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("container_name", "web1", "drop container_name"),
        ("network_mode", "host", "use networks"),
        ("privileged", True, "not available"),
        ("mem_limit", "104857600", "deploy.resources.limits.memory"),
        ("some_new_key", "x", "ORCHESTRATOR=compose"),
    ],
)
def test_a_key_stack_deploy_would_ignore_is_refused_naming_service_and_key(
    tmp_path: Path, key: str, value: object, hint: str
) -> None:
    config = demo_config(tmp_path)
    config["services"]["web"][key] = value
    with pytest.raises(StackError) as caught:
        stack_file(config, pinned(config), project="demo", stack_dir=tmp_path)
    assert caught.value.message == f"service web: {key} is not supported by docker stack deploy"
    assert hint in (caught.value.hint or "")


def test_a_port_bound_to_one_address_is_refused(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    config["services"]["proxy"]["ports"][0]["host_ip"] = "127.0.0.1"
    with pytest.raises(StackError, match=r"service proxy: ports: 127\.0\.0\.1:80"):
        stack_file(config, pinned(config), project="demo", stack_dir=tmp_path)


def test_a_bind_mount_of_a_stack_file_is_refused(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    config["services"]["web"]["volumes"] = [{"type": "bind", "source": str(tmp_path / "conf"), "target": "/c"}]
    with pytest.raises(StackError, match="service web: volumes: conf"):
        stack_file(config, pinned(config), project="demo", stack_dir=tmp_path)


def test_restart_on_failure_keeps_its_attempts(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    config["services"]["web"]["restart"] = "on-failure:3"
    web = stack_file(config, pinned(config), project="demo", stack_dir=tmp_path).spec["services"]["web"]
    assert web["deploy"]["restart_policy"] == {"condition": "on-failure", "max_attempts": 3}


def test_secrets_and_configs_are_named_by_their_content(tmp_path: Path) -> None:
    (tmp_path / "site.conf").write_text("listen 80;\n")
    config = demo_config(tmp_path)
    config["secrets"] = {"db_login": {"name": "demo_db_login", "environment": "DB_LOGIN"}}
    config["configs"] = {"site": {"name": "demo_site", "file": str(tmp_path / "site.conf")}}
    config["services"]["web"]["secrets"] = [{"source": "db_login", "target": "/run/secrets/db_login"}]
    config["services"]["web"]["configs"] = [{"source": "site", "target": "/etc/site.conf"}]
    value = "-".join(("pw", "one"))

    def convert(text: str) -> Any:
        return stack_file(config, pinned(config), project="demo", stack_dir=tmp_path, env_values={"DB_LOGIN": text})

    first, second, same = convert(value), convert(value + "2"), convert(value)
    secret = first.spec["secrets"]["db_login"]
    assert secret["name"].startswith("demo_db_login_") and secret["file"] == ".opskit-secrets/db_login"
    assert first.files == {".opskit-secrets/db_login": value.encode()}
    assert value not in first.text  # the value goes to a file beside the stack file, never into it
    assert second.spec["secrets"]["db_login"]["name"] != secret["name"]  # changed: a new secret, a roll
    assert same.spec == first.spec
    site = first.spec["configs"]["site"]
    assert site["file"] == "./site.conf" and site["name"].startswith("demo_site_")
    assert first.spec["services"]["web"]["secrets"] == [{"source": "db_login", "target": "/run/secrets/db_login"}]


def test_a_service_without_a_pinned_image_is_refused(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    images = pinned(config)
    del images["redis"]
    with pytest.raises(StackError, match="no pinned image for service redis"):
        stack_file(config, images, project="demo", stack_dir=tmp_path)


def test_the_monitor_window_covers_a_health_check_failing() -> None:
    assert monitor_seconds({"interval": "10s", "retries": 3, "start_period": "20s"}) == 50
    assert monitor_seconds({"test": ["CMD", "true"]}) == 90  # Docker's defaults: 30 s x 3
    assert monitor_seconds(None) == 5
    assert monitor_seconds({"disable": True}) == 5
