"""Editing an env file's text in place: set some keys, keep every other line (comments included).

The lab and `opskit init` set the keys they own this way, so a person's own lines survive. Pure
text in, text out: reading and writing the file is the caller's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvEdit:
    """The edited text and the keys whose value changed (added ones included), in file order."""

    text: str
    changed: tuple[str, ...]


def _assignment(key: str) -> re.Pattern[str]:
    # KEY=value, optionally `export KEY=...`, with a trailing ` # comment` kept apart from the value.
    return re.compile(rf"^(?P<lead>\s*(?:export\s+)?{re.escape(key)}\s*=\s*)(?P<value>.*?)(?P<comment>\s+#.*)?$")


def set_keys(text: str, values: Mapping[str, str]) -> EnvEdit:
    """text with each key's assignment set to its value; a key that is not assigned yet is appended.

    Every line that assigns the key gets the value (dotenv keeps the last one, so no earlier copy may
    disagree); its `export`, spacing and trailing comment stay as they were.
    """
    lines = text.splitlines()
    changed: list[str] = []
    for key, value in values.items():
        pattern = _assignment(key)
        found = False
        for number, line in enumerate(lines):
            match = pattern.match(line)
            if match is None:
                continue
            found = True
            if match["value"].strip().strip("'\"") != value:
                lines[number] = f"{match['lead']}{value}{match['comment'] or ''}"
                if key not in changed:
                    changed.append(key)
        if not found:
            lines.append(f"{key}={value}")
            changed.append(key)
    edited = "\n".join(lines) + "\n" if lines else ""
    return EnvEdit(edited, tuple(changed))
