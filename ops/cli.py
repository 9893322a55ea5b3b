"""The `opskit` console script: invoke's CLI with opskit's namespace, for use from any repository."""

from __future__ import annotations

from invoke.program import Program

from ops import __version__
from ops.tasks import namespace


def main() -> None:
    Program(namespace=namespace(), name="opskit", binary="opskit", version=__version__).run()
