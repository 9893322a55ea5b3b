"""Running provisioning: connect (bootstrap user, or the deploy user once root login is closed),
read facts, apply each step's plan, and report per host; hosts run in parallel and one failing
never stops the others. Everything is told through a Reporter: never prints, never exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ops.config import Environment, HostSpec
from ops.console import CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Reporter, StepEvent
from ops.errors import CommandError, HostError, HostKeyError, OpsError
from ops.provision.facts import read_facts
from ops.provision.plan import StepLoop
from ops.provision.settings import ProvisionSettings
from ops.provision.step import Context
from ops.provision.steps.os import check_supported
from ops.provision.swarm import FormationPlan, NodeFacts, apply_change, plan_formation, read_node_facts
from ops.transport import Fleet, Host, Runner, SSHRunner
from ops.transport.shell import last_line, tail


@dataclass
class HostProvisionReport:
    """One host's provisioning: every step event, and the failing step with its output if any."""

    host: str
    user: str = ""
    os: str = ""
    events: list[StepEvent] = field(default_factory=list)
    error: OpsError | None = None
    failed_step: str | None = None
    output: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def count(self, status: str) -> int:
        return sum(1 for event in self.events if event.status == status)

    @property
    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in (OK, CHANGED, WOULD_CHANGE, SKIPPED, FAILED)}

    def to_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "user": self.user,
            "os": self.os,
            "ok": self.ok,
            "counts": self.counts,
            "failed_step": self.failed_step,
            "error": self.error.one_line() if self.error else None,
            "output": self.output,
            "seconds": round(self.seconds, 2),
            "steps": [{"step": e.step, "status": e.status, "detail": e.detail} for e in self.events],
        }


@dataclass
class ProvisionResult:
    """All hosts' reports; what the task layer renders as a summary or as --json."""

    hosts: list[HostProvisionReport] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.hosts)

    @property
    def failed(self) -> list[HostProvisionReport]:
        return [report for report in self.hosts if not report.ok]

    def count(self, status: str) -> int:
        return sum(report.count(status) for report in self.hosts)

    @property
    def changed(self) -> int:
        return self.count(CHANGED)

    @property
    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in (OK, CHANGED, WOULD_CHANGE, SKIPPED, FAILED)}

    def summary_line(self) -> str:
        counts = self.counts
        shown = [
            f"{counts[s]} {s}"
            for s in (OK, CHANGED, WOULD_CHANGE, SKIPPED, FAILED)
            if counts[s] or s in (OK, CHANGED, FAILED)
        ]
        hosts = f"{len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"
        bad = f", {len(self.failed)} host(s) failed" if self.failed else ""
        mode = " (dry run: nothing changed)" if self.dry_run else ""
        return f"{hosts}: {', '.join(shown)}{bad} in {self.seconds:.1f} s{mode}"

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 2),
            "counts": self.counts,
            "hosts": [report.to_dict() for report in self.hosts],
        }


def ssh_runner_factory(env: Environment) -> Callable[[HostSpec], Runner]:
    return lambda spec: SSHRunner.for_environment(spec, env)


def connect(spec: HostSpec, env: Environment, factory: Callable[[HostSpec], Runner]) -> tuple[Host, str]:
    """Log in as the bootstrap user; when an earlier run closed root login, as the deploy user.

    Returns the host and a note on how it was reached. A non-root login must have passwordless sudo.
    """
    first = Host(spec.as_user(env.bootstrap_user), factory(spec.as_user(env.bootstrap_user)))
    note = f"as {env.bootstrap_user}"
    try:
        first.run("true", timeout=30)
        host = first
    except HostKeyError:
        first.close()
        raise
    except HostError as error:
        first.close()
        if env.bootstrap_user == env.deploy_user or error.message.startswith("unreachable"):
            raise
        fallback = Host(spec.as_user(env.deploy_user), factory(spec.as_user(env.deploy_user)))
        try:
            fallback.run("true", timeout=30)
        except HostError:
            fallback.close()
            raise error from None
        host = fallback
        note = f"as {env.deploy_user} with sudo ({env.bootstrap_user} login refused, as provisioning left it)"
    if host.spec.user != "root":
        check = host.run("sudo -n true", check=False, timeout=30)
        if not check.ok:
            host.close()
            raise HostError(
                f"{host.spec.user} cannot use sudo without a password: {last_line(check.stderr or check.stdout)}",
                where=spec.name,
                hint=f"give {host.spec.user} passwordless sudo (NOPASSWD) or set BOOTSTRAP_USER=root",
            )
    return host, note


class _HostRun:
    """One host's provisioning, reporting each step as it goes."""

    def __init__(self, report: HostProvisionReport, reporter: Reporter):
        self.report = report
        self.reporter = reporter

    def emit(self, step: str, status: str, detail: str = "") -> None:
        self.report.events.append(StepEvent(self.report.host, step, status, detail))
        self.reporter.step(self.report.host, step, status, detail)

    def fail(self, step: str, error: OpsError) -> None:
        output = error.output if isinstance(error, CommandError) else ""
        if not error.where or error.where == self.report.host:
            error.where = f"{self.report.host} [{step}]"
        self.report.error, self.report.failed_step, self.report.output = error, step, tail(output)
        detail = error.message + (f" ({error.hint})" if error.hint else "")
        self.emit(step, FAILED, detail)


