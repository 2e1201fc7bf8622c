"""Sign-ups: unconfirmed subscriptions, rate-limit events, and who unsubscribed (subscribers.yaml holds the confirmed ones)."""

from __future__ import annotations

from datetime import datetime, timedelta

from newsletter.model.signup import Choice, Pending
from newsletter.storage.database import Database, utcnow


class Signups(Database):
    """pending_subscriptions, rate_events and unsubscribed."""

    # pending subscriptions: the double opt-in's state; the signed link itself is subscriptions.optin's

    def add_pending(self, pending: Pending, expire_before: datetime) -> None:
        """Record (or replace) an unconfirmed subscription, and drop those created before `expire_before`."""
        with self.transaction() as db:
            db.execute("DELETE FROM pending_subscriptions WHERE created < ?", (expire_before.isoformat(),))
            db.execute(
                "INSERT INTO pending_subscriptions (email, nonce, topics, frequency, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(email) DO UPDATE SET nonce = excluded.nonce, topics = excluded.topics, frequency = excluded.frequency, created = excluded.created",
                (pending.email.lower(), pending.nonce, ",".join(pending.choice.topics), pending.choice.frequency, pending.created.isoformat()),
            )

    def pending(self, email: str, nonce: str) -> Pending | None:
        """The unconfirmed subscription of this address with this nonce (a newer request replaced any other), however old."""
        row = self.db.execute("SELECT * FROM pending_subscriptions WHERE email = ? AND nonce = ?", (email.lower(), nonce)).fetchone()
        if row is None:
            return None
        choice = Choice(tuple(t for t in row["topics"].split(",") if t), row["frequency"])
        return Pending(email, nonce, choice, datetime.fromisoformat(row["created"]))

    def take_pending(self, pending: Pending) -> bool:
        """Remove a pending subscription once; False if someone else confirmed it first."""
        with self.transaction() as db:
            return db.execute("DELETE FROM pending_subscriptions WHERE email = ? AND nonce = ?", (pending.email.lower(), pending.nonce)).rowcount == 1

    # rate limits

    def allow(self, kind: str, key: str, limit: int, window: timedelta, now: datetime | None = None) -> bool:
        """Count one event against (kind, key) unless `limit` were already counted within `window`."""
        now = now or utcnow()
        with self.transaction() as db:
            since = (now - window).isoformat()
            db.execute("DELETE FROM rate_events WHERE kind = ? AND at < ?", (kind, since))
            used = db.execute("SELECT COUNT(*) FROM rate_events WHERE kind = ? AND key = ? AND at >= ?", (kind, key.lower(), since)).fetchone()[0]
            if used >= limit:
                return False
            db.execute("INSERT INTO rate_events (kind, key, at) VALUES (?, ?, ?)", (kind, key.lower(), now.isoformat()))
            return True

    # who left

    def record_unsubscribed(self, email: str, now: datetime | None = None) -> None:
        """Remember who left and when, so an operator can see it was their own wish."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO unsubscribed (email, at) VALUES (?, ?) ON CONFLICT(email) DO UPDATE SET at = excluded.at",
                (email.lower(), (now or utcnow()).isoformat()),
            )

    def forget_unsubscribed(self, email: str) -> bool:
        """They subscribed again; True if they had unsubscribed before."""
        with self.transaction() as db:
            return db.execute("DELETE FROM unsubscribed WHERE email = ?", (email.lower(),)).rowcount == 1

    # link versions: a link carries its reader's version when mailed; a higher one here revokes it

    def link_version(self, email: str) -> int:
        row = self.db.execute("SELECT version FROM link_versions WHERE subscriber = ?", (email.lower(),)).fetchone()
        return int(row[0]) if row else 0

    def link_versions(self) -> dict[str, int]:
        """Every reader's link version that is not 0, by lower-cased address: read once per send."""
        return {r[0]: int(r[1]) for r in self.db.execute("SELECT subscriber, version FROM link_versions")}

    def revoke_links(self, email: str) -> int:
        """Void every link mailed to this reader so far (unsubscribe, preferences); the new version."""
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO link_versions (subscriber, version) VALUES (?, 1) ON CONFLICT(subscriber) DO UPDATE SET version = version + 1 RETURNING version",
                (email.lower(),),
            ).fetchone()
            return int(row[0])
