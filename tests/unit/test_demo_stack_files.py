"""The demo stack's files keep the promises later work depends on: health, limits, restarts, one
published port, a swappable web, AOF Redis, and a runbook on every alert. No Docker needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.oncall.runbook import runbook_files

STACK = Path(__file__).resolve().parents[2] / "stacks" / "demo"
SERVICES = {"proxy", "web", "redis", "prometheus", "alertmanager"}
# The runbooks that exist for the demo: the shipped ones in ops/oncall/runbooks/ (tests/unit/test_runbook.py
# checks them) and the demo's own in stacks/demo/runbooks/.
RUNBOOKS = set(runbook_files(None, STACK))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((STACK / "compose.yaml").read_text())
    return data


def test_the_stack_has_its_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_health_limits_restart_and_a_local_build(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["restart"] == "unless-stopped"
    assert spec["healthcheck"]["test"] and spec["healthcheck"]["start_period"]
    limits = spec["deploy"]["resources"]["limits"]
    assert limits["memory"] and limits["cpus"]
    assert spec["build"]
    context = spec["build"] if isinstance(spec["build"], str) else spec["build"]["context"]
    dockerfile = (STACK / context / "Dockerfile").read_text()
    # Nothing is pulled: every image starts from the locally made Debian 13 base.
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["debian:trixie-slim"]
    assert "--no-install-recommends" in dockerfile and "rm -rf /var/lib/apt/lists/*" in dockerfile


def test_image_names_pin_everything_but_the_web_version(compose: dict[str, Any]) -> None:
    images = {name: spec["image"] for name, spec in compose["services"].items()}
    assert images.pop("web") == "opskit-demo/web:${APP_VERSION:-v1}"
    assert images == {name: f"opskit-demo/{name}:1" for name in images}


def test_only_the_proxy_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {name: spec.get("ports") for name, spec in compose["services"].items() if spec.get("ports")}
    assert published == {"proxy": ["${HTTP_BIND:-0.0.0.0}:${HTTP_PORT:-80}:80"]}


def test_web_can_be_swapped(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert web["labels"]["opskit.swap"] == "true"
    assert "container_name" not in web and "ports" not in web
    # The version travels with the image (a build arg), so a swapped-in image reports its own.
    assert web["build"]["args"]["APP_VERSION"] == "${APP_VERSION:-v1}"
    assert "APP_VERSION" not in web["environment"]
    assert web["environment"]["HEALTH_FAIL"] == "${HEALTH_FAIL:-0}"


def test_the_proxy_re_resolves_web_and_retries_another_upstream() -> None:
    nginx = (STACK / "proxy" / "nginx.conf").read_text()
    assert re.search(r"resolver 127\.0\.0\.11 valid=1s", nginx)
    assert re.search(r"set \$(\w+) http://web:8000;\s*proxy_pass \$\1;", nginx)
    assert "proxy_next_upstream error timeout http_502 http_503;" in nginx
    assert "proxy_next_upstream_tries 3;" in nginx


def test_redis_keeps_an_append_only_file_on_its_named_volume(compose: dict[str, Any]) -> None:
    assert "redis-data:/data" in compose["services"]["redis"]["volumes"]
    assert "redis-data" in compose["volumes"]
    config = (STACK / "redis" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", config, re.MULTILINE)
    assert re.search(r"^dir /data$", config, re.MULTILINE)


def test_prometheus_keeps_its_tsdb_on_a_volume_with_the_admin_api_on(compose: dict[str, Any]) -> None:
    assert "prometheus-data:/prometheus" in compose["services"]["prometheus"]["volumes"]
    dockerfile = (STACK / "prometheus" / "Dockerfile").read_text()
    assert "--storage.tsdb.path=/prometheus" in dockerfile and "--web.enable-admin-api" in dockerfile


def _alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted((STACK / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def test_every_alert_names_a_runbook_that_exists() -> None:
    rules = _alert_rules()
    assert len(rules) >= 8
    missing = [rule["alert"] for rule in rules if rule.get("annotations", {}).get("runbook") not in RUNBOOKS]
    assert not missing, f"alerts without a known runbook: {missing}"


def test_the_stack_failure_modes_have_alerts() -> None:
    by_runbook: dict[str, set[str]] = {}
    for rule in _alert_rules():
        by_runbook.setdefault(rule["annotations"]["runbook"], set()).add(rule["alert"])
    assert {"WebDown", "WebTargetMissing"} <= by_runbook["web-down"]  # the demo's own runbook
    assert "TargetDown" in by_runbook["service-unhealthy"]
    assert "RedisDown" in by_runbook["redis-down"]
    assert by_runbook["memory-pressure"] and by_runbook["prometheus-storage"] and by_runbook["disk-full"]


def test_alertmanager_routes_to_a_receiver_that_exists() -> None:
    config = yaml.safe_load((STACK / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {receiver["name"] for receiver in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert {route["receiver"] for route in routes} <= receivers
