"""Mail that comes back: which delivery a report is about, each attributed report, and pausing a reader for it."""

from __future__ import annotations

from datetime import datetime, timedelta

from newsletter.storage.database import Database, utcnow
from newsletter.storage.ledger import _ROWS, Delivery, _delivery

UNATTRIBUTED = "inbound.unattributed"  # meta key: reports that named no mail of ours, counted


class Bounces(Database):
    """bounces, and the readers' pause for mail that came back."""

    def delivery_by_message_id(self, message_id: str) -> Delivery | None:
        """The sent delivery whose Message-ID this is (angle brackets optional, as reports quote it)."""
        wanted = "<" + message_id.strip().strip("<>") + ">"
        row = self.db.execute(f"SELECT d.*, l.data AS layout_data FROM {_ROWS} WHERE d.message_id = ? AND d.status = 'sent'", (wanted,)).fetchone()
        return None if row is None else _delivery(row)

    def delivery(self, edition: str, subscriber: str) -> Delivery | None:
        row = self.db.execute(
            f"SELECT d.*, l.data AS layout_data FROM {_ROWS} WHERE d.edition = ? AND d.subscriber = ?", (edition, subscriber.lower())
        ).fetchone()
        return None if row is None else _delivery(row)

    def sent_editions(self) -> list[str]:
        """Every edition in the ledger, by name from the last (a VERP tag names one of them; `sent_to` says who was sent it).

        Read by skipping from one edition to the one before along the primary key, so that a bounce reads an index
        entry per edition rather than grouping every sent row (readers × editions)."""
        rows = self.db.execute(
            "WITH RECURSIVE e(edition) AS (SELECT MAX(edition) FROM deliveries "
            "UNION ALL SELECT (SELECT MAX(d.edition) FROM deliveries d WHERE d.edition < e.edition) FROM e WHERE e.edition IS NOT NULL) "
            "SELECT edition FROM e WHERE edition IS NOT NULL"
        )
        return [r[0] for r in rows]

    def sent_to(self, edition: str) -> list[str]:
        """The readers this edition was sent to."""
        return [r[0] for r in self.db.execute("SELECT subscriber FROM deliveries WHERE edition = ? AND status = 'sent'", (edition,))]

    def record_bounce(self, edition: str, subscriber: str, kind: str, detail: str, now: datetime | None = None) -> bool:
        """Keep one attributed report per delivery and kind; False when this one was already recorded (the same mail read twice)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO bounces (edition, subscriber, kind, detail, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (edition, subscriber.lower(), kind, detail, (now or utcnow()).isoformat()),
            )
            return cur.rowcount == 1

    def soft_bounces_in_a_row(self, subscriber: str, since: datetime) -> int:
        """How many of this reader's latest sent digests since `since` (and since they were last resumed) came back
        soft-bounced, counting back to the first that did not."""
        key = subscriber.lower()
        resumed = self.db.execute("SELECT resumed_at FROM readers WHERE subscriber = ?", (key,)).fetchone()
        start = max(since.isoformat(), (resumed["resumed_at"] or "") if resumed is not None else "")
        rows = self.db.execute(
            "SELECT d.edition, b.kind FROM deliveries d LEFT JOIN bounces b ON b.edition = d.edition AND b.subscriber = d.subscriber AND b.kind = 'soft_bounce' "
            "WHERE d.subscriber = ? AND d.status = 'sent' AND d.created >= ? ORDER BY d.created DESC",
            (key, start),
        )
        count = 0
        for row in rows:
            if row["kind"] is None:
                break
            count += 1
        return count

    def pause(self, subscriber: str, reason: str, now: datetime | None = None) -> bool:
        """Stop mailing a reader until `status --resume`, saying why; False if they were paused already (the first reason stays)."""
        key = subscriber.lower()
        with self.transaction() as db:
            row = db.execute("SELECT paused_at FROM readers WHERE subscriber = ?", (key,)).fetchone()
            if row is not None and row["paused_at"] is not None:
                return False
            db.execute(
                "INSERT INTO readers (subscriber, last_failure, paused_at, pause_reason) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(subscriber) DO UPDATE SET last_failure = excluded.last_failure, paused_at = excluded.paused_at, pause_reason = excluded.pause_reason",
                (key, reason, (now or utcnow()).isoformat(), reason),
            )
            return True

    def count_unattributed(self) -> int:
        """One more report that named no mail of ours; the new total."""
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = CAST(meta.value AS INTEGER) + 1 RETURNING value",
                (UNATTRIBUTED,),
            ).fetchone()
            return int(row[0])

    def inbound_counts(self, since: timedelta | None = None) -> dict[str, int]:
        """Attributed reports by kind (within `since`, if given), and the unattributed count, for `status`."""
        if since is None:
            rows = self.db.execute("SELECT kind, COUNT(*) FROM bounces GROUP BY kind")
        else:
            rows = self.db.execute("SELECT kind, COUNT(*) FROM bounces WHERE at >= ? GROUP BY kind", ((utcnow() - since).isoformat(),))
        counts = {r[0]: int(r[1]) for r in rows}
        counts["unattributed"] = int(self.meta(UNATTRIBUTED) or 0)
        return counts
