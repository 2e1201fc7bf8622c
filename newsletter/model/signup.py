"""What a visitor asks for when subscribing or changing preferences, and an unconfirmed subscription."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from newsletter.model.config import Subscriber


@dataclass(frozen=True)
class Choice:
    """What someone picked on the subscribe form, kept with the pending subscription until they confirm."""

    topics: tuple[str, ...]
    frequency: str = "daily"
    name: str = ""
    keywords: tuple[str, ...] = ()
    send_at: time | None = None  # None: the installation's settings.send_at
    timezone: str | None = None  # None: the installation's settings.timezone


@dataclass(frozen=True)
class Preferences:
    """Everything a subscriber may change about themselves from the preferences page."""

    topics: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    frequency: str = "daily"
    day: str = "monday"
    send_at: time = time(7, 0)
    timezone: str = "UTC"
    paused: bool = False

    @classmethod
    def of(cls, s: Subscriber) -> Preferences:
        return cls(s.topics, s.keywords, s.frequency, s.day, s.send_at, s.timezone, s.paused)


@dataclass(frozen=True)
class Rules:
    """A subscriber's own rules, as a feedback link adds them and the preferences page removes them one by one."""

    topics: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()  # the `author:` ones follow authors
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pending:
    """An unconfirmed subscription."""

    email: str
    nonce: str
    choice: Choice
    created: datetime
