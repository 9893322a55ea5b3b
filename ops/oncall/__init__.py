"""On call: status of every host, the doctor's checks, runbooks, and service logs/restart/exec.

Everything here reads a host's state; only a runbook's recovery (asked for and confirmed) and a
service restart change anything. Nothing here prints.

    from ops.oncall import environment_status, find, probe, run_runbook
    from ops.oncall.doctor import doctor

The doctor() function is not re-exported here: under its module's name it would hide the module
(`import ops.oncall.doctor` would give the function).
"""

from ops.oncall.doctor import CHECK_NAMES, DoctorReport, probe
from ops.oncall.findings import Check
from ops.oncall.runbook import (
    DiagnosisStep,
    Runbook,
    RunbookError,
    RunbookResult,
    find,
    load_all,
    run_runbook,
)
from ops.oncall.services import ServiceError, exec_in_service, restart_service, service_logs
from ops.oncall.status import ContainerStatus, HostStatus, environment_status

__all__ = [
    "CHECK_NAMES",
    "Check",
    "ContainerStatus",
    "DiagnosisStep",
    "DoctorReport",
    "HostStatus",
    "Runbook",
    "RunbookError",
    "RunbookResult",
    "ServiceError",
    "environment_status",
    "exec_in_service",
    "find",
    "load_all",
    "probe",
    "restart_service",
    "run_runbook",
    "service_logs",
]
