"""Runbooks as data: TOML files that say which alert they answer, how to diagnose it and how to fix it.

The shipped runbooks live in ops/oncall/runbooks/, a repository's own in its runbooks/ folder (same name
overrides). Diagnosis only reads; recovery actions run only when the caller asks (`fix=True`) and
its confirm callback says yes. This module never prints and never reads os.environ.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ops.config import Environment, HostSpec
from ops.console import RecordingReporter, Reporter
from ops.errors import OpsError
from ops.oncall.preamble import NO_CONTAINER, exec_command, host_command
from ops.transport import CommandResult, Fleet, Host, Runner

RUNBOOK_DIR = "runbooks"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


class RunbookError(OpsError):
    """A runbook is unknown, or its file is not valid TOML or not a valid runbook."""


@dataclass(frozen=True)
class Expect:
    """What a healthy answer looks like; every condition given must hold."""

    exit_code: int | None = 0
    match: str = ""  # a regex that must be found in the output
    no_match: str = ""  # a regex that must not be found in the output
    max: float | None = None  # every number (first one per output line) at most this
    min: float | None = None  # every number at least this

    def judge(self, result: CommandResult) -> tuple[bool, str]:
        """(healthy, the value that decided) for one command's result."""
        output = result.stdout
        if self.exit_code is not None and result.exit_code != self.exit_code:
            return False, f"exit {result.exit_code}"
        if self.match and not re.search(self.match, output, re.MULTILINE):
            return False, _last_line(output) or "no output"
        if self.no_match:
            found = re.search(self.no_match, output, re.MULTILINE)
            if found:
                return False, found.group(0).strip()
        if self.max is not None or self.min is not None:
            numbers = _numbers(output)
            if not numbers:
                return False, "no number in the output"
            if self.max is not None:
                worst = max(numbers)
                if worst[0] > self.max:
                    return False, worst[1]
            if self.min is not None:
                worst = min(numbers)
                if worst[0] < self.min:
                    return False, worst[1]
            return True, worst[1]
        return True, _last_line(output)


@dataclass(frozen=True)
class Step:
    """One diagnosis step: a command on each host, in each container of a service, or a doctor check."""

    title: str
    kind: str  # host | exec | doctor
    command: str  # the shell command, or the doctor check's name
    service: str = ""  # for exec
    expect: Expect = field(default_factory=Expect)
    cause: str = ""  # what is wrong when the answer is not healthy ({value}, {output}, {host})
    id: str = ""


@dataclass(frozen=True)
class Action:
    """One recovery action, run only with --fix after confirmation."""

    title: str
    kind: str  # host | exec
    command: str
    service: str = ""
    when: tuple[str, ...] = ()  # ids of steps that must have failed; empty: any failure


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    alerts: tuple[str, ...]
    symptoms: tuple[str, ...]
    steps: tuple[Step, ...]
    actions: tuple[Action, ...]
    rto: str
    rpo: str
    source: str  # "shipped" or the file of the repository's own runbook
    path: Path

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


# --- loading ---------------------------------------------------------------------------------

_TOP = {"name", "title", "alerts", "alert", "symptoms", "diagnosis", "recovery", "rto", "rpo"}
_STEP = {"id", "title", "host", "exec", "service", "doctor", "expect", "cause"}
_ACTION = {"title", "host", "exec", "service", "when"}
_EXPECT = {"exit_code", "match", "no_match", "max", "min"}


def _fail(
    display: str, key: str, message: str, hint: str = "see ops/oncall/runbooks/*.toml for examples"
) -> RunbookError:
    return RunbookError(f"{key}: {message}" if key else message, where=display, hint=hint)


