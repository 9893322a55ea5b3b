"""The swarm health gate from canned service and task lists: update status and task states decide,
a rolled-back update fails naming the service and its task error, a slow one times out."""

from __future__ import annotations

from typing import Any

import pytest

from ops.deploy.swarm_gate import Snapshot, service_states, wait_converged
from ops.errors import HealthGateError

V1, V2 = "reg/demo/web@sha256:" + "1" * 64, "reg/demo/web@sha256:" + "2" * 64


def service(
    name: str, image: str, *, replicas: int | None = 1, update: str = "", message: str = "", previous: str = ""
) -> dict[str, Any]:
    mode = {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}}
    data: dict[str, Any] = {
        "ID": f"id-{name}",
        "Spec": {"Name": f"demo_{name}", "Mode": mode, "TaskTemplate": {"ContainerSpec": {"Image": image}}},
    }
    if previous:
        data["PreviousSpec"] = {"TaskTemplate": {"ContainerSpec": {"Image": previous}}}
    if update:
        data["UpdateStatus"] = {"State": update, "Message": message}
    return data


def task(
    task_id: str,
    name: str,
    image: str,
    state: str,
    *,
    desired: str = "running",
    err: str = "",
    at: str = "1",
    container: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Err": err, "Timestamp": at}
    if container:
        status["ContainerStatus"] = {"ContainerID": container, "ExitCode": 0}
    return {
        "ID": task_id,
        "ServiceID": f"id-{name}",
        "DesiredState": desired,
        "Spec": {"ContainerSpec": {"Image": image}},
        "Status": status,
    }


def test_a_service_running_its_replicas_of_the_current_image_is_ok() -> None:
    states = service_states(
        "demo",
        [service("web", V2, replicas=2, update="completed")],
        [
            task("a", "web", V2, "running"),
            task("b", "web", V2, "running"),
            task("c", "web", V1, "shutdown", desired="shutdown"),
        ],
        known=set(),
    )
    assert [(s.name, s.running, s.desired, s.ok) for s in states] == [("web", 2, 2, True)]


def test_an_update_in_progress_is_not_ok_even_with_old_tasks_running() -> None:
    states = service_states(
        "demo",
        [service("web", V2, update="updating")],
        [task("a", "web", V1, "running"), task("b", "web", V2, "starting")],
        set(),
    )
    assert not states[0].ok and not states[0].failed and states[0].running == 0


def test_a_global_service_wants_one_task_per_node_it_was_given() -> None:
    tasks = [task(f"p{n}", "proxy", V1, "running") for n in range(3)]
    states = service_states("demo", [service("proxy", V1, replicas=None)], tasks, set())
    assert (states[0].desired, states[0].running, states[0].ok) == (3, 3, True)


def sequence(*snapshots: Snapshot) -> Any:
    remaining = list(snapshots)

    def read() -> Snapshot:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return read


def test_the_gate_waits_until_the_update_completed() -> None:
    updating = (
        [service("web", V2, update="updating")],
        [task("old", "web", V1, "running"), task("n", "web", V2, "starting")],
    )
    done = ([service("web", V2, update="completed")], [task("n", "web", V2, "running")])
    sleeps: list[float] = []
    report = wait_converged(
        sequence(updating, updating, done), "demo", ["web"], where="m1", timeout=60, known={"old"}, sleep=sleeps.append
    )
    assert report[0].ok and len(sleeps) == 2


def test_an_update_swarm_rolled_back_fails_naming_the_service_and_its_task_error() -> None:
    rolled_back = (
        [service("web", V1, update="rollback_completed", message="rollback completed")],
        [
            task("old", "web", V1, "running"),
            task(
                "n", "web", V2, "failed", desired="shutdown", err="task: non-zero exit (1): unhealthy container", at="2"
            ),
        ],
    )
    with pytest.raises(HealthGateError) as caught:
        wait_converged(
            sequence(rolled_back), "demo", ["web"], where="m1", timeout=60, known={"old"}, sleep=lambda s: None
        )
    error = caught.value
    assert error.one_line().startswith(
        "m1: service web failed its update: task: non-zero exit (1): unhealthy container"
    )
    assert error.service is not None and error.service.service == "web"


def test_an_old_failure_does_not_fail_a_new_gate() -> None:
    snapshot = (
        [service("web", V1, update="completed")],
        [
            task("old", "web", V1, "running"),
            *(task(f"f{n}", "web", V1, "failed", desired="shutdown", err="x") for n in range(3)),
        ],
    )
    report = wait_converged(
        sequence(snapshot),
        "demo",
        ["web"],
        where="m1",
        timeout=60,
        known={"old", "f0", "f1", "f2"},
        sleep=lambda s: None,
    )
    assert report[0].ok


def test_a_new_service_that_keeps_crashing_fails_without_waiting_for_the_timeout() -> None:
    crashing = (
        [service("web", V1)],
        [
            task(f"f{n}", "web", V1, "failed", desired="shutdown", err="task: non-zero exit (2)", at=str(n))
            for n in range(3)
        ],
    )
    with pytest.raises(HealthGateError, match=r"service web keeps failing: task: non-zero exit \(2\)"):
        wait_converged(sequence(crashing), "demo", ["web"], where="m1", timeout=600, known=set(), sleep=lambda s: None)


def test_a_service_still_starting_at_the_deadline_fails_saying_how_far_it_got() -> None:
    starting = ([service("web", V1, replicas=2)], [task("a", "web", V1, "running"), task("b", "web", V1, "starting")])
    now = iter(range(0, 1000, 10))
    with pytest.raises(HealthGateError, match=r"service web not running after 30 s \(1/2 running, update created\)"):
        wait_converged(
            sequence(starting),
            "demo",
            ["web"],
            where="m1",
            timeout=30,
            known=set(),
            clock=lambda: next(now),
            sleep=lambda s: None,
        )


def test_a_service_missing_from_the_stack_is_waited_for_then_named() -> None:
    now = iter(range(0, 1000, 10))
    with pytest.raises(HealthGateError, match="service redis not running"):
        wait_converged(
            sequence(([], [])),
            "demo",
            ["redis"],
            where="m1",
            timeout=20,
            known=set(),
            clock=lambda: next(now),
            sleep=lambda s: None,
        )


def test_a_new_task_stopped_for_its_health_check_is_named_when_it_left_no_error() -> None:
    rolled_back = (
        [service("web", V1, update="rollback_completed", message="update rolled back due to failure of task x")],
        [task("old", "web", V1, "running"), task("v37rytbp9884aumaoqn", "web", V2, "complete", desired="shutdown")],
    )
    with pytest.raises(HealthGateError) as caught:
        wait_converged(
            sequence(rolled_back), "demo", ["web"], where="m1", timeout=60, known={"old"}, sleep=lambda s: None
        )
    assert caught.value.message == (
        "service web failed its update: its new task v37rytbp9884 was stopped before it was healthy (complete)"
    )
    assert caught.value.hint == "update rolled back due to failure of task x"


def test_the_task_named_is_the_one_that_ran_the_failing_image_not_one_the_rollback_stopped() -> None:
    """After a rollback the newest ended tasks are often not the failing one: a task of the new image
    cancelled before it started, an old one the rollback replaced. The one that ran the new image is."""
    rolled_back = (
        [service("web", V1, replicas=2, update="rollback_completed", message="update rolled back", previous=V2)],
        [
            task("v1-kept", "web", V1, "running", container="c1"),
            task("v2-unhealthy-task", "web", V2, "complete", desired="shutdown", at="2", container="c2"),
            task("v2-never-started", "web", V2, "accepted", desired="shutdown", at="3"),
            task("v1-replaced-task", "web", V1, "shutdown", desired="shutdown", at="4", container="c3"),
            task("v1-new", "web", V1, "running", at="4", container="c4"),
        ],
    )
    with pytest.raises(HealthGateError) as caught:
        wait_converged(
            sequence(rolled_back), "demo", ["web"], where="m1", timeout=60, known={"v1-kept"}, sleep=lambda s: None
        )
    assert caught.value.message == (
        "service web failed its update: its new task v2-unhealthy was stopped before it was healthy (complete)"
    )
