"""Checking what a visitor typed: address, topics, frequency, preferences."""

from __future__ import annotations

import re
from datetime import time
from typing import Any

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidInput
from newsletter.model.addresses import LOCAL_PART_NOT_ASCII
from newsletter.model.config import FREQUENCIES, WEEKDAYS, Config
from newsletter.model.signup import Choice, Preferences
from newsletter.model.topics import keyword_error

MAX_KEYWORDS = 10
MAX_KEYWORD_CHARS = 60


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


def check_choice(config: Config, topics: list[str], frequency: str) -> Choice:
    """Only known topics and frequencies get through."""
    chosen = tuple(t for t in config.topics if t in set(topics))
    if not chosen:
        raise InvalidInput("Pick at least one topic.")
    if frequency not in FREQUENCIES:
        raise InvalidInput("Pick how often you want mail.")
    return Choice(chosen, frequency)


def check_preferences(config: Config, form: dict[str, Any]) -> Preferences:
    """Turn the preferences form into Preferences, refusing anything the config would not accept."""
    keywords = tuple(dict.fromkeys(k.strip() for k in str(form.get("keywords", "")).replace("\n", ",").split(",") if k.strip()))
    if len(keywords) > MAX_KEYWORDS:
        raise InvalidInput(f"At most {MAX_KEYWORDS} keywords, please.")
    for word in keywords:
        if len(word) > MAX_KEYWORD_CHARS or word.startswith("/") or any(ord(c) < 32 for c in word):
            raise InvalidInput(f"Keywords are words or short phrases of at most {MAX_KEYWORD_CHARS} characters (no regular expressions).")
        if keyword_error(word):
            raise InvalidInput("One of the keywords cannot be used: " + str(keyword_error(word)))
    topics = tuple(t for t in config.topics if t in set(form.get("topics", [])))
    if not topics and not keywords:
        raise InvalidInput("Pick at least one topic or keyword, or unsubscribe instead.")
    frequency = str(form.get("frequency", "daily"))
    day = str(form.get("day", "monday"))
    if frequency not in FREQUENCIES or day not in WEEKDAYS:
        raise InvalidInput("Pick how often you want mail.")
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(form.get("send_at", "")).strip())
    if not match:
        raise InvalidInput("The send time should look like 07:30.")
    zone = str(form.get("timezone", "")).strip()
    if zone not in timezones():
        raise InvalidInput("Pick a timezone from the list.")
    return Preferences(topics, keywords, frequency, day, time(int(match[1]), int(match[2])), zone, bool(form.get("paused")))


def timezones() -> list[str]:
    """IANA zone names to choose from, UTC first."""
    from zoneinfo import available_timezones

    return ["UTC"] + sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/", "posix/", "right/")))
