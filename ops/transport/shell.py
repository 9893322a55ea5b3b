"""Shell words for commands run on hosts: quoting, the lines of output a person is shown, and the
@@name@@ sections a one-round-trip script prints."""

from __future__ import annotations

import re
import shlex


def q(text: str) -> str:
    """text as one shell word."""
    return shlex.quote(text)


def last_line(output: str, limit: int = 200) -> str:
    """The last non-blank line of a command's output (what usually says why it failed)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip()[:limit] if lines else "no output"


def tail(output: str, lines: int = 40) -> str:
    """The last lines of output, for error details."""
    return "\n".join(output.strip().splitlines()[-lines:])


def short(command: str, limit: int = 60) -> str:
    """A command flattened to one line and cut to limit characters, for messages."""
    flat = " ".join(command.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def sections(output: str) -> dict[str, str]:
    """The @@name@@ sections of a script's output (each printed after `printf '\\n@@%s@@\\n'`), by
    name: the lines between its marker and the next, joined as they came (byte for byte)."""
    found: dict[str, str] = {}
    name, lines = "", list[str]()
    for line in output.split("\n"):
        match = re.match(r"^@@(.+)@@$", line)
        if match:
            if name:
                found[name] = "\n".join(lines)
            name, lines = match.group(1), []
        else:
            lines.append(line)
    if name:
        found[name] = "\n".join(lines)
    return found
