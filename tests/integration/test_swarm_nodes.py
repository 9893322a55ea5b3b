"""Swarm nodes on a 3-host lab (the session's swarm_lab): formation, status, doctor, drain."""

from __future__ import annotations

import pytest

from ops.console import RecordingReporter
from tests.integration.conftest import Lab

pytestmark = pytest.mark.integration


def manager_sees(lab: Lab, command: str) -> str:
    from ops.transport import Host, SSHRunner

    spec = lab.env.hosts[0]
    with_user = spec.as_user(lab.env.deploy_user)
    host = Host(with_user, SSHRunner.for_environment(with_user, lab.env))
    try:
        return host.run(command, timeout=60).stdout
    finally:
        host.close()


def test_a_second_provision_changes_nothing_and_the_swarm_has_three_labelled_nodes(swarm_lab: Lab) -> None:
    from ops.provision import provision

    result = provision(swarm_lab.env, RecordingReporter())
    assert result.ok and result.changed == 0, result.summary_line()
    swarm = [event.detail for report in result.hosts for event in report.events if event.step == "swarm"]
    assert swarm[0].startswith("manager (leader) of 3 nodes, advertises 172.")
    assert all(detail.startswith("worker of 3 nodes") for detail in swarm[1:])
    nodes = manager_sees(
        swarm_lab,
        "docker node ls -q | xargs docker node inspect --format '{{.Spec.Role}} {{.Status.State}} {{json .Spec.Labels}}'",
    )
    assert sorted(nodes.splitlines()) == [
        'manager ready {"opskit.role.manager":"true"}',
        'worker ready {"opskit.role.worker":"true"}',
        'worker ready {"opskit.role.worker":"true"}',
    ]
