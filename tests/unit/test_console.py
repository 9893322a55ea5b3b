"""ops.console: the one confirm() and reporters used as context managers."""

from __future__ import annotations

import io

import pytest

from ops.console import ConsoleReporter, RecordingReporter, confirm
from ops.errors import OpsError


def test_confirm_without_a_terminal_refuses_with_the_action_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("prod\n"))
    with pytest.raises(OpsError) as caught:
        confirm("deploy to environment prod (2 hosts)?", yes=False, refusing="deploy to prod", word="prod")
    assert caught.value.one_line().startswith("refusing to deploy to prod without confirmation")
    assert confirm("pin these keys?", yes=False, refusing=None) is False
    assert confirm("anything", yes=True, refusing="restore") is True


def test_confirm_on_a_terminal_takes_only_the_word_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    answers = iter(["restor", "restore", "y"])
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or next(answers))
    assert confirm("restore 2 volumes:", yes=False, refusing="restore", word="restore") is False
    assert confirm("restore 2 volumes:", yes=False, refusing="restore", word="restore") is True
    assert confirm("run the recovery?", yes=False, refusing="run a recovery") is True
    assert prompts == [
        "restore 2 volumes: type 'restore' to go on: ",
        "restore 2 volumes: type 'restore' to go on: ",
        "run the recovery? [y/N] ",
    ]


def test_reporters_close_their_progress_when_used_in_with() -> None:
    with ConsoleReporter(quiet=False) as reporter:
        advance = reporter.transfer("h1", "images", total=10)
        advance(5)
        assert reporter._progress is not None
    assert reporter._progress is None
    with RecordingReporter() as recording:
        recording.step("h1", "deploy", "ok")
    assert recording.count("ok") == 1
