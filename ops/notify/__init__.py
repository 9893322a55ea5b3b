"""Notifications: one message per deploy, rollback, swap, backup, restore, drill and failing doctor,
posted to the secret NOTIFY_URL as Slack-compatible or generic JSON. The task layer hands each
operation's result here after it ran; no capability below knows notifications exist, and a
notification never changes what it reports (bounded time, one retry, never raises).
"""

from ops.notify.deliver import Delivery, deliver, notify, redacted
from ops.notify.events import (
    backup_message,
    deploy_message,
    doctor_message,
    drill_message,
    failure_message,
    restore_message,
)
from ops.notify.message import FORMATS, Message, json_body, render, slack_body

__all__ = [
    "FORMATS",
    "Delivery",
    "Message",
    "backup_message",
    "deliver",
    "deploy_message",
    "doctor_message",
    "drill_message",
    "failure_message",
    "json_body",
    "notify",
    "redacted",
    "render",
    "restore_message",
    "slack_body",
]
