"""`inv TASK --help` as a user reads it: every option shows its type, no short flag surprises."""

from __future__ import annotations

from ops.tasks import namespace


def _contexts():  # type: ignore[no-untyped-def]
    return namespace().to_contexts()


def test_every_option_that_takes_a_value_shows_its_type() -> None:
    untyped = []
    for context in _contexts():
        for argument in context.args.values():
            spec, text = context.help_for(f"--{argument.name.replace('_', '-')}")
            if argument.kind is bool:
                continue
            shown = "=" in spec or text.startswith(("STRING", "INT"))
            if not shown:
                untyped.append(f"{context.name} {spec}")
    assert untyped == []


def test_short_flags_are_first_letters_and_never_h_or_for_debug() -> None:
    surprising = []
    for context in _contexts():
        for argument in context.args.values():
            long = argument.name.replace("_", "-")
            for short in (name for name in argument.names if len(name) == 1):
                if short != long[0] or short == "h" or long == "debug":
                    surprising.append(f"{context.name}: -{short} for --{long}")
    assert surprising == []


def test_deploy_help_reads_as_documented() -> None:
    deploy = next(context for context in _contexts() if context.name == "deploy.deploy")
    assert deploy.help_for("--lock-wait")[0] == "-l INT, --lock-wait=INT"
    assert deploy.help_for("--debug")[0] == "--debug"
    assert deploy.help_for("--host")[0] == "--host=STRING"
