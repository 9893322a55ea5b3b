"""Security and config scans of a source tree, as CI runs them: static analysis (bandit), the
installed dependencies (pip-audit), shell scripts (shellcheck), secrets (detect-secrets against a
reviewed baseline), compose files and monitoring configs (the toolbox's real tools).

A finding is a result (ScanResult.findings); a scanner that cannot run, scans nothing, or cannot
reach its data is a ScanError: never a pass. Nothing here prints, installs or changes the tree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.console import Reporter
from ops.errors import OpsError, ScanError, StackError

if TYPE_CHECKING:
    import docker

# Fixture trees with planted findings (tests/fixtures/scan) prove the scanners fail; the
# repository's own scan must not see them.
DEFAULT_EXCLUDE = ("tests/fixtures/scan/",)
SHELLS = {"sh", "bash", "dash", "ksh"}
SECRETS_BASELINE = ".secrets.baseline"
PYPI_PROJECT_JSON = "https://pypi.org/pypi/{name}/json"

# (command, working directory) -> the finished process; tests may pass their own.
Runner = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]
# project name -> PyPI's JSON for the project (its latest release); raises OSError when unreachable.
ProjectFetcher = Callable[[str], Mapping[str, Any]]


@dataclass(frozen=True)
class Finding:
    """One thing a scanner objects to, where it is (file relative to the scanned root)."""

    file: str
    line: int  # 0 when the tool gives no line
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.rule} {self.message}".rstrip()


@dataclass(frozen=True)
class ScanResult:
    """What one scanner checked and found; error says why it could not scan at all."""

    scanner: str
    checked: int = 0
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and not self.findings


def run_tool(command: Sequence[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The default Runner: the tool's exit code and output; ScanError when it cannot start."""
    try:
        return subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ScanError(f"{command[0]} is not installed", hint="./scripts/bootstrap installs it") from None
    except subprocess.TimeoutExpired:
        raise ScanError(f"{Path(command[0]).name} did not finish in {timeout:.0f}s", where=str(cwd)) from None


def _tail(done: subprocess.CompletedProcess[str], lines: int = 3) -> str:
    text = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    return " | ".join(text[-lines:]) or f"exit code {done.returncode}, no output"


def _excluded(relative: str, exclude: Iterable[str]) -> bool:
    return any(relative == prefix.rstrip("/") or relative.startswith(prefix) for prefix in exclude)


def source_files(root: Path, exclude: Iterable[str] = DEFAULT_EXCLUDE, run: Runner = run_tool) -> list[str]:
    """The files of the tree (relative paths): git's tracked files in a checkout, else every file."""
    exclude = tuple(exclude)
    files: list[str] = []
    if (root / ".git").exists():
        done = run(["git", "ls-files", "-z"], root)
        if done.returncode != 0:
            raise ScanError(f"git ls-files failed: {_tail(done)}", where=str(root))
        files = [name for name in done.stdout.split("\0") if name and (root / name).is_file()]
    else:
        files = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    return [name for name in files if not _excluded(name, exclude)]


def is_shell_script(path: Path) -> bool:
    """A .sh/.bash file, or any file whose shebang names a POSIX shell or bash."""
    if path.suffix in (".sh", ".bash"):
        return True
    try:
        with path.open("rb") as handle:
            first = handle.readline(200)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    words = first[2:].decode(errors="replace").split()
    if not words:
        return False
    program = Path(words[0]).name
    if program == "env" and len(words) > 1:
        program = words[1]
    return program in SHELLS


# --- bandit ---------------------------------------------------------------------------------


def bandit(
    root: Path, paths: Sequence[str] = ("ops",), *, python: str = sys.executable, run: Runner = run_tool
) -> ScanResult:
    """bandit on the Python code in paths; findings of medium or high severity fail."""
    done = run([python, "-m", "bandit", "-r", *paths, "-f", "json", "-q", "--severity-level", "medium"], root)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise ScanError(f"bandit gave no report: {_tail(done)}", where=str(root)) from None
    checked = len([name for name in report.get("metrics", {}) if name != "_totals"])
    if checked == 0:
        raise ScanError(f"bandit found no Python files in {', '.join(paths)}", where=str(root))
    findings = [
        Finding(
            _relative(item["filename"], root),
            int(item.get("line_number") or 0),
            f"{item['test_id']}/{str(item['issue_severity']).lower()}",
            str(item["issue_text"]),
        )
        for item in report.get("results", [])
    ]
    # A file bandit could not parse is a file nobody checked.
    findings += [
        Finding(_relative(item["filename"], root), 0, "unparsed", str(item.get("reason", "")))
        for item in report.get("errors", [])
    ]
    return ScanResult("bandit", checked, tuple(findings))


