"""Posting a notification to NOTIFY_URL: redacted, bounded in time (NOTIFY_TIMEOUT per attempt, one
retry), and never raising: the caller gets a Delivery that says whether it arrived and, if not, why
in one line. A notification must never change the outcome of what it reports."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace

from ops import __version__
from ops.config import Environment
from ops.console import redact
from ops.notify.message import Message, render

RETRY_PAUSE = 1.0  # seconds between the attempt and its one retry


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    error: str = ""  # why it was not delivered, one line without the URL


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"the receiver answered HTTP {error.code}"
    if isinstance(error, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            return f"no answer within {timeout:g} s"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror.lower()
        return str(reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return f"{type(error).__name__}: {error}"


def _retryable(error: BaseException) -> bool:
    """A refused or timed-out connection and a 5xx, 408 or 429 are worth one more try; 4xx are not."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    return True


def _post_once(url: str, body: bytes, timeout: float) -> BaseException | None:
    """One POST, ended after timeout seconds whatever the receiver does (a thread it cannot hold)."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked by deliver)
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"opskit/{__version__}"},
        )
        try:
            # The URL is the operator's own NOTIFY_URL, checked to be http(s) before this runs.
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310
                response.read(65536)
            outcome.append(None)
        except urllib.error.HTTPError as error:
            error.close()  # its body is not read; the connection goes
            outcome.append(error)
        except BaseException as error:  # everything is an answer to report, nothing escapes
            outcome.append(error)

    worker = threading.Thread(target=attempt, name="notify", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)  # a receiver trickling an answer byte by byte is cut off here too
    if worker.is_alive() or not outcome:
        return TimeoutError()
    return outcome[0]


def deliver(url: str, body: str, timeout: float, *, retries: int = 1, pause: float = RETRY_PAUSE) -> Delivery:
    """POST body (JSON) to url, with one retry `pause` seconds later; never raises. At most
    (retries + 1) * (timeout + 0.5) + retries * pause seconds."""
    if not url.lower().startswith(("http://", "https://")):
        return Delivery(False, 0, "NOTIFY_URL is not an http(s):// URL")
    data = body.encode()
    attempts = 0
    error: BaseException | None = None
    while attempts <= retries:
        if attempts:
            time.sleep(pause)
        attempts += 1
        error = _post_once(url, data, timeout)
        if error is None:
            return Delivery(True, attempts)
        if not _retryable(error):
            break
    assert error is not None
    return Delivery(False, attempts, _reason(error, timeout))


def redacted(message: Message, hide: Callable[[str], str]) -> Message:
    """The message with every secret (hide's, e.g. the environment's, and the console's) hidden."""

    def clean(text: str) -> str:
        return redact(hide(text))

    return replace(
        message,
        title=clean(message.title),
        fields=tuple((name, clean(value)) for name, value in message.fields),
        details=tuple(clean(line) for line in message.details),
    )


def notify(env: Environment, message: Message) -> Delivery | None:
    """Post message to the environment's NOTIFY_URL in NOTIFY_FORMAT; None when no URL is set."""
    url = env.secret("NOTIFY_URL")
    if not url:
        return None
    body = render(redacted(message, env.redact), env.notify.format)
    return deliver(url, env.redact(redact(body)), env.notify.timeout)
