"""When each subscriber's digest is due, in their timezone, across daylight-saving changes and downtime."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from newsletter.model.config import WEEKDAYS, Config, Subscriber
from newsletter.storage.store import Store

SCAN_DAYS = 8  # a weekly subscriber has a slot within any 8 consecutive local days


# slot arithmetic (pure; worked out once per schedule, which a long list's readers share by the thousand)


class Schedule(NamedTuple):
    """What a subscriber's slots depend on: a tick at 100,000 readers asks about a few hundred of these."""

    frequency: str
    day: str
    timezone: str
    send_at: time

    @classmethod
    def of(cls, subscriber: Subscriber) -> Schedule:
        return cls(subscriber.frequency, subscriber.day, subscriber.timezone, subscriber.send_at)


def slot_on(subscriber: Subscriber, day: date) -> datetime | None:
    """The UTC instant of the subscriber's send on this local date, or None when their frequency skips the day.

    A local time that does not exist (clocks spring forward over it) sends at the first instant after the gap;
    a local time that happens twice (clocks fall back) sends once, at its first occurrence.
    """
    return _slot_on(Schedule.of(subscriber), day)


@functools.lru_cache(maxsize=16384)
def _slot_on(schedule: Schedule, day: date) -> datetime | None:
    weekday = day.weekday()
    if schedule.frequency == "weekdays" and weekday >= 5:
        return None
    if schedule.frequency == "weekly" and WEEKDAYS[weekday] != schedule.day:
        return None
    zone = ZoneInfo(schedule.timezone)
    wall = datetime.combine(day, schedule.send_at)
    while not _exists(wall, zone):
        wall += timedelta(minutes=1)
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether this wall-clock time happens at all in the zone (it does not inside a spring-forward gap)."""
    there = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
    return there.replace(tzinfo=None) == wall


def _local_days(schedule: Schedule, around: datetime, before: int, after: int) -> Iterable[date]:
    today = around.astimezone(ZoneInfo(schedule.timezone)).date()
    return (today + timedelta(days=n) for n in range(-before, after + 1))


def next_slot(subscriber: Subscriber, after: datetime) -> datetime:
    """The first slot strictly after `after`."""
    slot = _next_slot(Schedule.of(subscriber), after)
    if slot is None:
        raise AssertionError(f"no slot within {SCAN_DAYS} days for {subscriber.email}")  # every frequency has one
    return slot


@functools.lru_cache(maxsize=4096)
def _next_slot(schedule: Schedule, after: datetime) -> datetime | None:
    return next((slot for day in _local_days(schedule, after, 1, SCAN_DAYS) if (slot := _slot_on(schedule, day)) is not None and slot > after), None)


def latest_slot(subscriber: Subscriber, now: datetime) -> datetime | None:
    """The most recent slot at or before `now` (within the last SCAN_DAYS days)."""
    return _latest_slot(Schedule.of(subscriber), now)


@functools.lru_cache(maxsize=4096)
def _latest_slot(schedule: Schedule, now: datetime) -> datetime | None:
    slots = [s for day in _local_days(schedule, now, SCAN_DAYS, 1) if (s := _slot_on(schedule, day)) is not None and s <= now]
    return max(slots, default=None)


@dataclass(frozen=True)
class Decision:
    """What the tick does about one subscriber now: send the slot's digest, or record it as missed."""

    subscriber: Subscriber
    slot: datetime
    action: str  # "send" | "missed"


def decide(subscriber: Subscriber, now: datetime, handled: datetime | None, grace: timedelta, missed: bool = False) -> Decision | None:
    """Due when the latest slot is not handled yet; older unhandled slots collapse into it (one catch-up, never a burst).

    A slot that passed longer ago than `grace` (the daemon was down) is only recorded as missed: its papers are not
    lost, they wait for the next slot, since a digest holds everything not yet sent. A reader who moves their
    send time later on a day their digest already went out (`handled` that day, and not `missed`) gets the next
    one on the next day: one digest a local day at most.
    """
    if subscriber.paused:
        return None
    slot = latest_slot(subscriber, now)
    if slot is None or (handled is not None and slot <= handled):
        return None
    if handled is not None and not missed and _local_day(handled, subscriber) == _local_day(slot, subscriber):
        return None
    return Decision(subscriber, slot, "send" if now - slot <= grace else "missed")


def due_today(subscriber: Subscriber, now: datetime, handled: datetime | None) -> datetime | None:
    """For `newsletter send` (run by cron, whose line sets the hour): today's slot when today, in the reader's zone,
    is one of their days (any day, Monday to Friday, or their weekday) and no digest went to them earlier that
    local day; else None. `handled`: their last slot handled, by `send` or the daemon."""
    if subscriber.paused:
        return None
    today = _local_day(now, subscriber)
    slot = slot_on(subscriber, today)
    if slot is None or (handled is not None and _local_day(handled, subscriber) >= today):
        return None
    return slot


def _local_day(instant: datetime, subscriber: Subscriber) -> date:
    return instant.astimezone(ZoneInfo(subscriber.timezone)).date()


def edition_for(slot: datetime) -> str:
    """The ledger's edition name for a slot: one row per subscriber and slot, so a restart never sends the slot twice."""
    return f"slot-{slot.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def next_sends(config: Config, store: Store, now: datetime) -> list[tuple[Subscriber, datetime | None, tuple[datetime, str] | None]]:
    """For `newsletter status`: each subscriber's next send (None when paused) and last handled slot."""
    handled = store.handled_slots()
    return [(s, None if s.paused else next_slot(s, now), handled.get(s.email.lower())) for s in config.subscribers]
