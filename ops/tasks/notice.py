"""Where the tasks hand an operation's result to ops.notify: after the operation ran (or stopped
with an error), whatever the command's exit code is going to be. A message that cannot be
delivered is one warning line on stderr; it never changes the result or the exit code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from invoke.exceptions import Exit

from ops.errors import OpsError

if TYPE_CHECKING:
    from ops.config import Environment
    from ops.notify import Message


def send(environment: Environment, message: Message) -> None:
    """Post message to NOTIFY_URL (when set); a failed delivery is a warning line, nothing more."""
    from ops.console import print_warning
    from ops.notify import notify

    try:
        delivery = notify(environment, message)
    except Exception as error:  # a notification must never change the outcome it reports
        print_warning(f"notification not sent: {type(error).__name__}: {error}")
        return
    if delivery is not None and not delivery.delivered:
        tries = "1 attempt" if delivery.attempts == 1 else f"{delivery.attempts} attempts"
        print_warning(
            f"notification of the {message.event} not delivered to NOTIFY_URL ({delivery.error}, {tries}); "
            f"the {message.event}'s result is unchanged"
        )


@contextmanager
def notifying(
    environment: Environment, event: str, subject: str, *, enabled: bool = True
) -> Iterator[Callable[[Message | None], None]]:
    """Run the body, which hands over its result's message (None: nothing to tell); it is sent when
    the body ends, even through the command's own failing exit. A body that stops with an error
    before handing one over sends "<subject> failed" with that error's line. enabled=False (a dry
    run): nothing is sent."""
    handed: list[Message | None] = []
    if not enabled:
        yield handed.append
        return
    try:
        yield handed.append
    except (KeyboardInterrupt, Exit):
        if handed and handed[0] is not None:
            send(environment, handed[0])
        raise
    except Exception as error:
        if handed:
            if handed[0] is not None:
                send(environment, handed[0])
        else:
            from ops.notify import failure_message

            line = error.one_line() if isinstance(error, OpsError) else f"internal error: {type(error).__name__}"
            send(environment, failure_message(environment, event, subject, line))
        raise
    if handed and handed[0] is not None:
        send(environment, handed[0])
