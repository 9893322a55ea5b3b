"""What every task shares: error handling, --debug, choosing the environment, env-named tasks.

Tasks only parse flags, call the library and render; an OpsError becomes one red line and exit
code 1, and a traceback is shown only with --debug (or `inv --debug`, or OPS_DEBUG=1).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import Task

from ops.errors import OpsError

# Every task ends with one of these (the only place exit codes are chosen): 0 when all went well.
EXIT_FAILED = 1  # an OpsError (one red line), or a summary that says what failed
EXIT_INTERRUPTED = 130  # Ctrl-C

if TYPE_CHECKING:
    from invoke.context import Context

    from ops.config import Environment


def project_root() -> Path:
    """The repository the operator works in: OPS_ROOT, else the nearest directory with env/."""
    from ops.config import find_root

    explicit = os.environ.get("OPS_ROOT")
    return Path(explicit).resolve() if explicit else find_root(Path.cwd().resolve())


def load_env(c: Context, name: str | None) -> Environment:
    """The chosen environment, validated, with its secrets registered for redaction."""
    from ops.config import load_environment, resolve_env_name
    from ops.console import add_redactor

    root = project_root()
    configured = c.config.get("ops", {}).get("env") if hasattr(c, "config") else None
    env_name = resolve_env_name(name, os.environ, configured, root)
    env = load_environment(env_name, root, os.environ)
    add_redactor(env.redact)
    return env


def _debug_wanted(flag: bool) -> bool:
    return flag or os.environ.get("OPS_DEBUG") == "1" or logging.getLogger().isEnabledFor(logging.DEBUG)


# Short flags a reader would take for something else: -h is help everywhere.
RESERVED_SHORT_FLAGS = frozenset("h")
LONG_ONLY = frozenset({"debug"})  # rarely typed; its first letter belongs to --dry-run


class OpsTask(Task[Any]):
    """A task whose short flags surprise no one: an option gets the first letter of its name, or
    no short flag at all (never a letter from the middle of its name), and none gets -h.

    Invoke's help names the value type of str and int options only: tasks take whole seconds
    (int) rather than floats, so every option's type shows (tests/unit/test_tasks_help.py)."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        long, *shorts = opts["names"]
        keep = [s for s in shorts if s == long[0] and s not in RESERVED_SHORT_FLAGS and name not in LONG_ONLY]
        opts["names"] = [long, *keep]
        return opts


HELP_FLAGS = frozenset({"--help", "-h"})


def print_task_help(body: Callable[..., Any], helps: dict[str, str], positional: list[str] | None) -> None:
    """The task's docstring and arguments, for a --help that invoke took as an argument's value."""
    from rich.markup import escape

    from ops.console import console

    params = [param for param in inspect.signature(body).parameters.values() if param.name != "c"]
    named_positional = positional if positional is not None else [p.name for p in params if p.default is p.empty]
    out = console()
    usage = " ".join(name.upper() for name in named_positional)
    name = body.__name__.replace("_", "-").strip("-")
    typed = next((arg for arg in sys.argv[1:] if arg == name or arg.endswith("." + name)), name)
    out.print(f"Usage: {escape(typed)} {usage} [--options]".replace("  ", " "))
    out.print(escape(inspect.getdoc(body) or ""))
    names = [param.name for param in params] + ([] if "debug" in named_positional else ["debug"])
    for name in dict.fromkeys(names):
        flag = name.upper() if name in named_positional else "--" + name.replace("_", "-")
        out.print(f"  {escape(flag):<24} {escape(helps.get(name, ''))}")


def command(
    body: Callable[..., Any],
    *,
    name: str | None = None,
    default: bool = False,
    help: dict[str, str] | None = None,
    iterable: list[str] | None = None,
    positional: list[str] | None = None,
) -> Task[Any]:
    """An invoke Task around body, with a --debug flag and opskit's error handling."""
    signature = inspect.signature(body)
    params = list(signature.parameters.values())
    if "debug" not in signature.parameters:
        params.append(inspect.Parameter("debug", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False))

    @functools.wraps(body)
    def run(c: Context, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(value, str) and value in HELP_FLAGS for value in (*args, *kwargs.values())):
            # `inv swarm.drain --help`: invoke hands "--help" to the positional argument.
            print_task_help(body, helps, positional)
            return None
        debug = bool(kwargs.pop("debug", False))
        if "debug" in signature.parameters:
            kwargs["debug"] = debug
        try:
            return body(c, *args, **kwargs)
        except OpsError as error:
            if _debug_wanted(debug):
                raise
            from ops.console import print_error

            print_error(error.one_line())
            raise Exit(code=EXIT_FAILED) from None
        except KeyboardInterrupt:
            from ops.console import print_error

            print_error("interrupted")
            raise Exit(code=EXIT_INTERRUPTED) from None
        except Exit:
            raise
        except Exception as error:
            if _debug_wanted(debug):
                raise
            from ops.console import print_error

            print_error(f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback)")
            raise Exit(code=EXIT_FAILED) from None

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    helps = {"debug": "show the traceback of an error", **(help or {})}
    if "env" in signature.parameters:
        helps.setdefault("env", "environment name (env/NAME.env); default OPS_ENV or the only one")
    if "json" in signature.parameters:
        helps.setdefault("json", "print machine-readable JSON instead of tables")
    names = {param.name for param in params}
    helps = {key: text for key, text in helps.items() if key in names}
    return OpsTask(
        run,
        name=name or body.__name__.replace("_", "-").strip("-"),
        default=default,
        help=helps,
        iterable=iterable,
        positional=positional,
    )


def env_collection(
    name: str,
    body: Callable[..., Any],
    env_names: list[str],
    *,
    help: dict[str, str] | None = None,
    iterable: list[str] | None = None,
    positional: list[str] | None = None,
) -> Collection:
    """A collection whose default task takes --env, plus one task per environment file.

    `inv deploy --env prod` and `inv deploy.prod` then do the same thing.
    """
    collection = Collection(name)
    collection.add_task(command(body, name=name, default=True, help=help, iterable=iterable, positional=positional))
    signature = inspect.signature(body)
    bound_params = [p for p in signature.parameters.values() if p.name != "env"]
    for env_name in env_names:

        def bound(c: Context, *args: Any, _env: str = env_name, **kwargs: Any) -> Any:
            return body(c, *args, env=_env, **kwargs)

        bound.__signature__ = signature.replace(parameters=bound_params)  # type: ignore[attr-defined]
        bound.__name__ = env_name
        bound.__doc__ = (body.__doc__ or "").split("\n")[0].rstrip(".") + f" (environment {env_name})."
        collection.add_task(command(bound, name=env_name, help=help, iterable=iterable, positional=positional))
    return collection


def environment_names() -> list[str]:
    from ops.config import env_files

    try:
        return env_files(project_root())
    except OSError:
        return []


def failed() -> Exit:
    """The exit of a command whose summary already said what failed: `raise failed()`."""
    sys.stdout.flush()
    return Exit(code=EXIT_FAILED)