def provision_host(
    spec: HostSpec,
    env: Environment,
    settings: ProvisionSettings,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> HostProvisionReport:
    """Provision one host; a failure ends this host's run and is kept in the report, not raised."""
    factory = runner_factory or ssh_runner_factory(env)
    started = time.monotonic()
    run = _HostRun(HostProvisionReport(spec.name), reporter)
    try:
        try:
            host, note = connect(spec, env, factory)
        except OpsError as error:
            run.fail("connect", error)
            return run.report
        run.report.user = host.spec.user
        run.emit("connect", OK, note)
        try:
            _provision_steps(host, run, settings, Context(settings, spec, factory), dry_run)
        finally:
            host.close()
    finally:
        run.report.seconds = time.monotonic() - started
    return run.report


def _provision_steps(host: Host, run: _HostRun, settings: ProvisionSettings, ctx: Context, dry_run: bool) -> None:
    try:
        facts = read_facts(host, settings)
    except OpsError as error:
        run.fail("facts", error)
        return
    run.report.os = facts.os_label
    try:
        check_supported(facts, host.name)
    except OpsError as error:
        run.fail("os", error)
        return
    loop = StepLoop(facts, ctx)
    try:
        for step, plan in loop:
            if not plan.changes or dry_run:
                run.emit(step.name, plan.status, plan.detail)
                continue
            notes = step.apply(host, plan.changes, loop.facts, ctx)
            # Later steps plan from the host as this step left it.
            loop.applied(read_facts(host, settings))
            run.emit(step.name, CHANGED, "; ".join([plan.detail, *notes]))
    except OpsError as error:
        run.fail(loop.step.name if loop.step else "steps", error)


def provision(
    env: Environment,
    reporter: Reporter,
    *,
    only_hosts: Iterable[str] | None = None,
    dry_run: bool = False,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> ProvisionResult:
    """Provision env's hosts (or only_hosts) in parallel; one host failing never stops the others.

    Connects as env.bootstrap_user, falling back to the deploy user with sudo where an earlier run
    closed root login. With dry_run, reads facts and reports what would change, changing nothing.
    Raises ConfigError (bad settings) or HostError (no host matches only_hosts) before any host is
    touched; every host failure is in the result (result.ok, result.failed).
    """
    settings = ProvisionSettings.from_env(env)
    started = time.monotonic()
    factory = runner_factory or ssh_runner_factory(env)
    # Fleet picks the hosts and runs them in parallel; provision_host makes its own connections
    # (bootstrap user first, deploy user as fallback), so the fleet's lazy runners stay unopened.
    with Fleet.connect(env, only=only_hosts, user=env.bootstrap_user, runner_factory=factory) as fleet:
        specs = {spec.name: spec for spec in env.hosts}
        outcome = fleet.map(
            lambda host: provision_host(
                specs[host.name], env, settings, reporter, dry_run=dry_run, runner_factory=factory
            )
        )
    result = ProvisionResult(dry_run=dry_run)
    for item in outcome.outcomes:
        report = item.value or HostProvisionReport(item.host)
        if item.error is not None and report.error is None:
            report.error = item.error
        result.hosts.append(report)
    if settings.swarm:
        form_swarm(env, settings, result.hosts, reporter, dry_run=dry_run, runner_factory=factory)
    result.seconds = time.monotonic() - started
    return result


SWARM_STEP = "swarm"


def form_swarm(
    env: Environment,
    settings: ProvisionSettings,
    reports: list[HostProvisionReport],
    reporter: Reporter,
    *,
    dry_run: bool = False,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> FormationPlan | None:
    """ORCHESTRATOR=swarm: make the provisioned hosts one swarm, reported as the step `swarm` of each.

    Runs after every host's own steps (it needs each node's address, and the manager before the
    workers). Hosts that failed earlier, or were not selected, take part only as the swarm already
    knows them; a formation failure is kept in the hosts' reports, never raised."""
    factory = runner_factory or ssh_runner_factory(env)
    runs = {report.host: _HostRun(report, reporter) for report in reports}
    specs = list(env.hosts)
    hosts: dict[str, Host] = {}
    facts: dict[str, NodeFacts] = {}
    broken = [report.host for report in reports if not report.ok]
    if broken:
        for run in runs.values():
            if run.report.ok:
                run.emit(SWARM_STEP, SKIPPED, f"waits for {', '.join(broken)}, which failed provisioning")
        return None
    try:
        try:
            for spec in specs:
                hosts[spec.name], _ = connect(spec, env, factory)
                facts[spec.name] = read_node_facts(hosts[spec.name], specs, env.orchestrator.advertise_address)
            plan = plan_formation(specs, facts, firewall=settings.enabled("firewall"))
        except OpsError as error:
            for run in runs.values():
                if run.report.ok:
                    run.fail(SWARM_STEP, error)
            return None
        done: dict[str, list[str]] = {name: [] for name in runs}
        failed: set[str] = set()
        for change in plan.changes:
            if change.host not in runs and not dry_run:
                continue  # not selected (--host): left as it is
            if change.host in failed or (plan.leader in failed and change.kind != "ufw"):
                continue  # a host's later changes need its earlier ones; every join needs the leader
            if not dry_run:
                try:
                    apply_change(change, hosts, plan, facts)
                except OpsError as error:
                    runs[change.host].fail(SWARM_STEP, error)
                    failed.add(change.host)
                    continue
            done.setdefault(change.host, []).append(change.description)
        for name, run in runs.items():
            if not run.report.ok:
                continue
            if plan.leader in failed and any(c.host == name and c.kind != "ufw" for c in plan.changes):
                run.emit(SWARM_STEP, SKIPPED, f"waits for {plan.leader}, whose swarm step failed")
                continue
            if done.get(name):
                run.emit(SWARM_STEP, WOULD_CHANGE if dry_run else CHANGED, "; ".join(done[name]))
            else:
                role = "manager" if name == plan.leader or hosts[name].spec.manager else "worker"
                lead = " (leader)" if name == plan.leader else ""
                run.emit(SWARM_STEP, OK, f"{role}{lead} of {len(specs)} nodes, advertises {facts[name].address}")
        return plan
    finally:
        for host in hosts.values():
            host.close()
