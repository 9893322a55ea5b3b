"""Loading runbooks: TOML files, validated, with errors that name the file and line or key.

The shipped runbooks live in ops/oncall/runbooks/, a stack's own in its runbooks/ folder (beside
its compose file), a repository's own in its runbooks/ folder; a later one of the same name
overrides an earlier one. This module only reads files; it never reaches a host.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ops.oncall.runbook.model import Action, DiagnosisStep, Expect, Runbook, RunbookError

RUNBOOK_DIR = "runbooks"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


_TOP = {"name", "title", "alerts", "alert", "symptoms", "diagnosis", "recovery", "rto", "rpo"}
_STEP = {"id", "title", "host", "exec", "service", "role", "doctor", "expect", "cause"}
_ACTION = {"title", "host", "exec", "service", "role", "when"}
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


def _kind(data: Mapping[str, Any], kinds: tuple[str, ...], display: str, where: str) -> tuple[str, str, str, str]:
    """(kind, command, service, role): exec runs in a named service or in every service of a role;
    a host command may be bound to a role too (once per service, as $SERVICE)."""
    given = [kind for kind in kinds if kind in data]
    if len(given) != 1:
        raise _fail(display, where.rstrip("."), f"needs exactly one of {', '.join(kinds)}")
    kind = given[0]
    command = _string(data, kind, display, where)
    role = _string(data, "role", display, where, required=False)
    service = _string(data, "service", display, where, required=kind == "exec" and not role)
    if service and role:
        raise _fail(display, f"{where}role", "give service or role, not both")
    if service and kind != "exec":
        raise _fail(display, f"{where}service", "only goes with exec")
    if role and kind == "doctor":
        raise _fail(display, f"{where}role", "does not go with doctor")
    return kind, command, service, role


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
        kind, command, service, role = _kind(item, ("host", "exec", "doctor"), display, where)
        step_id = _string(item, "id", display, where, required=False)
        if step_id:
            ids.add(step_id)
        steps.append(
            DiagnosisStep(
                title=_string(item, "title", display, where),
                kind=kind,
                command=command,
                service=service,
                expect=_expect(item.get("expect"), display, where),
                cause=_string(item, "cause", display, where),
                id=step_id,
                role=role,
            )
        )
    actions = []
    for index, item in enumerate(data.get("recovery", []) or [], 1):
        where = f"recovery[{index}]."
        if not isinstance(item, dict):
            raise _fail(display, where.rstrip("."), "must be a table ([[recovery]])")
        _unknown(item, _ACTION, display, where)
        kind, command, service, role = _kind(item, ("host", "exec"), display, where)
        when = _strings(item, "when", display, where)
        for step_id in when:
            if step_id not in ids:
                raise _fail(display, f"{where}when", f"no diagnosis step has id {step_id!r}")
        actions.append(Action(_string(item, "title", display, where), kind, command, service, when, role))
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


def runbook_files(root: Path | None, stack_dir: Path | None = None) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, source, display): the shipped runbooks, overridden by the stack's own
    (stack_dir/runbooks/), overridden by the repository's (root/runbooks/)."""
    files: dict[str, tuple[Path, str, str]] = {}
    for path in sorted(shipped_dir().glob("*.toml")):
        files[path.stem] = (path, "shipped", f"ops/oncall/runbooks/{path.name}")
    for folder in (stack_dir, root):
        if folder is None or not (folder / RUNBOOK_DIR).is_dir():
            continue
        for path in sorted((folder / RUNBOOK_DIR).glob("*.toml")):
            shown = _shown(path, root)
            files[path.stem] = (path, shown, shown)
    return files


def _shown(path: Path, root: Path | None) -> str:
    """The path as a person finds it: relative to the repository when inside it."""
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def load_all(root: Path | None, stack_dir: Path | None = None) -> dict[str, Runbook]:
    """Every runbook, validated; the first invalid file raises RunbookError."""
    return {
        name: load_runbook(path, source, display)
        for name, (path, source, display) in runbook_files(root, stack_dir).items()
    }


def find(root: Path | None, name: str, stack_dir: Path | None = None) -> Runbook:
    files = runbook_files(root, stack_dir)
    if name not in files:
        raise RunbookError(
            f"unknown runbook {name!r}",
            hint=f"runbooks: {', '.join(sorted(files))} (inv runbook.list)",
        )
    path, source, display = files[name]
    return load_runbook(path, source, display)