def _relative(name: str, root: Path) -> str:
    path = Path(name)
    if path.is_absolute():
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return name
    return path.as_posix().removeprefix("./")


# --- shellcheck -----------------------------------------------------------------------------

_GCC_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):\d+: (?P<level>\w+): (?P<message>.*?)(?: \[(?P<code>SC\d+)\])?$")


def shellcheck(
    root: Path, exclude: Iterable[str] = DEFAULT_EXCLUDE, *, files: Sequence[str] | None = None, run: Runner = run_tool
) -> ScanResult:
    """shellcheck on every shell script of the tree (by suffix or shebang); any finding fails."""
    if files is None:
        files = [name for name in source_files(root, exclude, run) if is_shell_script(root / name)]
    if not files:
        raise ScanError("no shell scripts found to check", where=str(root))
    done = run(["shellcheck", "--format=gcc", "--external-sources", *files], root)
    if done.returncode not in (0, 1):
        raise ScanError(f"shellcheck could not check the scripts: {_tail(done)}", where=str(root))
    findings = []
    for line in done.stdout.splitlines():
        match = _GCC_LINE.match(line)
        if match:
            findings.append(
                Finding(match["file"], int(match["line"]), match["code"] or match["level"], match["message"])
            )
    if done.returncode == 1 and not findings:
        raise ScanError(f"shellcheck failed without findings: {_tail(done)}", where=str(root))
    return ScanResult("shellcheck", len(files), tuple(findings))


# --- detect-secrets -------------------------------------------------------------------------


