"""Commands by mail: `subscribe [topics…]`, `unsubscribe`, `topics`, `help`, in the Subject or the first body line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage

COMMANDS = ("subscribe", "unsubscribe", "topics", "help")


@dataclass(frozen=True)
class Command:
    """What a mail asks for; `name` is None when neither the subject nor the first line is a command."""

    name: str | None
    args: tuple[str, ...] = ()


def command(msg: EmailMessage) -> Command:
    """The command in the Subject (a reply's `Re:` dropped) or else the first non-empty body line, in any case."""
    subject = re.sub(r"^\s*((re|aw|fwd?|sv)\s*:\s*)+", "", str(msg.get("Subject", "")), flags=re.I)
    for line in (subject, _first_line(msg)):
        words = [w for w in re.split(r"[\s,;]+", line.strip()) if w]
        if words and words[0].lower() in COMMANDS:
            return Command(words[0].lower(), tuple(w.lower() for w in words[1:9]))
    return Command(None)


def _first_line(msg: EmailMessage) -> str:
    try:
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
    except (KeyError, LookupError, ValueError):  # an unknown charset or a broken part: no command in it
        return ""
    return next((line for line in str(text).splitlines() if line.strip()), "")
