"""The daemon's schedule: the last slot handled per subscriber, so restarts neither skip nor double a send."""

from __future__ import annotations

from datetime import UTC, datetime

from newsletter.storage.database import Database, utcnow


class Schedule(Database):
    """schedule."""

    def handled_slots(self) -> dict[str, tuple[datetime, str]]:
        """Subscriber (lower-case) → (last slot handled, what happened: sent, nothing-new, missed...)."""
        return {r["subscriber"]: (datetime.fromisoformat(r["slot"]), r["outcome"]) for r in self.db.execute("SELECT * FROM schedule")}

    def record_slot(self, subscriber: str, slot: datetime, outcome: str, now: datetime | None = None) -> None:
        """Mark a slot handled; an older slot never overwrites a newer one."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO schedule (subscriber, slot, outcome, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(subscriber) DO UPDATE SET slot = excluded.slot, outcome = excluded.outcome, updated = excluded.updated "
                "WHERE excluded.slot > schedule.slot",
                (subscriber.lower(), slot.astimezone(UTC).isoformat(), outcome, (now or utcnow()).isoformat()),
            )
