"""The swarm orchestrator: a release deployed once to a Docker Swarm through a manager, its images
pulled by digest on every node first.

Order: the stack file is checked (nothing changes when a key is refused); every node pulls the
release's images by digest (a node without an image would reject its task, moby#31169); the release
directory with its stack file is written on every manager; the first manager runs `docker stack
deploy` and the swarm gate (ops.deploy.swarm_gate); a failed gate puts the WHOLE stack back on the
previous release's stack file (a swarm rolls back per service only, docker/cli#595). `current`
switches on the managers once the gate passed. Never takes the lock (the rollout holds it on every
node) and never touches volumes.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ops.config import Environment
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Reporter
from ops.deploy.health import ServiceHealth
from ops.deploy.orchestrator import HostDeployReport
from ops.deploy.prepare import Prepared
from ops.deploy.releases import Release, ReleaseStore, new_release_id, prune, rollback_target
from ops.deploy.stackfile import STACK_FILE, StackFile, stack_file
from ops.deploy.swarm_gate import SwarmService, failed_task_evidence, read_stack, task_ids, wait_converged
from ops.errors import DeployError, HealthGateError, HostError, OpsError
from ops.host.labels import NODE_HOST_LABEL
from ops.host.lock import operator
from ops.images import Delivered, ImageDelivery, delivery_for, host_image_ids
from ops.images.registry import RegistryImages
from ops.stack.compose import duration_seconds
from ops.transport import Fleet, Host
from ops.transport.shell import last_line

STACK_DEPLOY = "docker stack deploy --prune --resolve-image never -c {file} {stack}"
# Every secret and config of the stack, removed unless a service still uses it (docker refuses
# those); stdout lists the removed ones.
REMOVE_UNUSED = (
    "for kind in secret config; do docker $kind ls --filter label=com.docker.stack.namespace={stack}"
    " --format '{{{{.ID}}}}' | xargs -r docker $kind rm 2>/dev/null; done; true"
)


# On a manager: each node's labels, state and role.
NODES = (
    "docker node ls -q | xargs -r docker node inspect --format '{{json .Spec.Labels}}|{{.Status.State}}|{{.Spec.Role}}'"
)


def down_workers(leader: Host) -> set[str]:
    """The hosts (as HOSTS names them, by each node's host label) of workers the swarm reports down."""
    down = set()
    for line in leader.run(NODES, timeout=60).stdout.splitlines():
        if line.count("|") < 2:
            continue
        labels_text, state, role = line.rsplit("|", 2)
        try:
            labels = json.loads(labels_text or "null") or {}
        except ValueError:
            continue
        if state.strip() == "down" and role.strip() == "worker" and labels.get(NODE_HOST_LABEL):
            down.add(str(labels[NODE_HOST_LABEL]))
    return down


def managers(hosts: list[Host]) -> list[Host]:
    """The swarm's managers among hosts (role `manager`); DeployError when there is none."""
    found = [host for host in hosts if host.spec.manager]
    if not found:
        raise DeployError("no host has the manager role", hint="mark one (or 3) with /manager in HOSTS")
    return found


def gate_timeout(env: Environment, spec: dict[str, object]) -> float:
    """HEALTH_TIMEOUT (or a start_period's need) plus the longest update monitor of the stack file."""
    services = dict(spec.get("services") or {})  # type: ignore[call-overload]
    monitors = [
        duration_seconds(str(((s.get("deploy") or {}).get("update_config") or {}).get("monitor") or "5s"))
        for s in services.values()
    ]
    starts = [
        duration_seconds(str((s.get("healthcheck") or {}).get("start_period") or "0s")) for s in services.values()
    ]
    return max(env.deploy.health_timeout, max(starts, default=0) + 30) + max(monitors, default=5)


def _stack_archive(stack: StackFile) -> bytes:
    """The stack file and the secret files beside it, mode 0600 (the stack file holds the .env's values)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {STACK_FILE: stack.text.encode(), **stack.files}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def env_values(env_text: str) -> dict[str, str]:
    from dotenv import dotenv_values

    return {key: value or "" for key, value in dotenv_values(stream=io.StringIO(env_text)).items()}


class SwarmOrchestrator:
    """Releases of one stack on a Docker Swarm (implements ops.deploy.orchestrator.ClusterOrchestrator)."""

    def __init__(
        self,
        env: Environment,
        reporter: Reporter,
        *,
        delivery: ImageDelivery | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.env = env
        self.reporter = reporter
        self.delivery = delivery or delivery_for(env)
        self.clock = clock
        self.sleep = sleep
        self.now = now

    def current(self, host: Host) -> Release | None:
        return ReleaseStore(host, self.env.project).current()

    def answering(self, hosts: list[Host]) -> list[Host]:
        """The nodes a deploy or rollback works on: every host, except a worker that does not answer
        over SSH while the swarm reports its node down (its tasks already run on the others; it
        gets the images it lacks from the next deploy after it is back). Any other host that does
        not answer stops here, before anything changed."""
        probed = Fleet(hosts, self.env.parallel).map(lambda host: host.run("true", timeout=30))
        silent = {outcome.host: outcome.error.message for outcome in probed.outcomes if outcome.error}
        if not silent:
            return hosts
        answering = [host for host in hosts if host.name not in silent]
        leaders = [host for host in answering if host.spec.manager]
        if not leaders:
            raise DeployError(
                f"no manager answers ({'; '.join(f'{name}: {why}' for name, why in silent.items())})",
                hint="a swarm deploy goes through a manager: bring one back",
            )
        down = down_workers(leaders[0])
        for name, why in silent.items():
            if name not in down:
                raise DeployError(
                    f"does not answer ({why}) and the swarm does not report it as a down worker",
                    where=name,
                    hint="bring it back, or wait until `inv ops.status` shows its node down; nothing was changed",
                )
        for name in silent:
            self.reporter.step(
                name,
                "node",
                SKIPPED,
                "down in the swarm: left out (its tasks run on the other nodes; "
                f"once it is back, inv swarm.activate {name} --env {self.env.name} brings it this release's images)",
            )
        return answering

    def _check(self, prepared: Prepared, images: dict[str, str]) -> StackFile:
        if self.delivery.name != "registry":
            raise DeployError(
                f"a swarm pulls its images from a registry, not by IMAGE_SOURCE={self.delivery.name}",
                hint="set IMAGE_SOURCE=registry (this checkout's registry, or REGISTRY for a team one)",
            )
        stack = prepared.stack
        return stack_file(
            stack.config,
            images,
            project=self.env.project,
            stack_dir=stack.directory,
            env_values=env_values(prepared.env_text),
        )

    def plan_cluster(self, hosts: list[Host], prepared: Prepared) -> list[HostDeployReport]:
        leader = managers(hosts)[0]
        self._check(prepared, dict(prepared.refs))
        reports = []
        for host in hosts:
            present = host_image_ids(host, prepared.refs)
            wanted = sorted(service for service in prepared.refs if service not in present)
            self.reporter.step(
                host.name, "images", WOULD_CHANGE if wanted else OK, f"would pull: {', '.join(wanted) or 'nothing'}"
            )
            reports.append(HostDeployReport(host.name, "planned"))
        current = ReleaseStore(leader, self.env.project).current_id() or "none"
        self.reporter.step(leader.name, "stack deploy", WOULD_CHANGE, f"would write a new release (current: {current})")
        return reports

    def deploy_cluster(self, hosts: list[Host], prepared: Prepared) -> list[HostDeployReport]:
        env, reporter = self.env, self.reporter
        started = self.clock()
        leaders = managers(hosts)
        leader = leaders[0]
        self._check(prepared, dict(prepared.refs))  # a refused key changes nothing anywhere
        store = ReleaseStore(leader, env.project)
        previous = store.current()
        delivered = self._pull_everywhere(hosts, prepared)
        ids = delivered[leader.name].ids
        sent = {name: item.sent for name, item in delivered.items()}
        if (
            previous is not None
            and previous.status == "active"
            and (previous.content, previous.images)
            == (
                prepared.content,
                ids,
            )
        ):
            reporter.step(leader.name, "release", OK, f"unchanged: {previous.id} has the same files, .env and images")
            return self._converge(hosts, leader, previous, started, sent)
        digests = delivered[leader.name].digests
        lacking = sorted(set(prepared.refs) - set(digests))
        if lacking:
            raise DeployError(f"no registry digest for {', '.join(lacking)}", where=leader.name, hint="deploy again")
        stack = self._check(prepared, digests)
        for note in stack.notes:
            reporter.step(leader.name, "stack file", OK, note)
        made = self.now()
        release = Release(
            id=new_release_id(prepared.version, made),
            version=prepared.version,
            git_commit=prepared.git_commit,
            who=operator(),
            created=made.isoformat(timespec="seconds"),
            compose_files=prepared.stack.compose_files,
            images=ids,
            pins=dict(digests),
            digests=dict(digests),
            swappable=tuple(sorted(name for name, service in prepared.stack.services.items() if service.swappable)),
            content=prepared.content,
        )
        for manager in leaders:
            _write_release(manager, release, prepared.archive, _stack_archive(stack), env.project)
        reporter.step(leader.name, "release", CHANGED, f"wrote {store.path(release.id)} on {len(leaders)} managers")
        try:
            self._deploy_stack(leader, release, gate_timeout(env, stack.spec))
        except (HealthGateError, HostError, DeployError) as error:
            reporter.step(leader.name, "deploy", FAILED, error.line_for(leader.name))
            for manager in leaders:
                ReleaseStore(manager, env.project).write_metadata(release.with_status("failed"))
            outcome = self._restore(leader, previous)
            explained = self._with_evidence(hosts, leader, error)
            return self._reports(hosts, leader, outcome, release, previous, started, sent, explained)
        for manager in leaders:
            manager_store = ReleaseStore(manager, env.project)
            manager_store.activate(release)
            prune(manager_store, env.deploy.keep_releases, reporter)
        reporter.step(leader.name, "current", CHANGED, f"-> {release.id}")
        self._remove_unused(leader)
        return self._reports(hosts, leader, "deployed", release, previous, started, sent)

    def rollback_cluster(self, hosts: list[Host], to: str | None) -> list[HostDeployReport]:
        """The stack back on the previous (or named) release's stack file, images checked on every node."""
        started = self.clock()
        leaders = managers(hosts)
        leader = leaders[0]
        store = ReleaseStore(leader, self.env.project)
        current_id = store.current_id()
        target = rollback_target(store.list(), current_id, to, leader)
        current = store.get(current_id) if current_id else None
        missing = Fleet(hosts, self.env.parallel).map(lambda host: self._bring_pinned(host, target))
        for node in missing.outcomes:
            if node.error:
                raise DeployError(
                    f"node {node.host} could not check or pull the images of {target.id}: {node.error.one_line()}",
                    where=node.host,
                    hint=f"nothing was changed in the swarm; deploy {target.version} again instead",
                )
        try:
            self._deploy_stack(leader, target, self._release_timeout(leader, target))
        except (HealthGateError, HostError, DeployError) as error:
            self.reporter.step(leader.name, "rollback", FAILED, error.line_for(leader.name))
            outcome = self._restore(leader, current)
            explained = self._with_evidence(hosts, leader, error)
            result = "failed" if outcome == "failed" else "rolled-back"
            return self._reports(hosts, leader, result, target, current, started, {}, explained)
        for manager in leaders:
            manager_store = ReleaseStore(manager, self.env.project)
            if manager_store.get(target.id):
                manager_store.activate(target)
        self.reporter.step(leader.name, "current", CHANGED, f"-> {target.id}")
        self._remove_unused(leader)
        return self._reports(hosts, leader, "deployed", target, current, started, {})

    def _with_evidence(self, hosts: list[Host], leader: Host, error: OpsError) -> OpsError:
        """A failed gate's error with what the failing service's newest stopped task left on its
        node: the last health output or exit code in the line, its log lines for the explanation.
        The error as it was when there is nothing to add or the node does not answer."""
        failing = getattr(error, "service", None)
        if not isinstance(error, HealthGateError) or not isinstance(failing, ServiceHealth):
            return error
        try:
            found = failed_task_evidence(leader, hosts, self.env.project, failing.service)
        except OpsError:
            return error
        if found is None:
            return error
        said = f"last health output: {last_line(found.health_output, limit=200)}" if found.health_output else ""
        if not said and found.exit_code is not None:
            said = f"exited with code {found.exit_code}" + (" (OOM-killed)" if found.oom_killed else "")
        message = f"{error.message}; its container {found.container} on {found.node}: {said}" if said else error.message
        richer = HealthGateError(message, where=error.where, hint=error.hint)
        richer.service = found
        return richer

    def _remove_unused(self, leader: Host) -> None:
        """Secrets and configs are named after their content, so each change made new ones: those no
        service uses any more go once the gate passed (a rollback's stack deploy makes them again
        from its release directory). Counted, never named: a name carries a digest of the content."""
        done = leader.run(REMOVE_UNUSED.format(stack=shlex.quote(self.env.project)), check=False)
        removed = len(done.stdout.split())
        if removed:
            self.reporter.step(leader.name, "secrets, configs", CHANGED, f"removed {removed} no service uses")

    def _bring_pinned(self, host: Host, release: Release) -> None:
        """The release's images on the node, by the digests it pins: pulled from the registry when
        the node lacks them (it joined, or its images were collected, after that release)."""
        if not isinstance(self.delivery, RegistryImages):  # _check refuses any other source for a swarm
            raise DeployError(f"IMAGE_SOURCE={self.delivery.name} cannot bring pinned images", where=host.name)
        self.delivery.bring_missing(host, release.pins, self.reporter)

    def _pull_everywhere(self, hosts: list[Host], prepared: Prepared) -> dict[str, Delivered]:
        """Every node brings the release's images by digest, all at once; DeployError naming the first
        node that could not (nothing changed in the swarm yet)."""
        pulled = Fleet(hosts, self.env.parallel).map(
            lambda host: self.delivery.bring(host, prepared.images(str), self.reporter)
        )
        for outcome in pulled.outcomes:
            if outcome.error:
                raise DeployError(
                    f"node {outcome.host} could not pull the release's images: {outcome.error.one_line()}",
                    where=outcome.host,
                    hint="nothing was changed in the swarm; fix the node or drain it, then deploy again",
                )
        return {outcome.host: outcome.value for outcome in pulled.outcomes if outcome.value is not None}

    def _release_timeout(self, leader: Host, release: Release) -> float:
        path = f"{ReleaseStore(leader, self.env.project).path(release.id)}/{STACK_FILE}"
        text = leader.run(f"cat {shlex.quote(path)}", check=False).stdout
        try:
            return gate_timeout(self.env, json.loads(text))
        except json.JSONDecodeError:
            raise DeployError(
                f"release {release.id} has no stack file", where=leader.name, hint="see inv releases"
            ) from None

    def _deploy_stack(self, leader: Host, release: Release, timeout: float) -> list[SwarmService]:
        """`docker stack deploy` of the release's stack file, then the gate on every service of it."""
        project = self.env.project
        known = task_ids(read_stack(leader, project))
        path = shlex.quote(ReleaseStore(leader, project).path(release.id))
        leader.run(f"cd {path} && " + STACK_DEPLOY.format(file=STACK_FILE, stack=shlex.quote(project)), timeout=600)
        self.reporter.step(leader.name, "stack deploy", CHANGED, release.id)
        begun = self.clock()
        states = wait_converged(
            lambda: read_stack(leader, project),
            project,
            release.pins,
            where=leader.name,
            timeout=timeout,
            known=known,
            clock=self.clock,
            sleep=self.sleep,
        )
        replicas = sum(state.running for state in states)
        self.reporter.step(
            leader.name,
            "health gate",
            OK,
            f"{len(states)} services, {replicas} tasks running in {self.clock() - begun:.1f} s",
        )
        return states

    def _restore(self, leader: Host, previous: Release | None) -> str:
        """The whole stack back on the previous release after a failed one; returns the outcome."""
        if previous is None:
            self.reporter.step(leader.name, "restore", SKIPPED, "no previous release to go back to")
            return "failed"
        try:
            self._deploy_stack(leader, previous, self._release_timeout(leader, previous))
        except OpsError as error:
            self.reporter.step(leader.name, "restore", FAILED, error.line_for(leader.name))
            return "failed"
        self.reporter.step(leader.name, "restore", CHANGED, f"the whole stack back on {previous.id}")
        return "rolled-back"

    def _converge(
        self, hosts: list[Host], leader: Host, current: Release, started: float, sent: dict[str, int]
    ) -> list[HostDeployReport]:
        """The stack already is this release: deploy its stack file again (a no-op unless the swarm
        drifted) and gate."""
        try:
            self._deploy_stack(leader, current, self._release_timeout(leader, current))
        except (HealthGateError, HostError, DeployError) as error:
            return self._reports(hosts, leader, "failed", current, current, started, sent, error)
        return self._reports(hosts, leader, "unchanged", current, current, started, sent)

    def _reports(
        self,
        hosts: list[Host],
        leader: Host,
        result: str,
        release: Release,
        previous: Release | None,
        started: float,
        sent: dict[str, int],
        error: OpsError | None = None,
    ) -> list[HostDeployReport]:
        """One report per node: the stack's outcome; the error on the manager's alone (said once)."""
        seconds = self.clock() - started
        reports = []
        for host in hosts:
            report = HostDeployReport(
                host.name,
                result,
                release.id,
                previous.id if previous else "",
                seconds,
                images_sent=sent.get(host.name, 0),
            )
            if error is not None and host is leader:
                report.error = error.line_for(host.name)
                failing = getattr(error, "service", None)
                report.failing = failing if isinstance(failing, ServiceHealth) else None
            reports.append(report)
        return reports


def _write_release(host: Host, release: Release, archive: bytes, stack: bytes, project: str) -> None:
    """The release's files, its stack file (0600) and release.json on one manager."""
    store = ReleaseStore(host, project)
    path = shlex.quote(store.path(release.id))
    unpack = f"tar -xzf - -C {path} --no-same-owner"
    host.run(f"mkdir -p {path} && {unpack}", stdin=archive)
    host.run(f"umask 077 && {unpack}", stdin=stack)
    store.write_metadata(release)
