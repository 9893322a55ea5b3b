"""A notification: what happened (one title line, a few named fields, detail lines) and the two
bodies it is posted as, Slack's incoming-webhook JSON and a generic JSON document. Values only:
nothing here sends anything."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ops import __version__

FORMATS = ("slack", "json")
MAX_DETAIL = 1500  # characters of detail lines in a chat message (health output, logs)


@dataclass(frozen=True)
class Message:
    """One notification. event: deploy, rollback, swap, backup, restore, drill, doctor, offsite, fetch;
    outcome: what became of it in the words the title uses (deployed, rolled back, failed, ...)."""

    event: str
    outcome: str
    ok: bool
    environment: str
    title: str
    fields: tuple[tuple[str, str], ...] = ()
    details: tuple[str, ...] = ()
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def field(self, name: str) -> str:
        return dict(self.fields).get(name, "")


def slack_body(message: Message) -> dict[str, object]:
    """Slack's incoming-webhook JSON (also taken by Mattermost, Rocket.Chat and Discord's /slack)."""
    mark = ":white_check_mark:" if message.ok else ":rotating_light:"
    attachment: dict[str, object] = {
        "color": "good" if message.ok else "danger",
        "fields": [{"title": name, "value": value, "short": len(value) < 40} for name, value in message.fields],
        "footer": f"opskit {__version__}",
        "ts": int(datetime.fromisoformat(message.time).timestamp()),
    }
    if message.details:
        text = "\n".join(message.details)
        attachment["text"] = "```" + (text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "\n…") + "```"
    return {"text": f"{mark} {message.title}", "attachments": [attachment]}


def json_body(message: Message) -> dict[str, object]:
    """A generic JSON document: every part of the message by name, for any receiver."""
    return {
        "event": message.event,
        "outcome": message.outcome,
        "ok": message.ok,
        "environment": message.environment,
        "title": message.title,
        "fields": dict(message.fields),
        "details": list(message.details),
        "time": message.time,
        "opskit": __version__,
    }


def render(message: Message, format: str) -> str:
    """The body posted for message in format (slack or json)."""
    if format not in FORMATS:
        raise ValueError(f"unknown notification format {format!r}")
    body = slack_body(message) if format == "slack" else json_body(message)
    return json.dumps(body, ensure_ascii=False)
