"""Output for people: the rich console, a step reporter (ok / changed / failed) and error lines.

Library code reports through a Reporter and never prints; the task layer chooses the console
one. Every line passes through the redactor so that secrets never reach a terminal or a log.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console

OK, CHANGED, FAILED, SKIPPED, WOULD_CHANGE = "ok", "changed", "failed", "skipped", "would change"
_STYLE = {OK: "green", CHANGED: "yellow", FAILED: "bold red", SKIPPED: "dim", WOULD_CHANGE: "cyan"}
_MARK = {OK: "✓", CHANGED: "~", FAILED: "✗", SKIPPED: "-", WOULD_CHANGE: "?"}


@dataclass(frozen=True)
class StepEvent:
    host: str
    step: str
    status: str
    detail: str = ""


class Reporter(Protocol):
    """Where a capability tells what it does, step by step, host by host."""

    def step(self, host: str, step: str, status: str, detail: str = "") -> None: ...

    def info(self, message: str) -> None: ...

    def transfer(self, host: str, what: str, total: int | None = None) -> Callable[[int], None]:
        """A callback that advances a byte-progress bar for a transfer."""
        ...


@dataclass
class RecordingReporter:
    """Keeps every event; for tests, --json output and summaries."""

    events: list[StepEvent] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def step(self, host: str, step: str, status: str, detail: str = "") -> None:
        self.events.append(StepEvent(host, step, status, detail))

    def info(self, message: str) -> None:
        self.messages.append(message)

    def count(self, status: str) -> int:
        return sum(1 for event in self.events if event.status == status)

    def close(self) -> None:
        pass

    def __enter__(self) -> RecordingReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transfer(self, host: str, what: str, total: int | None = None) -> Callable[[int], None]:
        return lambda count: None


_console: Console | None = None
_redactors: list[Callable[[str], str]] = []


def add_redactor(redact: Callable[[str], str]) -> None:
    """Register a function that hides secrets in every line the console prints."""
    _redactors.append(redact)


def redact(text: str) -> str:
    for function in _redactors:
        text = function(text)
    return text


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False, soft_wrap=False)
        if not _console.is_terminal:
            # Logs and CI: wide enough that tables are not folded into unreadable columns.
            _console.width = max(_console.width, 140)
    return _console


def error_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class ConsoleReporter:
    """Prints one line per step per host as it happens, and keeps the events for the summary."""

    def __init__(self, quiet: bool = False):
        import threading

        self.record = RecordingReporter()
        self.quiet = quiet
        self._lock = threading.Lock()
        self._progress: Any = None

    @property
    def events(self) -> list[StepEvent]:
        return self.record.events

    def step(self, host: str, step: str, status: str, detail: str = "") -> None:
        self.record.step(host, step, status, detail)
        if self.quiet:
            return
        from rich.markup import escape

        style = _STYLE.get(status, "")
        text = f"  [{style}]{_MARK.get(status, ' ')} {status:<8}[/] {escape(host):<18} {escape(step)}"
        if detail:
            text += f" [dim]{escape(redact(detail))}[/]"
        console().print(text)

    def info(self, message: str) -> None:
        self.record.info(message)
        if not self.quiet:
            from rich.markup import escape

            console().print(f"[bold]{escape(redact(message))}[/]")

    def count(self, status: str) -> int:
        return self.record.count(status)

    def transfer(self, host: str, what: str, total: int | None = None) -> Callable[[int], None]:
        """A live bar with bytes and throughput; it ends when the transfer stops advancing."""
        if self.quiet:
            return lambda count: None
        from rich.progress import DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with self._lock:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("  {task.description}"),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    console=console(),
                    transient=True,  # the step line that follows says what was sent
                )
                self._progress.start()
            progress = self._progress
            task = progress.add_task(f"{host} {what}", total=total)
        return lambda count: progress.advance(task, count)

    def close(self) -> None:
        """Stop live progress bars (call at the end of a command, or use the reporter in `with`)."""
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def print_error(message: str) -> None:
    """The one red line a failed command ends with."""
    from rich.markup import escape

    error_console().print(f"[bold red]error:[/] {escape(redact(message))}", soft_wrap=True)


def print_warning(message: str) -> None:
    """A yellow line on stderr for something that went wrong without changing the result."""
    from rich.markup import escape

    error_console().print(f"[yellow]warning:[/] {escape(redact(message))}", soft_wrap=True)


def print_json(data: object) -> None:
    import json

    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")
    sys.stdout.flush()


def confirm(prompt: str, *, yes: bool, refusing: str | None, word: str | None = None) -> bool:
    """Ask the person at the terminal; the one way opskit asks before changing something.

    yes answers for them (--yes). word: they must type it exactly (destructive actions), else y/yes.
    Without a terminal, refusing names the action in the error ("refusing to <refusing> without
    confirmation"); with refusing None the answer is simply no.
    """
    if yes:
        return True
    if not sys.stdin.isatty():
        if refusing is None:
            return False
        from ops.errors import OpsError

        raise OpsError(f"refusing to {refusing} without confirmation", hint="no terminal to ask: pass --yes")
    if word:
        return input(f"{prompt} type '{word}' to go on: ").strip() == word
    return input(f"{prompt} [y/N] ").strip().lower() in ("y", "yes")
