"""Blue-green swap of one compose service: start the new beside the old, gate, drain, retire.

1. record the old containers (N) and start N new ones from the new image in the same project
   and networks (compose --scale 2N --no-recreate); the proxy retries a refused connection on
   another upstream, so a new container that is not listening yet costs no request;
2. gate on every new container's health (start_period honoured by Docker itself);
3. take the old containers out of rotation: SIGTERM makes a well-behaved server close its
   listener at once (the proxy's connects are refused and retried on the new side) and finish
   what is in flight; wait the drain period, then stop with the service's grace period and remove;
4. a new container that fails its gate is removed and the old keep serving.
Re-running after an interruption converges: whatever runs the target image and is healthy is
kept, everything else of the service is retired. `swap` is `inv swap`: one service, every host
(in batches) under the deploy lock. A swap never touches volumes or other services.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, Reporter
from ops.deploy.health import ServiceHealth, container_health, gate_error
from ops.deploy.orchestrator import HostDeployReport
from ops.deploy.prepare import prepare
from ops.deploy.releases import Release, ReleaseStore, pin_tag
from ops.deploy.rollout import DeployResult, roll_out
from ops.errors import DeployError, HealthGateError, OpsError
from ops.host.labels import PROJECT_LABEL, SERVICE_LABEL
from ops.images import ImageDelivery, delivery_for, send_if_missing
from ops.transport import Fleet, Host
from ops.transport.docker import engine_calls


@dataclass
class SwapReport:
    host: str
    service: str
    result: str  # swapped | unchanged | failed
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    failing: ServiceHealth | None = None


def service_containers(host: Host, project: str, service: str) -> list[Any]:
    labels = [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]
    with engine_calls(host.name, f"listing the containers of {service}"):
        return list(host.docker().containers.list(all=True, filters={"label": labels}))


def _image_id(container: Any) -> str:
    """The container's image ID, from its inspect data (container.image would ask the engine again)."""
    return str(container.attrs.get("Image", ""))


def _health(container: Any, where: str) -> str:
    with engine_calls(where, "reading a container's state"):
        container.reload()
    state = container.attrs.get("State", {})
    if state.get("Status") != "running":
        return "exited"
    health = state.get("Health")
    return str(health.get("Status", "starting")) if health else "running"


