"""Sign-ups: unconfirmed subscriptions, rate-limit events, and who unsubscribed (subscribers.yaml holds the confirmed ones)."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any

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
                "INSERT INTO pending_subscriptions (email, nonce, topics, frequency, details, created) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(email) DO UPDATE SET nonce = excluded.nonce, topics = excluded.topics, frequency = excluded.frequency, "
                "details = excluded.details, created = excluded.created",
                (
                    pending.email.lower(),
                    pending.nonce,
                    ",".join(pending.choice.topics),
                    pending.choice.frequency,
                    json.dumps(_details(pending.choice), ensure_ascii=False),
                    pending.created.isoformat(),
                ),
            )

    def pending(self, email: str, nonce: str) -> Pending | None:
        """The unconfirmed subscription of this address with this nonce (a newer request replaced any other), however old."""
        row = self.db.execute("SELECT * FROM pending_subscriptions WHERE email = ? AND nonce = ?", (email.lower(), nonce)).fetchone()
        if row is None:
            return None
        choice = _choice(tuple(t for t in row["topics"].split(",") if t), row["frequency"], json.loads(row["details"]))
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
            db.exclusive("rate_events")  # counted and added by one at a time
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

    def unsubscribed(self) -> set[str]:
        """Everyone who unsubscribed and did not confirm a subscription since (lower-cased): never mailed, whatever the YAML says."""
        return {row[0] for row in self.db.execute("SELECT email FROM unsubscribed")}

    def has_left(self, email: str) -> bool:
        """Whether this reader unsubscribed (and did not confirm since): their links change nothing any more."""
        return self.db.execute("SELECT 1 FROM unsubscribed WHERE email = ?", (email.lower(),)).fetchone() is not None

    def unsubscribed_since(self, since: datetime) -> list[str]:
        """Who unsubscribed at or after `since`: their removal from subscribers.yaml is still being made sure of."""
        return [row[0] for row in self.db.execute("SELECT email FROM unsubscribed WHERE at >= ? ORDER BY at", (since.isoformat(),))]

    # who confirmed lately: subscribers.yaml must keep them even if a save made on an older copy dropped them.
    # Kept in `meta` under CONFIRMED (one key per address) rather than in a table of their own, so the schema stays as it is.

    def remember_confirmed(self, email: str, choice: Choice, now: datetime | None = None) -> None:
        """Note a confirmed subscription (replacing an earlier one of the address), with what they chose."""
        value = json.dumps({"topics": list(choice.topics), "frequency": choice.frequency, **_details(choice), "at": (now or utcnow()).isoformat()})
        self.set_meta(CONFIRMED + email.lower(), value)

    def confirmed_since(self, since: datetime) -> list[tuple[str, Choice]]:
        """Subscriptions confirmed at or after `since`, oldest first; older notes are dropped."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key >= ? AND key < ?", (CONFIRMED, CONFIRMED[:-1] + chr(ord(CONFIRMED[-1]) + 1))).fetchall()
        kept: list[tuple[str, str, Choice]] = []
        stale: list[str] = []
        for key, value in rows:
            note = json.loads(value)
            if note["at"] < since.isoformat():
                stale.append(key)
            else:
                kept.append((note["at"], key[len(CONFIRMED) :], _choice(tuple(note["topics"]), note["frequency"], note)))
        if stale:
            with self.transaction() as db:
                db.executemany("DELETE FROM meta WHERE key = ?", [(key,) for key in stale])
        return [(email, choice) for _, email, choice in sorted(kept, key=lambda k: k[0])]

    def forget_confirmed(self, email: str) -> None:
        """They unsubscribed: their confirmation is no longer to be kept in the file."""
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (CONFIRMED + email.lower(),))

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
                "INSERT INTO link_versions (subscriber, version) VALUES (?, 1) ON CONFLICT(subscriber) DO UPDATE SET version = link_versions.version + 1 RETURNING version",
                (email.lower(),),
            ).fetchone()
            return int(row[0])


CONFIRMED = "yaml.confirmed:"  # meta key prefix: a recent confirmation, by lower-cased address


def _details(choice: Choice) -> dict[str, Any]:
    """The sign-up's optional fields as JSON, only those given."""
    found: dict[str, Any] = {"name": choice.name, "keywords": list(choice.keywords), "timezone": choice.timezone}
    found["send_at"] = choice.send_at.strftime("%H:%M") if choice.send_at else None
    return {k: v for k, v in found.items() if v}


def _choice(topics: tuple[str, ...], frequency: str, details: dict[str, Any]) -> Choice:
    at = details.get("send_at")
    return Choice(
        topics, frequency, details.get("name", ""), tuple(details.get("keywords", ())), time.fromisoformat(at) if at else None, details.get("timezone")
    )
