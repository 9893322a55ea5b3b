"""deploy_host, converge and rollback on one fake compose host (tests/fake_compose.py): a fresh
host, the same release again (in sync, or drifted: a container exited, files edited on the host),
a release that fails its gate and is reverted, a blue-green deploy, a rollback. No SSH, no Docker:
the image delivery, clocks and sleep are the test's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.console import CHANGED, FAILED, OK, SKIPPED
from tests.fake_compose import World, image_id


def compose_ups(commands: list[str]) -> list[str]:
    """The `docker compose up` arguments among the commands (the state check's `config --hash` reads only)."""
    args = [command.split("--env-file .env ", 1)[1] for command in commands if "docker compose" in command]
    return [arg for arg in args if arg.startswith("up ")]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_fresh_host_gets_the_release_its_images_and_a_gated_compose_up(world: World) -> None:
    result, commands = world.deploy("v1")
    report = world.report
    assert (result, report.previous, report.error, report.images_sent) == ("deployed", "", "", 1000)
    assert report.release == "20261203-120100-v1" == world.runner.current
    assert world.status(report.release) == "active"
    assert sorted(world.runner.releases[report.release]) == [
        ".env",
        "compose.opskit.yaml",
        "compose.yaml",
        "release.json",
    ]
    path = f"/opt/demo/releases/{report.release}"
    reached = [
        "readlink /opt/demo/current && cat",  # which release is current: none
        f"mkdir -p {path} && tar -xzf - -C {path}",  # the release's files and .env
        "docker tag sha256:",  # its images pinned
        f"cat > {path}/release.json.tmp",  # release.json
        f"cat > {path}/compose.opskit.yaml",  # the override running the pins
        f"cd {path} && docker compose -p demo -f compose.yaml -f compose.opskit.yaml --env-file .env up -d --no-build",
        f"cat > {path}/release.json.tmp",  # gate passed: active, and `current` switched
        "for f in /opt/demo/releases/*/release.json",  # prune: nothing to remove
        "readlink /opt/demo/current",
    ]
    assert len(commands) == len(reached)
    assert all(command.startswith(start) for command, start in zip(commands, reached, strict=True)), commands
    assert commands[6].endswith(f"ln -sfn releases/{report.release} current.new && mv -T current.new current")
    pins = json.loads(world.runner.release_json(report.release))["pins"]
    assert world.running("web") == [pins["web"]] and world.running("redis") == [pins["redis"]]
    assert world.steps() == [
        ("release", CHANGED, f"wrote /opt/demo/releases/{report.release}"),
        ("images", CHANGED, "brought 2"),
        ("compose up", CHANGED, report.release),
        ("health gate", OK, "2 services healthy in 0.0 s"),
        ("current", CHANGED, f"-> {report.release}"),
    ]


def test_the_same_release_again_changes_nothing(world: World) -> None:
    world.deploy("v1")
    first = world.report.release
    containers = [c.id for c in world.runner.engine.created]
    result, commands = world.deploy("v1")
    assert (result, world.report.release, world.report.previous) == ("unchanged", first, first)
    assert list(world.runner.releases) == [first] and world.runner.current == first
    assert compose_ups(commands) == []
    assert [c.id for c in world.runner.engine.created] == containers
    assert world.steps()[-2:] == [
        ("release", OK, f"unchanged: {first} has the same files, .env and images"),
        ("compose up", OK, "every container runs this release as compose would, healthy"),
    ]


def test_an_exited_container_of_the_same_release_is_converged_without_a_new_release(world: World) -> None:
    world.deploy("v1")
    first = world.report.release
    web = world.runner.service_containers("web")[0]
    web.state = "exited"  # stopped by hand, or crashed
    result, commands = world.deploy("v1")
    assert (result, world.report.release, world.report.previous) == ("unchanged", first, first)
    assert list(world.runner.releases) == [first]
    assert compose_ups(commands) == ["up -d --no-build --remove-orphans --quiet-pull"]
    assert web.state == "running"
    assert ("health gate", OK, "2 services healthy in 0.0 s") in world.steps()


def test_a_release_edited_on_the_host_is_replaced_by_a_new_one(world: World) -> None:
    world.deploy("v1")
    first = world.report.release
    world.runner.releases[first]["compose.yaml"] += "# edited by hand\n"
    result, _ = world.deploy("v1")
    second = world.report.release
    assert (result, world.report.previous) == ("deployed", first)
    assert second != first and world.runner.current == second
    assert "edited by hand" not in world.runner.releases[second]["compose.yaml"]
    assert ("release", CHANGED, f"{first} was edited on the host: a new release replaces it") in world.steps()


def test_a_release_failing_its_gate_is_recorded_failed_and_the_host_goes_back(world: World) -> None:
    world.deploy("v1")
    first = world.report.release
    world.runner.health[image_id("demo/web:v2")] = ("unhealthy", "HTTP 500 from /health")
    result, commands = world.deploy("v2")
    report = world.report
    assert (result, report.previous) == ("rolled-back", first)
    # the host is the report's own field: the error does not name it again
    assert report.error == "service web (container demo-web-3) is unhealthy; last health output: HTTP 500 from /health"
    assert report.failing is not None and report.failing.service == "web"
    assert world.runner.current == first
    assert world.status(report.release) == "failed" and world.status(first) == "active"
    assert world.running("web") == [json.loads(world.runner.release_json(first))["pins"]["web"]]
    ups = [c.split(" && ")[0] for c in commands if c.endswith("up -d --no-build --remove-orphans --quiet-pull")]
    assert ups == [f"cd /opt/demo/releases/{report.release}", f"cd /opt/demo/releases/{first}"]
    assert ("deploy", FAILED, report.error) in world.steps()
    assert world.steps()[-1] == ("restore", CHANGED, f"back on {first}")


def test_a_first_release_failing_its_gate_has_nothing_to_go_back_to(world: World) -> None:
    world.runner.health[image_id("redis:7")] = ("unhealthy", "NOAUTH")
    result, _ = world.deploy("v1")
    assert result == "failed"
    assert "service redis (container demo-redis-1) is unhealthy" in world.report.error
    assert world.runner.current is None
    assert world.steps()[-1] == ("restore", SKIPPED, "no previous release to go back to")


def test_a_running_swappable_service_is_deployed_blue_green(tmp_path: Path) -> None:
    world = World(tmp_path, swap_web=True)
    world.deploy("v1")
    old = world.runner.service_containers("web")[0]
    result, commands = world.deploy("v2")
    assert result == "deployed"
    assert any(c.endswith("up -d --no-recreate --no-build --scale web=2 web") for c in commands)
    assert old.signals == ["SIGTERM"] and old.name in world.runner.engine.removed
    assert world.running("web") == [json.loads(world.runner.release_json(world.report.release))["pins"]["web"]]
    assert 2.0 in world.clock.sleeps  # the drain
    assert ("compose up", CHANGED, f"{world.report.release} (swapped web blue-green)") in world.steps()


def test_rollback_goes_back_to_the_previous_release(world: World) -> None:
    world.deploy("v1")
    first = world.report.release
    world.deploy("v2")
    second = world.report.release
    world.reporter.events.clear()
    report = world.orchestrator.rollback_host(world.host, None)
    assert (report.result, report.release, report.previous) == ("deployed", first, second)
    assert world.runner.current == first and world.orchestrator.current(world.host) is not None
    assert world.running("web") == [json.loads(world.runner.release_json(first))["pins"]["web"]]
    assert world.steps()[-1] == ("current", CHANGED, f"-> {first}")
