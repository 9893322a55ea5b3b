"""The stack scans of `nox -s scan` with the real tools (the toolbox's Compose, promtool, amtool)
on the local engine: the planted invalid alert rule fails and is named; no lab hosts needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ops.console import RecordingReporter
from ops.lab import ensure_base_image, ensure_engine
from ops.pipeline.scan import compose_configs, monitoring_configs
from ops.stack.toolbox import ensure_compose, ensure_toolbox_image

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]
FIXTURES = CHECKOUT / "tests" / "fixtures" / "scan"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    reporter = RecordingReporter()
    ensure_engine(reporter)
    engine = docker.from_env(version="auto", timeout=300)
    ensure_base_image(engine, reporter)
    ensure_toolbox_image(engine, reporter)
    yield engine
    engine.close()


def test_an_invalid_alert_rule_fails_the_monitoring_scan(client: docker.DockerClient) -> None:
    result = monitoring_configs(FIXTURES, FIXTURES / "stacks", client)
    assert not result.ok
    [finding] = result.findings
    assert (finding.file, finding.rule) == ("stacks/broken/prometheus/rules/broken.yml", "promtool check rules")
    assert "parse" in finding.message


def test_the_repository_stacks_pass_and_a_broken_compose_file_fails(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    compose_bin = ensure_compose(CHECKOUT, RecordingReporter())
    assert compose_configs(CHECKOUT, CHECKOUT / "stacks", compose_bin).ok
    assert monitoring_configs(CHECKOUT, CHECKOUT / "stacks", client).ok
    broken = tmp_path / "stacks" / "shop"
    broken.mkdir(parents=True)
    (broken / "compose.yaml").write_text("services:\n  web:\n    image: shop/web:1\n    ports: 80\n")
    result = compose_configs(tmp_path, tmp_path / "stacks", compose_bin)
    [finding] = result.findings
    assert finding.file == "stacks/shop/compose.yaml"
    assert "compose file is invalid" in finding.message