def _string(data: Mapping[str, Any], key: str, display: str, where: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(display, f"{where}{key}", "is required")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(display, f"{where}{key}", "must be a non-empty string")
    return value


def _strings(data: Mapping[str, Any], key: str, display: str, where: str = "") -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise _fail(display, f"{where}{key}", "must be a list of strings")
    return tuple(value)


def _unknown(data: Mapping[str, Any], allowed: set[str], display: str, where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise _fail(display, f"{where}{extra[0]}", "unknown key", hint=f"known keys: {', '.join(sorted(allowed))}")


def _regex(text: str, display: str, key: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise _fail(display, key, f"invalid regex {text!r} ({error})") from None
    return text


def _expect(data: Any, display: str, where: str) -> Expect:
    if data is None:
        return Expect()
    if not isinstance(data, dict):
        raise _fail(display, f"{where}expect", "must be a table, e.g. expect = {{ exit_code = 0 }}")
    _unknown(data, _EXPECT, display, f"{where}expect.")
    numbers: dict[str, float | None] = {}
    for key in ("max", "min"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _fail(display, f"{where}expect.{key}", "must be a number")
        numbers[key] = float(value) if value is not None else None
    exit_code = data.get("exit_code", 0)
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise _fail(display, f"{where}expect.exit_code", "must be a whole number")
    for key in ("match", "no_match"):
        if not isinstance(data.get(key, ""), str):
            raise _fail(display, f"{where}expect.{key}", "must be a regex string")
    return Expect(
        exit_code=exit_code,
        match=_regex(data.get("match", ""), display, f"{where}expect.match"),
        no_match=_regex(data.get("no_match", ""), display, f"{where}expect.no_match"),
        max=numbers["max"],
        min=numbers["min"],
    )


def _kind(data: Mapping[str, Any], kinds: tuple[str, ...], display: str, where: str) -> tuple[str, str, str]:
    given = [kind for kind in kinds if kind in data]
    if len(given) != 1:
        raise _fail(display, where.rstrip("."), f"needs exactly one of {', '.join(kinds)}")
    kind = given[0]
    command = _string(data, kind, display, where)
    service = _string(data, "service", display, where, required=kind == "exec")
    if service and kind != "exec":
        raise _fail(display, f"{where}service", "only goes with exec")
    return kind, command, service


def parse_runbook(text: str, path: Path, source: str, display: str | None = None) -> Runbook:
    """A Runbook from TOML text; RunbookError names the file and line (syntax) or key (schema)."""
    display = display or str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line L, column C)": lead with the line as file:line.
        message = str(error)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f"{display}:{found.group(1)}" if found else display
        raise RunbookError(f"TOML syntax error: {message}", where=where, hint="fix the file's syntax") from None
    _unknown(data, _TOP, display, "")
    name = _string(data, "name", display, "")
    if not NAME_RE.match(name):
        raise _fail(display, "name", f"{name!r} must be lowercase letters, digits and '-'")
    if name != path.stem:
        raise _fail(display, "name", f"{name!r} differs from the file name {path.name}", hint=f"name it {name}.toml")
    alerts = _strings(data, "alerts", display) + _strings(data, "alert", display)
    steps_data = data.get("diagnosis")
    if not isinstance(steps_data, list) or not steps_data:
        raise _fail(display, "diagnosis", "needs at least one [[diagnosis]] step")
    steps = []
    ids = set()
    for index, item in enumerate(steps_data, 1):
        where = f"diagnosis[{index}]."
        if not isinstance(item, dict):
            raise _fail(display, where.rstrip("."), "must be a table ([[diagnosis]])")
        _unknown(item, _STEP, display, where)
        kind, command, service = _kind(item, ("host", "exec", "doctor"), display, where)
        step_id = _string(item, "id", display, where, required=False)
        if step_id:
            ids.add(step_id)
        steps.append(
            Step(
                title=_string(item, "title", display, where),
                kind=kind,
                command=command,
                service=service,
                expect=_expect(item.get("expect"), display, where),
                cause=_string(item, "cause", display, where),
                id=step_id,
            )
        )
    actions = []
    for index, item in enumerate(data.get("recovery", []) or [], 1):
        where = f"recovery[{index}]."
        if not isinstance(item, dict):
            raise _fail(display, where.rstrip("."), "must be a table ([[recovery]])")
        _unknown(item, _ACTION, display, where)
        kind, command, service = _kind(item, ("host", "exec"), display, where)
        when = _strings(item, "when", display, where)
        for step_id in when:
            if step_id not in ids:
                raise _fail(display, f"{where}when", f"no diagnosis step has id {step_id!r}")
        actions.append(Action(_string(item, "title", display, where), kind, command, service, when))
    return Runbook(
        name=name,
        title=_string(data, "title", display, ""),
        alerts=alerts,
        symptoms=_strings(data, "symptoms", display),
        steps=tuple(steps),
        actions=tuple(actions),
        rto=_string(data, "rto", display, "", required=False),
        rpo=_string(data, "rpo", display, "", required=False),
        source=source,
        path=path,
    )


def load_runbook(path: Path, source: str = "", display: str | None = None) -> Runbook:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RunbookError(f"cannot read runbook: {error}", where=display or str(path)) from None
    return parse_runbook(text, path, source or str(path), display)


def shipped_dir() -> Path:
    return Path(str(resources.files("ops.oncall") / "runbooks"))


def runbook_files(root: Path | None) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, source, display): the shipped runbooks, overridden by root/runbooks/."""
    files: dict[str, tuple[Path, str, str]] = {}
    for path in sorted(shipped_dir().glob("*.toml")):
        files[path.stem] = (path, "shipped", f"ops/oncall/runbooks/{path.name}")
    if root is not None and (root / RUNBOOK_DIR).is_dir():
        for path in sorted((root / RUNBOOK_DIR).glob("*.toml")):
            files[path.stem] = (path, f"{RUNBOOK_DIR}/{path.name}", f"{RUNBOOK_DIR}/{path.name}")
    return files


def load_all(root: Path | None) -> dict[str, Runbook]:
    """Every runbook, validated; the first invalid file raises RunbookError."""
    return {name: load_runbook(path, source, display) for name, (path, source, display) in runbook_files(root).items()}


def find(root: Path | None, name: str) -> Runbook:
    files = runbook_files(root)
    if name not in files:
        raise RunbookError(
            f"unknown runbook {name!r}",
            hint=f"runbooks: {', '.join(sorted(files))} (inv runbook.list)",
        )
    path, source, display = files[name]
    return load_runbook(path, source, display)


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One step on one host: healthy or not, the value that decided, the cause it names."""

    step: str
    host: str
    ok: bool
    value: str
    cause: str = ""
    output: str = ""


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


def _numbers(output: str) -> list[tuple[float, str]]:
    """(first number, its line) for each output line that holds a number."""
    numbers = []
    for line in output.splitlines():
        found = NUMBER_RE.search(line)
        if found:
            numbers.append((float(found.group(0)), line.strip()[:200]))
    return numbers


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


DoctorProbe = Callable[[Environment, str], list[tuple[str, bool, str]]]


def _diagnose_host(host: Host, project: str, steps: Iterable[Step]) -> list[StepResult]:
    results = []
    for step in steps:
        if step.kind == "exec":
            command = exec_command(project, step.service, step.command)
        else:
            command = host_command(project, step.command)
        result = host.run(command, check=False, timeout=60)
        if step.kind == "exec" and result.exit_code == NO_CONTAINER:
            ok, value = False, f"no running container of service {step.service}"
            cause = f"service {step.service} has no running container"
        else:
            ok, value = step.expect.judge(result)
            cause = "" if ok else _cause(step.cause, value, result, host.name)
        output = (result.stdout + result.stderr).strip()
        results.append(StepResult(step.title, host.name, ok, value, cause, output[-2000:]))
    return results


def _cause(template: str, value: str, result: CommandResult, host: str) -> str:
    return (
        template.replace("{value}", value)
        .replace("{output}", _last_line(result.stdout) or _last_line(result.stderr))
        .replace("{host}", host)
    )


def diagnose(
    env: Environment,
    runbook: Runbook,
    reporter: Reporter,
    *,
    doctor_probe: DoctorProbe | None = None,
    runner_factory: Callable[[HostSpec], Runner] | None = None,
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
        with Fleet.connect(env, runner_factory=runner_factory) as fleet:
            outcome = fleet.map(lambda host: _diagnose_host(host, env.project, host_steps))
        for item in outcome.outcomes:
            if item.value is not None:
                by_host[item.host] = item.value
            else:
                message = item.error.message if item.error else "failed"
                by_host[item.host] = [
                    StepResult(step.title, item.host, False, message, f"host {item.host} unreachable: {message}")
                    for step in host_steps
                ]
    doctor_results: dict[str, list[StepResult]] = {}
    for step in runbook.steps:
        if step.kind == "doctor" and doctor_probe is not None:
            doctor_results[step.title] = [
                StepResult(step.title, where, ok, detail, "" if ok else step.cause.replace("{value}", detail))
                for where, ok, detail in doctor_probe(env, step.command)
            ]
    results: list[StepResult] = []
    for step in runbook.steps:
        if step.kind == "doctor":
            found = doctor_results[step.title]
        else:
            found = [r for host_results in by_host.values() for r in host_results if r.step == step.title]
        for result in found:
            reporter.step(result.host, step.title, "ok" if result.ok else "failed", result.value)
            results.append(result)
    return results


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
    """Diagnose; with fix, run the recovery actions that apply (after confirm) and diagnose again."""
    result = RunbookResult(
        runbook.name, diagnose(env, runbook, reporter, doctor_probe=doctor_probe, runner_factory=runner_factory)
    )
    if not fix or result.healthy:
        return result
    failed_ids = {
        step.id for step in runbook.steps if step.id and any(not r.ok for r in result.steps if r.step == step.title)
    }
    actions = [action for action in runbook.actions if not action.when or set(action.when) & failed_ids]
    if not actions:
        reporter.info(f"runbook {runbook.name} defines no automatic fix for this; follow its recovery notes")
        return result
    plan = "; ".join(action.title for action in actions)
    if confirm is not None and not confirm(f"run the recovery of {runbook.name} on {env.name}: {plan}?"):
        reporter.info("recovery not run (not confirmed)")
        return result
    # Act only where the diagnosis found something wrong (all hosts when only a local check failed).
    names = {spec.name for spec in env.hosts}
    failing = sorted({r.host for r in result.steps if not r.ok} & names) or None
    with Fleet.connect(env, only=failing, runner_factory=runner_factory) as fleet:

        def act(host: Host) -> list[ActionResult]:
            done = []
            for action in actions:
                if action.kind == "exec":
                    command = exec_command(env.project, action.service, action.command)
                else:
                    command = host_command(env.project, action.command)
                outcome = host.run(command, check=False, timeout=300)
                output = (outcome.stdout + outcome.stderr).strip()[-2000:]
                reporter.step(host.name, action.title, "changed" if outcome.ok else "failed", _last_line(output))
                done.append(ActionResult(action.title, host.name, outcome.ok, output))
            return done

        outcome = fleet.map(act)
    for item in outcome.outcomes:
        if item.value is not None:
            result.actions.extend(item.value)
        else:
            result.actions.append(ActionResult("connect", item.host, False, item.error.message if item.error else ""))
    # Services need a moment after a restart (start_period, first healthcheck): diagnose again
    # until healthy or settle_seconds passed, and report only the last round.
    deadline = time.monotonic() + settle_seconds
    while True:
        after = diagnose(env, runbook, RecordingReporter(), doctor_probe=doctor_probe, runner_factory=runner_factory)
        if all(step.ok for step in after) or time.monotonic() >= deadline:
            break
        time.sleep(2)
    for step in after:
        reporter.step(step.host, f"after fix: {step.step}", "ok" if step.ok else "failed", step.value)
    result.after_fix = after
    result.fixed = all(step.ok for step in after)
    return result
