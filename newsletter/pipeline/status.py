"""What `newsletter status` and `newsletter sources` report, gathered by aggregate queries and said once for the text and the JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from newsletter.model.config import Config, Subscriber
from newsletter.storage.ledger import Delivery, DeliveryCounts, PausedReader
from newsletter.storage.sources import SourceHealth
from newsletter.storage.store import Store

LISTED = 50  # unfinished or uncertain rows named one by one; the counts say how many more
STATUSES = ("pending", "sending", "sent", "deferred", "failed")
# meta keys: the daemon's last runs, and the last `newsletter fetch` / `send` typed by hand (or run by cron)
RUNS = {"daemon_fetch": "run.last_fetch", "daemon_send": "run.last_send", "manual_fetch": "manual.last_fetch", "manual_send": "manual.last_send"}


@dataclass(frozen=True)
class NextSend:
    """One subscriber's next slot: None when the reader paused themselves; `held` when refusals paused them."""

    subscriber: Subscriber
    upcoming: datetime | None
    held: bool
    last: tuple[datetime, str] | None


@dataclass(frozen=True)
class SlotGroup:
    """The readers whose next send is one instant, as `status` counts them on a list too long to name each."""

    upcoming: datetime
    readers: int
    held: int  # of them, paused after hard failures
    frequencies: dict[str, int]


@dataclass(frozen=True)
class Status:
    """Everything `newsletter status` prints."""

    database: str
    counts: DeliveryCounts
    unfinished: list[Delivery]  # newest first, at most LISTED
    resent: list[Delivery]  # sent again after an interruption, newest first, at most LISTED
    last_sent: list[Delivery]  # the five newest sent, oldest first
    held: list[PausedReader]  # paused after hard failures or bounces
    by_choice: list[str]  # paused by their own choice (`paused: true`)
    came_back: dict[str, int]
    next_sends: list[NextSend]
    sources: list[tuple[str, SourceHealth | None]]
    runs: dict[str, str | None]

    def slot_groups(self) -> list[SlotGroup]:
        """The next sends counted by instant, soonest first; readers paused by their own choice have none."""
        groups: dict[datetime, tuple[list[int], dict[str, int]]] = {}
        for n in self.next_sends:
            if n.upcoming is None:
                continue
            counts, frequencies = groups.setdefault(n.upcoming, ([0, 0], {}))
            counts[0] += 1
            counts[1] += n.held
            frequencies[n.subscriber.frequency] = frequencies.get(n.subscriber.frequency, 0) + 1
        return [SlotGroup(when, c[0], c[1], f) for when, (c, f) in sorted(groups.items())]

    def as_json(self) -> dict[str, Any]:
        """The stable keys the README documents; times are ISO 8601 in UTC."""
        return {
            "database": self.database,
            "deliveries": {s: self.counts.by_status.get(s, 0) for s in STATUSES},
            "uncertain": {"sending": self.counts.by_status.get("sending", 0), "resent": self.counts.resent, "given_up": self.counts.given_up},
            "unfinished": [_delivery(d) for d in self.unfinished],
            "paused_after_failures": [
                {"subscriber": p.subscriber, "since": iso(p.paused_at), "failures": p.failures, "reason": p.reason or p.last_failure} for p in self.held
            ],
            "paused_by_choice": self.by_choice,
            "came_back": self.came_back,
            "next_sends": [
                {
                    "subscriber": n.subscriber.email,
                    "frequency": n.subscriber.frequency,
                    "timezone": n.subscriber.timezone,
                    "next": iso(n.upcoming),
                    "paused": "by_choice" if n.upcoming is None else "after_failures" if n.held else None,
                    "last_slot": iso(n.last[0]) if n.last else None,
                    "last_outcome": n.last[1] if n.last else None,
                }
                for n in self.next_sends
            ],
            "sources": [
                {"name": name, "last_fetch": iso(h.last_attempt) if h else None, "ok": h.consecutive_failures == 0 if h else None} for name, h in self.sources
            ],
            "runs": self.runs,
        }


def gather(config: Config, store: Store, database: str, schedule: list[tuple[Subscriber, datetime | None, tuple[datetime, str] | None]]) -> Status:
    """The report from counts and short lists the store computes, never the whole ledger; `schedule` is scheduler.next_sends'."""
    held = store.paused()
    upcoming = [NextSend(s, nxt, s.email.lower() in held, last) for s, nxt, last in schedule]
    health = store.source_health()
    return Status(
        database=database,
        counts=store.delivery_counts(),
        unfinished=store.latest_deliveries(("pending", "sending", "deferred", "failed"), LISTED),
        resent=store.latest_deliveries(("sent",), LISTED, uncertain=True),
        last_sent=store.latest_deliveries(("sent",), 5)[::-1],
        held=list(held.values()),
        by_choice=[s.email for s in config.subscribers if s.paused],
        came_back=store.inbound_counts(),
        next_sends=upcoming,
        sources=[(s.name, health.get(s.name)) for s in config.sources],
        runs={name: store.meta(key) for name, key in RUNS.items()},
    )


def recovered(h: SourceHealth) -> bool:
    """The source's last error is old news: a fetch succeeded after it."""
    return h.last_error_at is not None and h.last_success is not None and h.last_success > h.last_error_at


def source_json(name: str, kind: str, h: SourceHealth | None) -> dict[str, Any]:
    """One source for `newsletter sources --json`."""
    return {
        "name": name,
        "type": kind,
        "state": "never" if h is None else "ok" if h.consecutive_failures == 0 else "failing",
        "consecutive_failures": h.consecutive_failures if h else 0,
        "last_attempt": iso(h.last_attempt) if h else None,
        "last_success": iso(h.last_success) if h else None,
        "papers_seen": h.papers_seen if h else 0,
        "last_warning": h.last_warning if h and h.consecutive_failures == 0 else None,
        "last_error": h.last_error if h else None,
        "last_error_at": iso(h.last_error_at) if h else None,
        "last_error_recovered": recovered(h) if h else False,
    }


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _delivery(d: Delivery) -> dict[str, Any]:
    return {
        "subscriber": d.subscriber,
        "edition": d.edition,
        "status": d.status,
        "attempts": d.attempts,
        "uncertain": d.uncertain,
        "last_reply": d.last_reply,
        "updated": iso(d.updated),
    }