def _wait_new_healthy(
    host: Host,
    containers: list[Any],
    timeout: float,
    service: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    deadline = clock() + timeout
    while True:
        states = {c.name: _health(c, host.name) for c in containers}
        bad = [c for c in containers if states[c.name] in ("unhealthy", "exited")]
        if bad:
            raise _failure(host, service, bad[0])
        if all(state in ("healthy", "running") for state in states.values()):
            return
        if clock() >= deadline:
            waiting = next(c for c in containers if states[c.name] not in ("healthy", "running"))
            raise _failure(host, service, waiting, timeout)
        sleep(0.5)


def _failure(host: Host, service: str, container: Any, timeout: float | None = None) -> HealthGateError:
    """A new container that failed (or, with timeout, is still starting when the gate's time is up)."""
    health = container_health(service, container)
    if timeout is None or health.failed:
        return gate_error(host, health, health.describe())
    return gate_error(
        host,
        health,
        f"service {service} (new container {container.name}) is still {health.state} after {timeout:.0f} s",
    )


def _retire(
    host: Host,
    containers: list[Any],
    drain: float,
    grace: int,
    reporter: Reporter,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Out of rotation first (SIGTERM: listener closed, in-flight finishing), then stop and remove."""
    for container in containers:
        try:
            container.kill(signal="SIGTERM")
        except Exception:  # noqa: S112 - already stopped: nothing to drain
            continue
    if containers:
        reporter.step(host.name, "drain", OK, f"{len(containers)} old out of rotation, draining {drain:.0f} s")
        sleep(drain)
    for container in containers:
        container.reload()
        if container.status == "running":
            container.stop(timeout=grace)
        container.remove(v=False)


def swap_service(
    host: Host,
    store: ReleaseStore,
    release: Release,
    service: str,
    *,
    timeout: float,
    drain: float,
    grace: int = 10,
    reporter: Reporter,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SwapReport:
    """Swap the service's containers on one host to the image `release` pins for it.

    The release's override file is rewritten to that image first (compose starts new containers
    from it); when the new side fails, the previous override content is put back.
    """
    started = clock()
    project = store.project
    target = release.images[service]
    containers = service_containers(host, project, service)
    old = [c for c in containers if _image_id(c) != target]
    healthy_new = [c for c in containers if _image_id(c) == target and _health(c, host.name) in ("healthy", "running")]
    report = SwapReport(host.name, service, "failed", old=[c.name for c in old])
    for container in containers:  # a broken new container left by an interrupted swap
        if _image_id(container) == target and container not in healthy_new:
            container.remove(force=True)
    if not old and healthy_new:
        report.result, report.new = "unchanged", [c.name for c in healthy_new]
        reporter.step(host.name, f"swap {service}", OK, "already on the target image")
        return report
    count = max(len(old), 1)
    kept = {c.id for c in [*old, *healthy_new]}
    store.write_override(release)
    try:
        scale = len(old) + max(count, len(healthy_new))
        host.run(
            store.compose_command(
                release, f"up -d --no-recreate --no-build --scale {service}={scale} {shlex.quote(service)}"
            ),
            timeout=300,
        )
        new = [c for c in service_containers(host, project, service) if _image_id(c) == target]
        reporter.step(host.name, f"swap {service}", CHANGED, f"{len(new)} new beside {len(old)} old")
        _wait_new_healthy(host, new, timeout, service, clock, sleep)
    except OpsError as error:
        for container in service_containers(host, project, service):
            if container.id not in kept:
                container.remove(force=True)
        reporter.step(
            host.name, f"swap {service}", FAILED, f"{error.line_for(host.name)}; the old containers keep serving"
        )
        report.error = error.line_for(host.name)
        report.failing = getattr(error, "service", None)
        report.seconds = clock() - started
        return report
    _retire(host, old, drain, grace, reporter, sleep)
    report.result, report.new = "swapped", [c.name for c in new]
    report.seconds = clock() - started
    reporter.step(host.name, f"swap {service}", CHANGED, f"retired {len(old)} old, {report.seconds:.1f} s in all")
    return report


def swap_to_image(
    host: Host,
    project: str,
    service: str,
    image: str,
    *,
    version: str | None,
    timeout: float,
    drain: float,
    grace: int,
    reporter: Reporter,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SwapReport:
    """`inv swap`: swap a service of the current release to an image present on the host, and record it."""
    store = ReleaseStore(host, project)
    current_id = store.current_id()
    release = store.get(current_id) if current_id else None
    if release is None or service not in release.pins:
        raise DeployError(
            f"no current release with service {service!r} on this host",
            where=host.name,
            hint="deploy the stack first (inv deploy)",
        )
    found = host.run(f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(image)}", check=False)
    if not found.ok:
        raise DeployError(f"image {image} is not on the host", where=host.name, hint="bring it with --version")
    target = found.stdout.strip()
    pin = pin_tag(project, service, target.split(":")[-1][:12])
    host.run(f"docker tag {shlex.quote(target)} {shlex.quote(pin)}")
    swapped = replace(
        release,
        pins={**release.pins, service: pin},
        images={**release.images, service: target},
        version=version or release.version,
    )
    report = swap_service(
        host,
        store,
        swapped,
        service,
        timeout=timeout,
        drain=drain,
        grace=grace,
        reporter=reporter,
        clock=clock,
        sleep=sleep,
    )
    if report.result == "failed":
        store.write_override(release)
    else:
        # The current release now tells the truth: deploy, rollback and status see the new image.
        store.write_metadata(swapped)
    return report


def swap(
    env: Environment,
    reporter: Reporter,
    service: str,
    *,
    version: str | None = None,
    image: str | None = None,
    timeout: float | None = None,
    drain: float | None = None,
    hosts: list[str] | None = None,
    batch: int = 0,
    lock_wait: float = 0,
    delivery: ImageDelivery | None = None,
) -> DeployResult:
    """Swap one service blue-green on every host (in batches) to a new version or image."""
    if bool(version) == bool(image):
        raise DeployError("give exactly one of --version and --image")
    started = time.monotonic()
    result = DeployResult("swap", env.name, version or image or "")
    delivery = delivery or delivery_for(env)
    prepared = prepare(env, reporter, version, delivery=delivery) if version else None
    if prepared is not None:
        spec = prepared.stack.service(service)
        if spec.container_name or spec.published_ports:
            raise DeployError(
                f"service {service} has a container_name or published ports: two cannot run side by side",
                hint="publish through a proxy service and drop container_name",
            )
        target = prepared.refs[service]
    else:
        target = str(image)
    gate_timeout = timeout or env.deploy.health_timeout
    drain_s = drain if drain is not None else env.deploy.swap_drain

    def one(host: Host) -> HostDeployReport:
        begun = time.monotonic()
        if prepared is not None:
            store = ReleaseStore(host, env.project)
            current = store.get(store.current_id() or "")
            if current is None:
                raise DeployError("no current release on this host", where=host.name, hint="run inv deploy first")
            images = prepared.only(service).images(lambda args: store.compose_command(current, args))
            delivery.bring(host, images, reporter)
        else:
            send_if_missing(host, target, reporter)
        swapped = swap_to_image(
            host,
            env.project,
            service,
            target,
            version=version,
            timeout=gate_timeout,
            drain=drain_s,
            grace=10,
            reporter=reporter,
        )
        outcome = "deployed" if swapped.result in ("swapped", "unchanged") else "failed"
        return HostDeployReport(
            host.name, outcome, error=swapped.error, failing=swapped.failing, seconds=time.monotonic() - begun
        )

    reason = f"swap {service} to {version or image}"
    with Fleet.connect(env, only=hosts) as fleet:
        result.hosts = roll_out(
            env,
            fleet,
            one,
            reporter,
            action=f"swap {service}",
            version=version or str(image),
            reason=reason,
            batch=batch,
            lock_wait=lock_wait,
        )
    result.seconds = time.monotonic() - started
    return result