def _secret_keys(results: Mapping[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (name, item["type"], item["hashed_secret"]): item for name, items in results.items() for item in items or []
    }


def secrets(
    root: Path,
    baseline: Path | None = None,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    *,
    python: str = sys.executable,
    run: Runner = run_tool,
) -> ScanResult:
    """detect-secrets on the tree's files; a secret not in the reviewed baseline fails, and so does
    one the baseline marks as a real secret (is_secret: true). The baseline is only read."""
    baseline = baseline if baseline is not None else root / SECRETS_BASELINE
    known: dict[tuple[str, str, str], dict[str, Any]] = {}
    if baseline.is_file():
        try:
            known = _secret_keys(json.loads(baseline.read_text()).get("results", {}))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ScanError(f"the secrets baseline is not valid: {error}", where=str(baseline)) from None
    # The baseline holds the hashes of reviewed strings: hex that would be found in turn.
    files = [name for name in source_files(root, exclude, run) if (root / name).resolve() != baseline.resolve()]
    if not files:
        raise ScanError("no files to scan for secrets", where=str(root))
    done = run([python, "-m", "detect_secrets", "scan", *files], root)
    try:
        found = _secret_keys(json.loads(done.stdout)["results"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ScanError(f"detect-secrets gave no report: {_tail(done)}", where=str(root)) from None
    findings = []
    for key, item in sorted(found.items()):
        name, kind, _ = key
        reviewed = known.get(key)
        if reviewed is None:
            message = f"{kind}, not in {baseline.name}: remove it, or review it into the baseline (README, Development)"
            findings.append(Finding(name, int(item.get("line_number") or 0), "new-secret", message))
        elif reviewed.get("is_secret") is True:
            findings.append(
                Finding(name, int(item.get("line_number") or 0), "known-secret", f"{kind}: marked as a real secret")
            )
    notes = (f"{len(found) - len(findings)} reviewed false positives in {baseline.name}",)
    return ScanResult("detect-secrets", len(files), tuple(findings), notes)


# --- pip-audit ------------------------------------------------------------------------------


def fetch_pypi_project(name: str) -> Mapping[str, Any]:
    """PyPI's JSON for a project: its latest release, with that release's known vulnerabilities."""
    url = PYPI_PROJECT_JSON.format(name=name)
    # A fixed https URL on PyPI, never a user-given scheme (bandit B310 is about file:// URLs).
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310  # nosec B310
        data: Mapping[str, Any] = json.load(response)
    return data


def _vulnerability_findings(dependency: str, vulnerabilities: Iterable[Mapping[str, Any]]) -> list[Finding]:
    findings = []
    for vuln in vulnerabilities:
        fixed = ", ".join(vuln.get("fix_versions") or vuln.get("fixed_in") or []) or "no fixed version"
        aliases = ", ".join(vuln.get("aliases") or [])
        message = f"fixed in {fixed}" + (f" (also {aliases})" if aliases else "")
        findings.append(Finding(dependency, 0, str(vuln["id"]), message))
    return findings


_OFFLINE_HINT = "the dependency audit needs https://pypi.org; it never passes without its data"
_NOT_ON_PYPI = re.compile(r"not found on PyPI.*: (?P<name>\S+) \((?P<version>[^()]+)\)$")


def pip_audit(
    root: Path,
    *,
    python: str = sys.executable,
    waivers: Mapping[str, str] | None = None,
    run: Runner = run_tool,
    fetch: ProjectFetcher = fetch_pypi_project,
) -> ScanResult:
    """pip-audit of the packages installed for `python`, against PyPI's vulnerability data.

    PyPI answers a release's own JSON with 404 behind some mirrors and proxies (pip-audit then
    skips the package and would pass). Those packages are checked against the project's JSON
    instead, whose vulnerabilities are its latest release's: exact when that is the installed
    version. A package neither can audit is a finding unless waivers ("name==version" -> reason,
    reviewed, see pyproject's [tool.opskit.scan]) accept it; an unreachable PyPI is a ScanError.
    """
    waivers = dict(waivers or {})
    command = [python, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "--format", "json"]
    done = run([*command, "--desc", "off", "--timeout", "30"], root)
    try:
        dependencies = json.loads(done.stdout)["dependencies"] if done.returncode in (0, 1) else None
    except (json.JSONDecodeError, KeyError, TypeError):
        dependencies = None
    if dependencies is None:
        # pip-audit ends with a traceback when PyPI does not answer; its last line says why.
        raise ScanError(f"pip-audit could not reach PyPI's vulnerability data: {_tail(done, 1)}", hint=_OFFLINE_HINT)
    findings: list[Finding] = []
    notes: list[str] = []
    fallback: dict[str, str] = {}  # name -> installed version
    unaudited: dict[str, str] = {}  # "name==version" -> why
    for dependency in dependencies:
        name = str(dependency["name"])
        reason = str(dependency.get("skip_reason") or "")
        if not reason:
            findings += _vulnerability_findings(f"{name}=={dependency['version']}", dependency.get("vulns", []))
        elif "editable" in reason:
            notes.append(f"{name}: editable, this project itself (not on PyPI)")
        elif match := _NOT_ON_PYPI.search(reason):
            fallback[name] = match["version"]
        else:
            unaudited[name] = reason
    if not dependencies:
        raise ScanError("pip-audit found no installed packages to audit")
    if fallback:
        with ThreadPoolExecutor(max_workers=8) as pool:
            projects = dict(zip(fallback, pool.map(lambda name: _fetch_project(fetch, name), fallback), strict=True))
        for name, version in fallback.items():
            latest = str(projects[name].get("info", {}).get("version", ""))
            if latest == version:
                findings += _vulnerability_findings(f"{name}=={version}", projects[name].get("vulnerabilities", []))
            else:
                unaudited[f"{name}=={version}"] = (
                    f"PyPI serves no vulnerability data for {version} here (its release JSON answered 404; "
                    f"the project's covers only the latest release, {latest or 'unknown'}): upgrade it, "
                    "or review it into [tool.opskit.scan.unaudited] in pyproject.toml"
                )
        notes.append(f"{len(fallback)} packages checked against PyPI's project data (release JSON not served)")
    for dependency_name, why in sorted(unaudited.items()):
        if dependency_name in waivers:
            notes.append(f"{dependency_name}: not audited, waived: {waivers[dependency_name]}")
        else:
            findings.append(Finding(dependency_name, 0, "not-audited", why))
    return ScanResult("pip-audit", len(dependencies), tuple(findings), tuple(notes))


def _fetch_project(fetch: ProjectFetcher, name: str) -> Mapping[str, Any]:
    try:
        return fetch(name)
    except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors; bad JSON a ValueError
        raise ScanError(f"could not reach PyPI's vulnerability data for {name}: {error}", hint=_OFFLINE_HINT) from None


def audit_waivers(pyproject: Path) -> dict[str, str]:
    """The reviewed "name==version" -> reason table under [tool.opskit.scan] unaudited."""
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ScanError(f"cannot read the audit waivers: {error}", where=str(pyproject)) from None
    table = data.get("tool", {}).get("opskit", {}).get("scan", {}).get("unaudited", {})
    return {str(key): str(value) for key, value in table.items()}


# --- stacks: compose config, promtool, amtool, nginx ----------------------------------------


def stack_dirs(stacks_root: Path) -> list[Path]:
    """Every stack: a directory directly under stacks_root with a compose.yaml."""
    return sorted(path.parent for path in stacks_root.glob("*/compose.yaml"))


def compose_configs(root: Path, stacks_root: Path, compose_bin: Path) -> ScanResult:
    """`docker compose config` of every stack (the real Compose; no env file, defaults apply)."""
    from ops.stack.toolbox import compose_config

    stacks = stack_dirs(stacks_root)
    if not stacks:
        raise ScanError("no stacks (directories with a compose.yaml) to check", where=str(stacks_root))
    findings = []
    for stack in stacks:
        try:
            compose_config(stack, compose_bin)
        except StackError as error:
            findings.append(Finding(_relative(str(stack / "compose.yaml"), root), 0, "compose", error.message))
    return ScanResult("compose config", len(stacks), tuple(findings))


def monitoring_configs(root: Path, stacks_root: Path, client: docker.DockerClient) -> ScanResult:
    """promtool check config/rules, promtool test rules, amtool check-config (and nginx -t) of
    every stack's configs, in the toolbox image (which must exist: ops.toolbox.ensure_toolbox_image)."""
    from ops.stack.toolbox import STACK_MOUNT, _planned_checks, check_stack_configs

    checked = 0
    findings = []
    for stack in stack_dirs(stacks_root):
        if not _planned_checks(stack):
            continue
        for check in check_stack_configs(stack, client):
            checked += 1
            if not check.ok:
                findings.append(
                    Finding(
                        _relative(str(stack / check.file), root),
                        0,
                        check.tool,
                        _tool_reason(check.output.replace(f"{STACK_MOUNT}/{check.file}: ", "")),
                    )
                )
    if checked == 0:
        raise ScanError("no monitoring configs found in any stack", where=str(stacks_root))
    return ScanResult("promtool/amtool", checked, tuple(findings))


def _tool_reason(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Checking ", "SUCCESS", "FAILED"))]
    return " | ".join(useful[:3]) or (lines[-1] if lines else "failed without output")


# --- the repository scan --------------------------------------------------------------------


@dataclass
class RepositoryScan:
    """Every scan of one tree, in order; ok when each passed."""

    root: Path
    results: list[ScanResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(result.ok for result in self.results)


def scan_repository(
    root: Path,
    reporter: Reporter,
    *,
    python: str = sys.executable,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    stacks: bool = True,
) -> RepositoryScan:
    """Run every scanner on the checkout at root; a scanner that cannot scan is a failed result,
    and the others still run, so one run shows everything to fix."""
    import time

    scan = RepositoryScan(root)

    def timed(name: str, function: Callable[[], ScanResult]) -> None:
        started = time.monotonic()
        try:
            result = function()
        except OpsError as error:
            result = ScanResult(name, error=error.one_line())
        seconds = time.monotonic() - started
        scan.results.append(
            ScanResult(result.scanner, result.checked, result.findings, result.notes, result.error, seconds)
        )
        reporter.step("local", name, "ok" if result.ok else "failed", f"{seconds:.1f}s")

    timed("bandit", lambda: bandit(root, python=python))
    timed("pip-audit", lambda: pip_audit(root, python=python, waivers=audit_waivers(root / "pyproject.toml")))
    timed("shellcheck", lambda: shellcheck(root, exclude))
    timed("detect-secrets", lambda: secrets(root, exclude=exclude, python=python))
    if stacks:
        _scan_stacks(scan, root, reporter, timed)
    return scan


def _scan_stacks(
    scan: RepositoryScan, root: Path, reporter: Reporter, timed: Callable[[str, Callable[[], ScanResult]], None]
) -> None:
    import docker as sdk

    from ops.lab import ensure_base_image
    from ops.stack.toolbox import ensure_compose, ensure_toolbox_image

    try:
        client = sdk.from_env(version="auto", timeout=300)
    except sdk.errors.DockerException as error:
        for name in ("compose config", "promtool/amtool"):
            scan.results.append(ScanResult(name, error=f"the local Docker engine does not answer: {error}"))
        return
    try:
        ensure_base_image(client, reporter)
        ensure_toolbox_image(client, reporter)
        compose_bin = ensure_compose(root, reporter)
        timed("compose config", lambda: compose_configs(root, root / "stacks", compose_bin))
        timed("promtool/amtool", lambda: monitoring_configs(root, root / "stacks", client))
    except OpsError as error:
        scan.results.append(ScanResult("toolbox", error=error.one_line()))
    finally:
        client.close()
