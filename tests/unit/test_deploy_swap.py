"""The blue-green swap on a fake compose host: the new side healthy (old drained and retired), the
new side failing (undone, the old keep serving), an interrupted swap converging when run again.
No SSH, no Docker; clocks and sleep are the test's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.console import CHANGED, FAILED, OK
from ops.deploy.swap import SwapReport, swap_to_image
from tests.fake_compose import World, image_id


class Killed(Exception):
    """The swapping process dies here (an SSH drop, a SIGKILL): no cleanup runs."""


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World(tmp_path, swap_web=True)
    world.deploy("v1")
    world.reporter.events.clear()
    for tag in ("demo/web:v2", "demo/web:broken"):  # images already on the host
        world.runner.tags[tag] = image_id(tag)
    return world


def swap(world: World, image: str, *, sleep: Callable[[float], None] | None = None) -> tuple[SwapReport, list[str]]:
    before = len(world.runner.commands)
    report = swap_to_image(
        world.host,
        "demo",
        "web",
        image,
        version=None,
        timeout=30,
        drain=2,
        grace=10,
        reporter=world.reporter,
        clock=world.clock,
        sleep=sleep or world.clock.sleep,
    )
    return report, world.runner.commands[before:]


def current_images(world: World) -> dict[str, str]:
    assert world.runner.current is not None
    return dict(json.loads(world.runner.release_json(world.runner.current))["images"])


def test_a_healthy_new_side_takes_over_and_the_old_is_drained_then_retired(world: World) -> None:
    old = world.runner.service_containers("web")[0]
    report, commands = swap(world, "demo/web:v2")
    assert (report.result, report.error, report.old) == ("swapped", "", [old.name])
    assert any(c.endswith("up -d --no-recreate --no-build --scale web=2 web") for c in commands)
    assert old.signals == ["SIGTERM"] and old.name in world.runner.engine.removed
    [new] = world.runner.service_containers("web")
    assert (new.name, new.image, new.state) == (report.new[0], image_id("demo/web:v2"), "running")
    assert current_images(world)["web"] == image_id("demo/web:v2")  # release.json tells the truth
    assert world.clock.sleeps == [2]  # the drain, after the new side passed its gate
    assert [(e.step, e.status, e.detail) for e in world.reporter.events] == [
        ("swap web", CHANGED, "1 new beside 1 old"),
        ("drain", OK, "1 old out of rotation, draining 2 s"),
        ("swap web", CHANGED, "retired 1 old, 2.0 s in all"),
    ]


def test_a_failing_new_side_is_removed_and_the_old_keep_serving(world: World) -> None:
    world.runner.health[image_id("demo/web:broken")] = ("unhealthy", "connection refused")
    [old] = world.runner.service_containers("web")
    override = world.runner.releases[str(world.runner.current)]["compose.opskit.yaml"]
    report, _ = swap(world, "demo/web:broken")
    assert report.result == "failed"
    assert report.error.startswith("service web (container demo-web-")
    assert report.error.endswith(" is unhealthy; last health output: connection refused")
    assert report.failing is not None and report.failing.health_output == "connection refused"
    assert world.runner.service_containers("web") == [old]
    assert (old.state, old.signals) == ("running", [])
    assert current_images(world)["web"] == image_id("demo/web:v1")
    assert world.runner.releases[str(world.runner.current)]["compose.opskit.yaml"] == override
    event = world.reporter.events[-1]
    assert (event.step, event.status) == ("swap web", FAILED)
    assert event.detail == f"{report.error}; the old containers keep serving"


def test_a_swap_killed_after_the_new_side_started_converges_when_run_again(world: World) -> None:
    [old] = world.runner.service_containers("web")

    def killed(seconds: float) -> None:
        raise Killed

    with pytest.raises(Killed):
        swap(world, "demo/web:v2", sleep=killed)  # dies at the drain: old and new side by side
    assert len(world.runner.service_containers("web")) == 2
    created = world.runner.engine.serial
    report, _ = swap(world, "demo/web:v2")
    assert report.result == "swapped"
    assert world.runner.engine.serial == created  # the healthy new one is kept, none started
    assert old.name in world.runner.engine.removed
    assert [c.image for c in world.runner.service_containers("web")] == [image_id("demo/web:v2")]
    assert current_images(world)["web"] == image_id("demo/web:v2")


def test_a_swap_killed_while_the_new_side_was_starting_replaces_it_when_run_again(world: World) -> None:
    world.runner.health[image_id("demo/web:v2")] = ("starting", "")

    def killed(seconds: float) -> None:
        raise Killed

    with pytest.raises(Killed):
        swap(world, "demo/web:v2", sleep=killed)  # dies waiting for the new side's health
    [old, left] = world.runner.service_containers("web")
    del world.runner.health[image_id("demo/web:v2")]
    report, _ = swap(world, "demo/web:v2")
    assert report.result == "swapped"
    assert {old.name, left.name} <= set(world.runner.engine.removed)  # the half-started one too
    [new] = world.runner.service_containers("web")
    assert new.image == image_id("demo/web:v2") and new.name not in (old.name, left.name)


def test_a_service_already_on_the_image_is_left_alone(world: World) -> None:
    report, commands = swap(world, "demo/web:v1")
    assert report.result == "unchanged"
    assert not any("docker compose" in c for c in commands)
    assert [(e.step, e.status, e.detail) for e in world.reporter.events] == [
        ("swap web", OK, "already on the target image")
    ]
