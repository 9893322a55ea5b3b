"""On call: status of every host, the doctor's checks, runbooks, and service logs/restart/exec."""
