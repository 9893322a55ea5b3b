"""ops.pipeline.scan: each scanner fails on its planted finding in tests/fixtures/scan (the real tool runs,
no Docker needed), and the dependency audit never passes without its data (fake pip-audit and
PyPI passed in as collaborators).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ops.errors import ScanError
from ops.pipeline.scan import (
    DEFAULT_EXCLUDE,
    audit_waivers,
    bandit,
    is_shell_script,
    pip_audit,
    secrets,
    shellcheck,
    source_files,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "scan"


def test_bandit_fails_on_shell_true_with_user_input_and_names_the_file() -> None:
    result = bandit(FIXTURES, ("python",))
    assert not result.ok
    assert [(finding.file, finding.line, finding.rule) for finding in result.findings] == [
        ("python/runner.py", 8, "B602/high")
    ]
    assert "shell=True" in result.findings[0].message


def test_bandit_refuses_to_pass_on_nothing() -> None:
    with pytest.raises(ScanError, match="no Python files"):
        bandit(FIXTURES, ("shell",))


def test_shellcheck_fails_on_a_script_found_by_its_shebang() -> None:
    assert is_shell_script(FIXTURES / "shell" / "cleanup")
    assert not is_shell_script(FIXTURES / "python" / "runner.py")
    result = shellcheck(FIXTURES)
    assert result.checked == 1
    assert not result.ok
    assert {finding.file for finding in result.findings} == {"shell/cleanup"}
    assert "SC1020" in {finding.rule for finding in result.findings}


def test_shellcheck_refuses_to_pass_on_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no scripts here\n")
    with pytest.raises(ScanError, match="no shell scripts"):
        shellcheck(tmp_path)


def test_detect_secrets_fails_on_a_planted_password_and_never_prints_it() -> None:
    result = secrets(FIXTURES, FIXTURES / "no.baseline")
    assert not result.ok
    [finding] = result.findings
    assert (finding.file, finding.line, finding.rule) == ("secrets/settings.py", 3, "new-secret")
    assert "Secret Keyword" in finding.message
    assert "Pl4nted" not in str(finding)


def _baseline(tmp_path: Path, is_secret: bool) -> Path:
    scanned = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", "secrets/settings.py"],
        cwd=FIXTURES,
        capture_output=True,
        text=True,
        check=True,
    )
    baseline = json.loads(scanned.stdout)
    for items in baseline["results"].values():
        for item in items:
            item["is_secret"] = is_secret
    path = tmp_path / "reviewed.baseline"
    path.write_text(json.dumps(baseline))
    return path


def test_detect_secrets_passes_what_the_baseline_reviewed_and_fails_what_it_confirmed(tmp_path: Path) -> None:
    assert secrets(FIXTURES, _baseline(tmp_path, is_secret=False)).ok
    confirmed = secrets(FIXTURES, _baseline(tmp_path, is_secret=True))
    assert [(finding.file, finding.rule) for finding in confirmed.findings] == [("secrets/settings.py", "known-secret")]


def test_the_repository_scan_skips_the_planted_fixtures() -> None:
    files = source_files(REPO)
    assert "ops/deploy/compose.py" in files
    assert "scripts/bootstrap" in files
    assert not [name for name in files if name.startswith(DEFAULT_EXCLUDE)]


def test_the_repository_baseline_is_reviewed() -> None:
    baseline = json.loads((REPO / ".secrets.baseline").read_text())
    entries = [item for items in baseline["results"].values() for item in items]
    assert entries, "an empty baseline would not need this test"
    assert all(item.get("is_secret") is False for item in entries)


# --- pip-audit, with pip-audit and PyPI faked ------------------------------------------------


def _pip_audit_runs(report: Mapping[str, Any] | None, code: int = 0, stderr: str = "") -> Any:
    def run(command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        assert "--skip-editable" in command
        return subprocess.CompletedProcess(list(command), code, json.dumps(report) if report else "", stderr)

    return run


def _pypi(projects: Mapping[str, Mapping[str, Any]]) -> Any:
    def fetch(name: str) -> Mapping[str, Any]:
        if name not in projects:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return projects[name]

    return fetch


def _not_on_pypi(name: str, version: str) -> dict[str, str]:
    return {"name": name, "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} ({version})"}


def test_pip_audit_reports_a_vulnerable_dependency() -> None:
    report = {
        "dependencies": [
            {"name": "rich", "version": "15.0.0", "vulns": []},
            {"name": "jinja2", "version": "2.10", "vulns": [{"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}]},
            {"name": "opskit", "skip_reason": "distribution marked as editable"},
        ]
    }
    result = pip_audit(REPO, run=_pip_audit_runs(report, code=1), fetch=_pypi({}))
    assert [str(finding) for finding in result.findings] == ["jinja2==2.10: PYSEC-2019-217 fixed in 2.10.1"]


def test_pip_audit_falls_back_to_pypis_project_data_when_release_data_is_not_served() -> None:
    report = {"dependencies": [_not_on_pypi("pycrypto", "2.6.1"), _not_on_pypi("rich", "15.0.0")]}
    projects = {
        "pycrypto": {"info": {"version": "2.6.1"}, "vulnerabilities": [{"id": "PYSEC-2017-94", "fixed_in": []}]},
        "rich": {"info": {"version": "15.0.0"}, "vulnerabilities": []},
    }
    result = pip_audit(REPO, run=_pip_audit_runs(report), fetch=_pypi(projects))
    assert [str(finding) for finding in result.findings] == ["pycrypto==2.6.1: PYSEC-2017-94 fixed in no fixed version"]


def test_pip_audit_fails_on_a_package_it_could_not_audit_unless_reviewed() -> None:
    report = {"dependencies": [_not_on_pypi("invoke", "2.2.1")]}
    projects = {"invoke": {"info": {"version": "3.0.3"}, "vulnerabilities": []}}
    result = pip_audit(REPO, run=_pip_audit_runs(report), fetch=_pypi(projects))
    [finding] = result.findings
    assert (finding.file, finding.rule) == ("invoke==2.2.1", "not-audited")
    assert "no vulnerability data for 2.2.1" in finding.message
    assert "upgrade it, or review it into [tool.opskit.scan.unaudited]" in finding.message
    waived = pip_audit(
        REPO, run=_pip_audit_runs(report), fetch=_pypi(projects), waivers={"invoke==2.2.1": "held by fabric"}
    )
    assert waived.ok
    assert "invoke==2.2.1: not audited, waived: held by fabric" in waived.notes
    # A waiver is for one version: the next one is audited or reviewed again.
    other = pip_audit(
        REPO, run=_pip_audit_runs(report), fetch=_pypi(projects), waivers={"invoke==2.2.0": "held by fabric"}
    )
    assert not other.ok


def test_pip_audit_fails_saying_so_when_pypi_cannot_be_reached() -> None:
    report = {"dependencies": [_not_on_pypi("rich", "15.0.0")]}
    with pytest.raises(ScanError, match="could not reach PyPI's vulnerability data for rich"):
        pip_audit(REPO, run=_pip_audit_runs(report), fetch=_pypi({}))
    crashed = _pip_audit_runs(None, code=1, stderr="Traceback ...\nrequests.exceptions.ConnectionError: refused")
    with pytest.raises(ScanError, match=r"could not reach PyPI's vulnerability data: requests\.exceptions"):
        pip_audit(REPO, run=crashed, fetch=_pypi({}))


def test_the_real_pip_audit_fails_when_pypi_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy on a loopback port that refuses connections: nothing leaves this machine.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        with pytest.raises(ScanError) as caught:
            pip_audit(REPO)
    assert "could not reach PyPI's vulnerability data" in caught.value.message
    assert "never passes without its data" in str(caught.value)


def test_the_repository_waivers_name_exact_versions_with_reasons() -> None:
    waivers = audit_waivers(REPO / "pyproject.toml")
    assert waivers
    for name, reason in waivers.items():
        assert "==" in name and reason.strip(), name
