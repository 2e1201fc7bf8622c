"""Checking what a visitor typed: address, topics, frequency, preferences."""

from __future__ import annotations

import re
from datetime import time
from typing import Any

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidInput
from newsletter.model import zones
from newsletter.model.addresses import LOCAL_PART_NOT_ASCII
from newsletter.model.config import FREQUENCIES, WEEKDAYS, Config
from newsletter.model.signup import Choice, Preferences
from newsletter.model.topics import keyword_error

MAX_KEYWORDS = 10
MAX_KEYWORD_CHARS = 60
MAX_NAME_CHARS = 100


# input checks


def normalise_email(raw: str) -> str:
    """A syntactically valid address (no DNS lookups), domain lowercased and in IDNA (punycode) form, so
    `user@bücher.de` becomes `user@xn--bcher-kva.de`; raises InvalidInput, also for a non-ASCII local part."""
    raw = raw.strip()
    local = raw.rpartition("@")[0]
    if local and not local.isascii():
        raise InvalidInput(f"{raw} {LOCAL_PART_NOT_ASCII}.")
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"That does not look like an email address: {exc}") from exc
    if checked.ascii_email is None:  # allow_smtputf8=False makes this unreachable; kept as the guarantee callers rely on
        raise InvalidInput(f"{raw} {LOCAL_PART_NOT_ASCII}.")
    return checked.ascii_email


def check_choice(config: Config, topics: list[str], frequency: str, *, name: str = "", keywords: str = "", send_at: str = "", timezone: str = "") -> Choice:
    """Only known topics and frequencies get through; the optional fields (empty: the installation's default) are checked like the preferences'."""
    chosen = tuple(t for t in config.topics if t in set(topics))
    if not chosen:
        raise InvalidInput("Pick at least one topic.")
    if frequency not in FREQUENCIES:
        raise InvalidInput("Pick how often you want mail.")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"A name is at most {MAX_NAME_CHARS} characters on one line.")
    at = check_send_at(send_at) if send_at.strip() else None
    zone = check_timezone(timezone) if timezone.strip() else None
    return Choice(chosen, frequency, name, check_keywords(keywords), at, zone)


def check_keywords(raw: str) -> tuple[str, ...]:
    """Comma-separated keywords (or one a line) as a tuple without repeats; an error names the keyword at fault."""
    keywords = tuple(dict.fromkeys(k.strip() for k in raw.replace("\n", ",").split(",") if k.strip()))
    if len(keywords) > MAX_KEYWORDS:
        raise InvalidInput(f"At most {MAX_KEYWORDS} keywords, please.")
    for word in keywords:
        if len(word) > MAX_KEYWORD_CHARS or word.startswith("/") or any(ord(c) < 32 for c in word):
            raise InvalidInput(
                f"The keyword {word!r} cannot be used: keywords are words or short phrases of at most {MAX_KEYWORD_CHARS} characters (no regular expressions)."
            )
        if problem := keyword_error(word):
            raise InvalidInput(f"The keyword {word!r} cannot be used: {problem}")
    return keywords


def check_send_at(raw: str) -> time:
    """A 24-hour HH:MM time."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", raw.strip())
    if not match:
        raise InvalidInput(f"The send time {raw.strip()!r} should look like 07:30 (24-hour).")
    return time(int(match[1]), int(match[2]))


def check_timezone(raw: str) -> str:
    """An IANA zone name, with the closest one suggested for a misspelling."""
    zone = raw.strip()
    if not zones.is_zone(zone):
        hint = zones.closest(zone)
        raise InvalidInput(f"unknown timezone '{zone}' ({f'did you mean {hint!r}?' if hint else 'use an IANA name such as Europe/London'})")
    return zone


def check_preferences(config: Config, form: dict[str, Any]) -> Preferences:
    """Turn the preferences form into Preferences, refusing anything the config would not accept."""
    keywords = check_keywords(str(form.get("keywords", "")))
    topics = tuple(t for t in config.topics if t in set(form.get("topics", [])))
    if not topics and not keywords:
        raise InvalidInput("Pick at least one topic or keyword, or unsubscribe instead.")
    frequency = str(form.get("frequency", "daily"))
    day = str(form.get("day", "monday"))
    if frequency not in FREQUENCIES or day not in WEEKDAYS:
        raise InvalidInput("Pick how often you want mail.")
    at = check_send_at(str(form.get("send_at", "")))
    zone = str(form.get("timezone", "")).strip()
    if not zones.is_zone(zone):
        raise InvalidInput("Pick a timezone from the list.")
    return Preferences(topics, keywords, frequency, day, at, zone, bool(form.get("paused")))


def timezones(current: str | None = None) -> list[str]:
    """The zones a form offers, common ones first; a reader's own zone is kept in the list even when it is an old alias."""
    offered = list(zones.choices())
    return offered if current is None or current in offered else [current, *offered]
