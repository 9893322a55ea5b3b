"""Running a runbook: its diagnosis on every host (read only), then, when asked and confirmed,
its recovery where the diagnosis failed, and the diagnosis again.

Doctor steps go through the probe the caller passes (ops.oncall.doctor.probe): this module never
imports the doctor. It never prints and never reads os.environ.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from ops.config import Environment, HostSpec
from ops.console import FAILED, OK, SKIPPED, RecordingReporter, Reporter
from ops.errors import ConnectionLost, OpsError, connection_failure
from ops.oncall.preamble import NO_CONTAINER, exec_command, host_command
from ops.oncall.runbook.model import DiagnosisStep, Runbook, RunbookError
from ops.oncall.runbook.subjects import inspect_command, service_roles, services_with
from ops.transport import CommandResult, Fleet, Host, Runner
from ops.transport.shell import last_line


@dataclass(frozen=True)
class StepResult:
    """One step on one host (for one service, when the step is bound to a role): healthy or not,
    the value that decided, the cause it names. A step whose role no service plays is not
    applicable: ok, and never a cause."""

    step: str
    host: str
    ok: bool
    value: str
    cause: str = ""
    output: str = ""
    service: str = ""
    applicable: bool = True
    step_id: str = ""
    index: int = 0  # the step's place among the runbook's host and exec steps


@dataclass(frozen=True)
class ActionResult:
    action: str
    host: str
    ok: bool
    output: str = ""


@dataclass
class RunbookResult:
    runbook: str
    steps: list[StepResult] = field(default_factory=list)
    actions: list[ActionResult] = field(default_factory=list)
    after_fix: list[StepResult] = field(default_factory=list)
    fixed: bool | None = None  # None: no fix attempted

    @property
    def causes(self) -> list[str]:
        seen: list[str] = []
        for result in self.steps:
            if not result.ok and result.cause not in seen:
                seen.append(result.cause)
        return seen

    @property
    def healthy(self) -> bool:
        return all(result.ok for result in self.steps)

    @property
    def conclusion(self) -> str:
        if self.healthy:
            return "no cause found: every check answers healthy"
        return "; ".join(self.causes)

    def as_dict(self) -> dict[str, object]:
        return {
            "runbook": self.runbook,
            "healthy": self.healthy,
            "conclusion": self.conclusion,
            "causes": self.causes,
            "steps": [asdict(result) for result in self.steps],
            "actions": [asdict(result) for result in self.actions],
            "after_fix": [asdict(result) for result in self.after_fix],
            "fixed": self.fixed,
        }


DoctorProbe = Callable[[Environment, str], list[tuple[str, bool, str]]]


def _diagnose_host(host: Host, project: str, steps: Iterable[DiagnosisStep]) -> list[StepResult]:
    steps = list(steps)
    roles = _roles(host, project) if any(step.role for step in steps) else {}
    results = []
    for index, step in enumerate(steps):
        if not step.role:
            results.append(_judge(host, project, step, step.service, index))
            continue
        services = services_with(step.role, roles)
        if not services:
            title = step.title.replace("{service}", step.role)
            value = f"not applicable: no service of the stack plays {step.role}"
            results.append(StepResult(title, host.name, True, value, applicable=False, step_id=step.id, index=index))
        results.extend(_judge(host, project, step, service, index) for service in services)
    return results


def _roles(host: Host, project: str) -> dict[str, frozenset[str]]:
    return service_roles(host.run(host_command(project, inspect_command(project)), timeout=60).stdout)


def _bound(project: str, kind: str, command: str, service: str) -> str:
    """The shell command of a step or action, run in service's containers (exec) or on the host
    (with $SERVICE set for a step bound to a role)."""
    if kind == "exec":
        return exec_command(project, service, command)
    return host_command(project, f"SERVICE={shlex.quote(service)}; {command}" if service else command)


def _judge(host: Host, project: str, step: DiagnosisStep, service: str, index: int) -> StepResult:
    result = host.run(_bound(project, step.kind, step.command, service), check=False, timeout=60)
    if step.kind == "exec" and result.exit_code == NO_CONTAINER:
        ok, value = False, f"no running container of service {service}"
        cause = f"service {service} has no running container"
    else:
        ok, value = step.expect.judge(result)
        cause = "" if ok else _cause(step.cause, value, result, host.name).replace("{service}", service)
    output = (result.stdout + result.stderr).strip()
    title = step.title.replace("{service}", service)
    return StepResult(title, host.name, ok, value, cause, output[-2000:], service, True, step.id, index)


def _cause(template: str, value: str, result: CommandResult, host: str) -> str:
    output = result.stdout if result.stdout.strip() else result.stderr
    return (
        template.replace("{value}", value)
        .replace("{output}", last_line(output) if output.strip() else "")
        .replace("{host}", host)
    )


def diagnose(
    env: Environment,
    runbook: Runbook,
    reporter: Reporter,
    *,
    doctor_probe: DoctorProbe | None = None,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
    fleet: Fleet | None = None,
) -> list[StepResult]:
    """Run the diagnosis steps on every host (in parallel), doctor steps once through doctor_probe
    (the caller passes ops.oncall.doctor.probe: this module never imports the doctor); nothing changes."""
    asks_doctor = [step.title for step in runbook.steps if step.kind == "doctor"]
    if asks_doctor and doctor_probe is None:
        raise RunbookError(
            f"step {asks_doctor[0]!r} asks the doctor, and no doctor probe was given",
            where=str(runbook.path),
            hint="pass doctor_probe=ops.oncall.doctor.probe",
        )
    host_steps = [step for step in runbook.steps if step.kind != "doctor"]
    by_host: dict[str, list[StepResult]] = {}
    if host_steps:
        if fleet is not None:  # the caller's connections, kept open between rounds
            outcome = fleet.map(lambda host: _diagnose_host(host, env.project, host_steps))
        else:
            with Fleet.connect(env, runner_factory=runner_factory) as connected:
                outcome = connected.map(lambda host: _diagnose_host(host, env.project, host_steps))
        for item in outcome.outcomes:
            if item.value is not None:
                by_host[item.host] = item.value
            else:
                message = _host_failure(item.host, item.error)
                by_host[item.host] = [
                    StepResult(
                        step.title, item.host, False, message, f"{item.host}: {message}", "", "", True, step.id, i
                    )
                    for i, step in enumerate(host_steps)
                ]
    doctor_results: dict[str, list[StepResult]] = {}
    for step in runbook.steps:
        if step.kind == "doctor" and doctor_probe is not None:
            doctor_results[step.title] = [
                StepResult(
                    step.title, where, ok, detail, "" if ok else step.cause.replace("{value}", detail), step_id=step.id
                )
                for where, ok, detail in doctor_probe(env, step.command)
            ]
    results: list[StepResult] = []
    for step in runbook.steps:
        if step.kind == "doctor":
            found = doctor_results[step.title]
        else:
            position = host_steps.index(step)
            found = [r for host_results in by_host.values() for r in host_results if r.index == position]
        for result in found:
            status = SKIPPED if not result.applicable else OK if result.ok else FAILED
            reporter.step(result.host, result.step, status, result.value)
            results.append(result)
    return results


def _host_failure(host: str, error: OpsError | None) -> str:
    """Why a host gave no answers, as a sentence without the host (the result names it)."""
    if isinstance(error, ConnectionLost):
        return connection_failure("running the diagnosis", error, where=host).message
    return error.line_for(host) if error else "failed"


def run_runbook(
    env: Environment,
    runbook: Runbook,
    reporter: Reporter,
    *,
    fix: bool = False,
    confirm: Callable[[str], bool] | None = None,
    doctor_probe: DoctorProbe | None = None,
    settle_seconds: float = 60,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
) -> RunbookResult:
    """Diagnose; with fix, run the recovery actions that apply (after confirm) and diagnose again
    until every check answers healthy (at most settle_seconds), over one set of connections."""
    with Fleet.connect(env, runner_factory=runner_factory) as fleet:
        return _run(env, runbook, reporter, fleet, fix, confirm, doctor_probe, settle_seconds)


def _run(
    env: Environment,
    runbook: Runbook,
    reporter: Reporter,
    fleet: Fleet,
    fix: bool,
    confirm: Callable[[str], bool] | None,
    doctor_probe: DoctorProbe | None,
    settle_seconds: float,
) -> RunbookResult:
    result = RunbookResult(runbook.name, diagnose(env, runbook, reporter, doctor_probe=doctor_probe, fleet=fleet))
    if not fix or result.healthy:
        return result
    failed_ids = {r.step_id for r in result.steps if r.step_id and not r.ok}
    actions = [action for action in runbook.actions if not action.when or set(action.when) & failed_ids]
    if not actions:
        reporter.info(f"runbook {runbook.name} defines no automatic fix for this; follow its recovery notes")
        return result
    plan = "; ".join(action.title for action in actions)
    if confirm is not None and not confirm(f"run the recovery of {runbook.name} on {env.name}: {plan}?"):
        reporter.info("recovery not run (not confirmed)")
        return result
    # Act only where the diagnosis found something wrong (all hosts when only a local check failed).
    failing = {r.host for r in result.steps if not r.ok} & {host.name for host in fleet.hosts}

    def act(host: Host) -> list[ActionResult]:
        roles = _roles(host, env.project) if any(action.role for action in actions) else {}
        done = []
        for action in actions:
            services = services_with(action.role, roles) if action.role else [action.service]
            for service in services:  # none: the stack has no service of the role here
                command = _bound(env.project, action.kind, action.command, service)
                outcome = host.run(command, check=False, timeout=300)
                output = (outcome.stdout + outcome.stderr).strip()[-2000:]
                detail = last_line(output) if output else ""
                title = action.title.replace("{service}", service)
                reporter.step(host.name, title, "changed" if outcome.ok else "failed", detail)
                done.append(ActionResult(title, host.name, outcome.ok, output))
        return done

    acting = [host for host in fleet.hosts if host.name in failing] if failing else fleet.hosts
    outcome = Fleet(acting, env.parallel).map(act)
    for item in outcome.outcomes:
        if item.value is not None:
            result.actions.extend(item.value)
        else:
            result.actions.append(ActionResult("connect", item.host, False, item.error.message if item.error else ""))
    # Services need a moment after a restart (start_period, first healthcheck): diagnose again
    # until healthy or settle_seconds passed, and report only the last round.
    deadline = time.monotonic() + settle_seconds
    while True:
        after = diagnose(env, runbook, RecordingReporter(), doctor_probe=doctor_probe, fleet=fleet)
        if all(step.ok for step in after) or time.monotonic() >= deadline:
            break
        time.sleep(1)
    for step in after:
        if step.applicable:
            reporter.step(step.host, f"after fix: {step.step}", OK if step.ok else FAILED, step.value)
    result.after_fix = after
    result.fixed = all(step.ok for step in after)
    return result
