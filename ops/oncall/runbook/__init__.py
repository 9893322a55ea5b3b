"""Runbooks as data: TOML files that say which alert they answer, how to diagnose it and how to fix it.

model.py holds the values, load.py reads and validates the files, run.py diagnoses and recovers.
Diagnosis only reads; recovery actions run only when the caller asks (`fix=True`) and its confirm
callback says yes. Nothing here prints or reads os.environ.

    from ops.oncall.runbook import find, run_runbook
"""

from ops.oncall.runbook.load import find, load_all, load_runbook, parse_runbook, runbook_files, shipped_dir
from ops.oncall.runbook.model import Action, DiagnosisStep, Expect, Runbook, RunbookError
from ops.oncall.runbook.run import (
    ActionResult,
    DoctorProbe,
    RunbookResult,
    StepResult,
    diagnose,
    run_runbook,
)

__all__ = [
    "Action",
    "ActionResult",
    "DiagnosisStep",
    "DoctorProbe",
    "Expect",
    "Runbook",
    "RunbookError",
    "RunbookResult",
    "StepResult",
    "diagnose",
    "find",
    "load_all",
    "load_runbook",
    "parse_runbook",
    "run_runbook",
    "runbook_files",
    "shipped_dir",
]
