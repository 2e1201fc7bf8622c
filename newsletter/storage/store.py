"""SQLite state: papers seen, per-source health and HTTP validators, and the per-subscriber delivery ledger."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from newsletter.model.paper import Paper, merge
from newsletter.storage.migrations import migrate


class Added(NamedTuple):
    """What one source's papers did to the store."""

    new: int  # papers this installation had not seen
    fresh: int  # papers their source had not brought before (a paper first seen from another source counts): "papers seen"


@dataclass(frozen=True)
class SourceHealth:
    """What `newsletter sources` prints for one source."""

    name: str
    last_attempt: datetime | None
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    papers_seen: int  # papers it brought that it had not brought before (see Added.fresh)


@dataclass(frozen=True)
class PausedReader:
    """A subscriber whose mail the servers kept refusing outright; nothing is sent until they are resumed."""

    subscriber: str
    failures: int
    last_failure: str | None
    paused_at: datetime


@dataclass(frozen=True)
class StoredPaper:
    """A paper with when this installation first saw it: age counts from there, not from publication."""

    paper: Paper
    first_seen: datetime


def utcnow() -> datetime:
    """The one clock the store uses, timezone-aware."""
    return datetime.now(UTC)


class Store:
    """One SQLite file; each method is one short transaction so a crash never leaves half a change."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            migrate(self.db, str(self.path))
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE so concurrent writers queue instead of failing half-way; inside another transaction, join it."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # papers

    def add_papers(self, papers: Iterable[Paper], now: datetime | None = None, *, replace: bool = False) -> Added:
        """Insert or merge papers; counts what was new to this installation, and to the sources that brought them.

        With `replace` (the source asks for new versions), a higher arXiv version than the stored one
        marks the paper revised, so it is sent again, once, to whoever was sent an older version.
        """
        now_s = (now or utcnow()).isoformat()
        new = fresh = 0
        with self.transaction() as db:
            for paper in papers:
                row = db.execute("SELECT data, revised FROM papers WHERE id = ?", (paper.id,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO papers (id, data, first_seen, updated) VALUES (?, ?, ?, ?)", (paper.id, _dumps(paper), now_s, now_s))
                    new += 1
                    fresh += 1
                else:
                    old = Paper.from_dict(json.loads(row["data"]))
                    fresh += not set(paper.sources) <= set(old.sources)
                    revised = now_s if replace and (paper.version or 1) > (old.version or 1) else row["revised"]
                    db.execute("UPDATE papers SET data = ?, updated = ?, revised = ? WHERE id = ?", (_dumps(merge(old, paper)), now_s, revised, paper.id))
        return Added(new, fresh)

    def paper(self, paper_id: str) -> Paper | None:
        row = self.db.execute("SELECT data FROM papers WHERE id = ?", (paper_id,)).fetchone()
        return Paper.from_dict(json.loads(row["data"])) if row else None

    def papers_seen_since(self, since: datetime) -> list[StoredPaper]:
        """Papers first fetched (or revised) at or after `since`, newest first."""
        rows = self.db.execute("SELECT data, first_seen FROM papers WHERE first_seen >= ?1 OR revised >= ?1 ORDER BY first_seen DESC, id", (since.isoformat(),))
        return [StoredPaper(Paper.from_dict(json.loads(r["data"])), datetime.fromisoformat(r["first_seen"])) for r in rows]

    def papers_by_id(self, ids: Iterable[str]) -> list[Paper]:
        """Papers in the order asked, skipping unknown ids."""
        out = []
        for paper_id in ids:
            paper = self.paper(paper_id)
            if paper is not None:
                out.append(paper)
        return out

    # sources

    def validators(self, url: str) -> tuple[str | None, str | None]:
        """ETag and Last-Modified from the last 200 for this URL."""
        row = self.db.execute("SELECT etag, last_modified FROM http_cache WHERE url = ?", (url,)).fetchone()
        return (row["etag"], row["last_modified"]) if row else (None, None)

    def save_validators(self, url: str, etag: str | None, last_modified: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO http_cache (url, etag, last_modified) VALUES (?, ?, ?) "
                "ON CONFLICT(url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified",
                (url, etag, last_modified),
            )

    def source_succeeded(self, name: str, papers: int, now: datetime | None = None) -> None:
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sources (name, last_attempt, last_success, consecutive_failures, papers_seen) VALUES (?, ?, ?, 0, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_attempt = excluded.last_attempt, last_success = excluded.last_success, "
                "consecutive_failures = 0, papers_seen = papers_seen + excluded.papers_seen",
                (name, now_s, now_s, papers),
            )

    def source_failed(self, name: str, error: str, now: datetime | None = None) -> None:
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sources (name, last_attempt, last_error, last_error_at, consecutive_failures) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT(name) DO UPDATE SET last_attempt = excluded.last_attempt, last_error = excluded.last_error, "
                "last_error_at = excluded.last_error_at, consecutive_failures = consecutive_failures + 1",
                (name, now_s, error, now_s),
            )

    def source_health(self) -> dict[str, SourceHealth]:
        rows = self.db.execute("SELECT * FROM sources ORDER BY name")
        return {
            r["name"]: SourceHealth(
                name=r["name"],
                last_attempt=_dt(r["last_attempt"]),
                last_success=_dt(r["last_success"]),
                last_error=r["last_error"],
                last_error_at=_dt(r["last_error_at"]),
                consecutive_failures=r["consecutive_failures"],
                papers_seen=r["papers_seen"],
            )
            for r in rows
        }

    # delivery ledger

    def sent_paper_ids(self, subscriber: str) -> set[str]:
        """Every paper this subscriber has been mailed (in its latest version), or has waiting in an unfinished delivery."""
        key = subscriber.lower()
        sent = {
            r[0]
            for r in self.db.execute(
                "SELECT s.paper_id FROM sent s LEFT JOIN papers p ON p.id = s.paper_id WHERE s.subscriber = ? AND (p.revised IS NULL OR p.revised <= s.sent_at)",
                (key,),
            )
        }
        for row in self.db.execute("SELECT paper_ids FROM deliveries WHERE subscriber = ? AND status IN ('pending', 'sending', 'deferred')", (key,)):
            sent.update(json.loads(row[0]))
        return sent

    def plan_delivery(self, edition: str, subscriber: str, paper_ids: list[str], now: datetime | None = None) -> bool:
        """Record a digest to send; False when this edition already has a row for the subscriber."""
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO deliveries (edition, subscriber, status, paper_ids, created, updated) VALUES (?, ?, 'pending', ?, ?, ?)",
                (edition, subscriber.lower(), json.dumps(paper_ids), now_s, now_s),
            )
            return cur.rowcount == 1

    def claim(self, edition: str, subscriber: str, now: datetime | None = None) -> int | None:
        """Atomically move a pending/deferred row to sending; the attempt number, or None if the row is not claimable."""
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            row = db.execute(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, updated = ? "
                "WHERE edition = ? AND subscriber = ? AND status IN ('pending', 'deferred') RETURNING attempts",
                (now_s, edition, subscriber.lower()),
            ).fetchone()
            return None if row is None else int(row[0])

    def mark_sent(self, edition: str, subscriber: str, message_id: str, reply: str, now: datetime | None = None) -> None:
        """The server accepted the message: the row, the per-paper sent marks and the reader's failure count change together."""
        now_s = (now or utcnow()).isoformat()
        key = subscriber.lower()
        with self.transaction() as db:
            row = db.execute("SELECT paper_ids FROM deliveries WHERE edition = ? AND subscriber = ?", (edition, key)).fetchone()
            db.execute(
                "UPDATE deliveries SET status = 'sent', message_id = ?, last_reply = ?, updated = ? WHERE edition = ? AND subscriber = ?",
                (message_id, reply, now_s, edition, key),
            )
            _insert_sent(db, key, json.loads(row[0]), edition, now_s)
            db.execute("UPDATE readers SET consecutive_failures = 0 WHERE subscriber = ? AND consecutive_failures > 0", (key,))

    def record_sent(self, subscriber: str, paper_ids: list[str], edition: str, now: datetime | None = None) -> None:
        """Papers mailed outside the ledger (the welcome mail's taste of the digest), so no digest repeats them."""
        with self.transaction() as db:
            _insert_sent(db, subscriber.lower(), paper_ids, edition, (now or utcnow()).isoformat())

    def mark_deferred(self, edition: str, subscriber: str, reply: str, *, counted: bool = True, now: datetime | None = None) -> None:
        """A temporary refusal: try again later. `counted=False` when the server, not this reader, was the problem."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'deferred', last_reply = ?, updated = ?, attempts = attempts - ? WHERE edition = ? AND subscriber = ?",
                (reply, (now or utcnow()).isoformat(), 0 if counted else 1, edition, subscriber.lower()),
            )

    def mark_failed(self, edition: str, subscriber: str, reply: str, *, hard: bool, pause_after: int, now: datetime | None = None) -> bool:
        """Give up on a row. A hard refusal (5xx) also counts against the reader; True when that pauses them."""
        now_s = (now or utcnow()).isoformat()
        key = subscriber.lower()
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'failed', last_reply = ?, updated = ? WHERE edition = ? AND subscriber = ?", (reply, now_s, edition, key)
            )
            if not hard:
                return False
            row = db.execute(
                "INSERT INTO readers (subscriber, consecutive_failures, last_failure) VALUES (?, 1, ?) "
                "ON CONFLICT(subscriber) DO UPDATE SET consecutive_failures = consecutive_failures + 1, last_failure = excluded.last_failure "
                "RETURNING consecutive_failures, paused_at",
                (key, reply),
            ).fetchone()
            if row["consecutive_failures"] >= pause_after and row["paused_at"] is None:
                db.execute("UPDATE readers SET paused_at = ? WHERE subscriber = ?", (now_s, key))
                return True
            return False

    def paused(self) -> dict[str, PausedReader]:
        """Subscribers paused after consecutive hard failures, by lower-cased address."""
        rows = self.db.execute("SELECT * FROM readers WHERE paused_at IS NOT NULL ORDER BY subscriber")
        return {
            r["subscriber"]: PausedReader(r["subscriber"], r["consecutive_failures"], r["last_failure"], datetime.fromisoformat(r["paused_at"])) for r in rows
        }

    def resume(self, subscriber: str) -> bool:
        """Lift a pause (after the address was fixed); False if the subscriber was not paused."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE readers SET paused_at = NULL, consecutive_failures = 0 WHERE subscriber = ? AND paused_at IS NOT NULL", (subscriber.lower(),)
            )
            return cur.rowcount == 1

    def recover_interrupted(self, limit: int = 3, now: datetime | None = None) -> int:
        """Rows left in 'sending' by a crash may or may not be at the server: each is sent again once, and counted as uncertain.

        A row interrupted `limit` times is failed rather than risk a crash loop mailing one reader over and over.
        Returns how many rows go out again.
        """
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'failed', uncertain = uncertain + 1, updated = ?, "
                "last_reply = 'interrupted while sending ' || (uncertain + 1) || ' times; not retried' WHERE status = 'sending' AND uncertain + 1 >= ?",
                (now_s, limit),
            )
            return db.execute(
                "UPDATE deliveries SET status = 'deferred', uncertain = uncertain + 1, updated = ?, "
                "last_reply = 'interrupted while sending (the server may have it); sending once more' WHERE status = 'sending'",
                (now_s,),
            ).rowcount

    def deliveries(self, statuses: Iterable[str] | None = None) -> list[sqlite3.Row]:
        """Ledger rows, oldest first, optionally only some statuses."""
        if statuses is None:
            return list(self.db.execute("SELECT * FROM deliveries ORDER BY created, subscriber"))
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        return list(self.db.execute(f"SELECT * FROM deliveries WHERE status IN ({marks}) ORDER BY created, subscriber", wanted))

    # the daemon's schedule: the last slot handled per subscriber, so restarts neither skip nor double a send

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

    # installation-wide values

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def _dumps(paper: Paper) -> str:
    return json.dumps(paper.to_dict(), ensure_ascii=False, separators=(",", ":"))


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _insert_sent(db: sqlite3.Connection, subscriber: str, paper_ids: list[str], edition: str, when: str) -> None:
    db.executemany(
        "INSERT INTO sent (subscriber, paper_id, edition, sent_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(subscriber, paper_id) DO UPDATE SET edition = excluded.edition, sent_at = excluded.sent_at",  # a revised paper sent again
        [(subscriber, pid, edition, when) for pid in paper_ids],
    )
