"""Image deliveries through a fake runner: the registry of IMAGE_SOURCE names, building and
pulling on the host (and what a host still lacks afterwards), sending only what a host lacks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ops.config import HostSpec, RegistrySettings
from ops.console import CHANGED, OK, RecordingReporter
from ops.errors import ConfigError, DeployError
from ops.images import BuildOnHost, PullImages, ReleaseImages, SendImages, delivery_for
from ops.images.registry import LocalRegistryOverSSH, RegistryImages
from ops.images.sources import SOURCES
from ops.transport import Host
from tests.fakes import FakeRunner

REFS = {"web": "demo/web:v2", "redis": "redis:7"}


def compose(args: str) -> str:
    return f"cd /opt/demo/releases/r1 && docker compose -p demo {args}"


def test_every_image_source_names_one_delivery(tmp_path: Path) -> None:
    env = SimpleNamespace(
        root=tmp_path,
        project="demo",
        deploy=SimpleNamespace(image_source="registry"),
        registry=RegistrySettings("", "", ""),
    )
    assert SOURCES == ("registry", "send", "build", "pull")
    kinds = [RegistryImages, SendImages, BuildOnHost, PullImages]
    assert [type(delivery_for(env, name)) for name in SOURCES] == kinds  # type: ignore[arg-type]
    assert [delivery_for(env, name).name for name in SOURCES] == list(SOURCES)  # type: ignore[arg-type]
    assert isinstance(delivery_for(env), RegistryImages)  # type: ignore[arg-type]
    assert isinstance(delivery_for(env).registry, LocalRegistryOverSSH)  # type: ignore[arg-type,attr-defined]
    with pytest.raises(ConfigError, match="unknown image source 'ftp'"):
        delivery_for(env, "ftp")  # type: ignore[arg-type]


def test_building_on_the_host_runs_compose_build_in_the_release_and_reads_the_ids() -> None:
    runner = FakeRunner({"docker image inspect": (0, "sha256:web2\nsha256:redis7\n")})
    reporter = RecordingReporter()
    delivered = BuildOnHost().bring(Host(HostSpec("a"), runner), ReleaseImages(REFS, {}, compose), reporter)
    assert delivered.ids == {"web": "sha256:web2", "redis": "sha256:redis7"} and delivered.sent == 0
    assert runner.commands[0] == compose("build --quiet")
    assert [(e.step, e.status, e.detail) for e in reporter.events] == [("images", CHANGED, "built on host")]


def test_a_pull_that_leaves_images_missing_says_which() -> None:
    runner = FakeRunner({"2>/dev/null": (0, ""), "docker image inspect": (1, "No such image")})
    with pytest.raises(DeployError) as raised:
        PullImages().bring(Host(HostSpec("a"), runner), ReleaseImages(REFS, {}, compose), RecordingReporter())
    assert raised.value.one_line() == "a: images missing after pull: redis, web"
    assert runner.commands[0] == compose("pull --quiet")


def test_sending_touches_no_engine_when_the_host_has_every_image() -> None:
    runner = FakeRunner({"docker image inspect": (0, "sha256:web2\nsha256:redis7\n")})
    reporter = RecordingReporter()

    def engine() -> None:
        raise AssertionError("nothing to send: the local engine is not needed")

    local = {"web": "sha256:web2", "redis": "sha256:redis7"}
    delivered = SendImages(engine).bring(  # type: ignore[arg-type]
        Host(HostSpec("a"), runner), ReleaseImages(REFS, local, compose), reporter
    )
    assert delivered.ids == local and delivered.sent == 0
    assert [(e.step, e.status, e.detail) for e in reporter.events] == [("images", OK, "all present")]
    assert len(runner.commands) == 1  # one inspect, nothing built, pulled or loaded
