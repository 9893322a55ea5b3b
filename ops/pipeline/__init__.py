"""Developer pipeline only (nox -s scan, nox -s build): never imported by a task or a capability,
so an installed opskit runs without the scanners."""
