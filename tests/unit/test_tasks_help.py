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


def test_help_after_a_task_with_a_positional_argument_shows_help_and_runs_nothing(capsys) -> None:  # type: ignore[no-untyped-def]
    from invoke.program import Program

    for argv in (["swarm.drain", "--help"], ["swarm.drain", "-h"], ["backup.restore", "--help"]):
        Program(namespace=namespace(), name="opskit", binary="opskit").run(["opskit", *argv], exit=False)
        out = capsys.readouterr()
        assert "Usage:" in out.out and "--debug" in out.out and "--env" in out.out, out
        assert "no environments" not in out.out + out.err and "Error:" not in out.out + out.err, out
    Program(namespace=namespace(), name="opskit", binary="opskit").run(["opskit", "swarm.drain", "--help"], exit=False)
    out = capsys.readouterr().out
    assert "Drain a node for maintenance" in out and "HOST" in out and "the node's hostname" in out


def test_a_task_with_list_and_flag_arguments_still_runs() -> None:
    from invoke.context import Context

    from ops.tasks.base import command

    seen = []

    def pick(c: Context, name: str, only: list[str] | None = None, force: bool = False) -> None:
        seen.append((name, only, force))

    task = command(pick, iterable=["only"])
    task(Context(), name="web", only=["a", "b"], force=True)
    task(Context(), name="--help", only=[], force=False)
    assert seen == [("web", ["a", "b"], True)]
