"""Finding a service's containers on a host (logs, exec, restart, status, doctor): compose's by
their labels, a swarm stack's tasks by theirs (on whichever node runs them), each container once."""

from __future__ import annotations

from ops.config import HostSpec
from ops.oncall.services import _containers
from ops.transport import Host
from tests.fakes import FakeRunner

LISTING = "\n".join(
    [
        "c1|demo-web-1|web|||running",  # compose
        "t1|demo_redis.1.x7kq|redis|demo|demo_redis|running",  # a task whose image compose built (its labels)
        "t1|demo_redis.1.x7kq|redis|demo|demo_redis|running",  # the same, found by the stack label too
        "t2|demo_proxy.k3h.abc||demo|demo_proxy|running",  # a task of an image compose never built
    ]
)


def test_compose_containers_and_swarm_tasks_are_found_once_with_their_service() -> None:
    runner = FakeRunner(answers={"docker ps -a": (0, LISTING)})
    found = _containers(Host(HostSpec("10.0.0.1"), runner), "demo")
    assert [(c.id, c.service, c.running) for c in found] == [
        ("c1", "web", True),
        ("t1", "redis", True),
        ("t2", "proxy", True),
    ]
    (command,) = runner.commands
    assert "docker ps -a --filter label=com.docker.compose.project=demo" in command
    # A swarm's exited tasks are its history (replaced already): only the running ones are listed.
    assert "docker ps --filter label=com.docker.stack.namespace=demo" in command


def test_status_and_doctor_name_a_swarm_task_by_its_service() -> None:
    from ops.oncall.status import parse_stack, stack_script

    output = "\n".join(
        [
            "container=a1|/demo-web-1|web|web:v1|running|healthy|0|2026-11-23T10:00:00Z|0|101|false"
            "|<no value>|<no value>",  # inspect's template for labels a compose container lacks
            "container=t1|/demo_redis.1.x7kq|redis|redis:7|running||0|2026-11-23T10:00:00Z|0|102|false|demo|demo_redis",
            "container=t2|/demo_proxy.k3h.abc||proxy:1|exited||0|2026-11-23T10:00:00Z|0|0|false|demo|demo_proxy",
        ]
    )
    _, _, containers = parse_stack(output)
    assert sorted((c.service, c.name, c.state) for c in containers) == [
        ("proxy", "demo_proxy.k3h.abc", "exited"),
        ("redis", "demo_redis.1.x7kq", "running"),
        ("web", "demo-web-1", "running"),
    ]
    assert "docker ps -q --filter label=com.docker.stack.namespace=demo" in stack_script("demo")
