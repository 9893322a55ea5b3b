"""Invoke entry point: `inv --list` shows opskit's tasks (the same as the `opskit` command)."""

from ops.tasks import namespace

ns = namespace()
