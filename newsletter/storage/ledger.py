"""The delivery ledger: a row per (edition, subscriber) pointing at the edition's layout (stored once), the papers
sent to each reader, and readers paused after hard failures."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from newsletter.model.digest import Layout
from newsletter.storage.connection import Connection, lock_key
from newsletter.storage.database import Database, utcnow

UNCERTAIN_LIMIT = 2  # a row the server may already have goes out once more; found uncertain again, it is failed, its papers kept as offered


@dataclass(frozen=True)
class Delivery:
    """One ledger row: one edition's digest for one subscriber, and how far it got."""

    edition: str
    subscriber: str  # lower-cased address
    status: str  # pending, sending, sent, deferred, failed
    paper_ids: tuple[str, ...]  # every paper of the edition: the layout's, or for a row from before layouts its own list
    layout: Layout | None  # None for a row from before layouts: it has no edition page
    attempts: int
    uncertain: int  # times it was found interrupted in `sending` and sent again
    last_reply: str | None
    message_id: str | None
    created: datetime
    updated: datetime


@dataclass(frozen=True)
class Edition:
    """One edition a reader was mailed (or may have been): what its page and the reader's feed show."""

    edition: str
    layout: Layout
    status: str
    updated: datetime


@dataclass(frozen=True)
class PausedReader:
    """A subscriber whose mail the servers kept refusing outright; nothing is sent until they are resumed."""

    subscriber: str
    failures: int
    last_failure: str | None
    paused_at: datetime
    reason: str | None = None  # why, when mail that came back paused them (a hard bounce, soft bounces in a row)


@dataclass(frozen=True)
class DeliveryCounts:
    """The ledger in numbers, counted in SQL for `newsletter status`: rows per status, and those sent again after an interruption."""

    by_status: dict[str, int]
    resent: int  # rows found interrupted in `sending` at least once and sent again (a reader may have two copies)
    given_up: int  # of those, the rows failed rather than sent once more


class Ledger(Database):
    """deliveries, layouts, sent_lists and readers."""

    def delivery_counts(self) -> DeliveryCounts:
        """Rows per status and the uncertain ones, by one GROUP BY rather than reading the ledger."""
        rows = self.db.execute("SELECT status, COUNT(*), SUM(CASE WHEN uncertain > 0 THEN 1 ELSE 0 END) FROM deliveries GROUP BY status").fetchall()
        by_status = {r[0]: int(r[1]) for r in rows}
        resent = sum(int(r[2] or 0) for r in rows)
        given_up = sum(int(r[2] or 0) for r in rows if r[0] == "failed")
        return DeliveryCounts(by_status, resent, given_up)

    def latest_deliveries(self, statuses: Iterable[str], limit: int, *, uncertain: bool = False) -> list[Delivery]:
        """The newest `limit` rows in these statuses (only those sent again after an interruption, with `uncertain`), newest first."""
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        rows = self.db.execute(
            f"SELECT d.*, l.data AS layout_data FROM {_ROWS} WHERE d.status IN ({marks}){' AND d.uncertain > 0' if uncertain else ''} "
            "ORDER BY d.updated DESC, d.edition DESC, d.subscriber LIMIT ?",
            [*wanted, limit],
        )
        return [_delivery(r) for r in rows]

    def sent_paper_ids(self, subscriber: str, since: datetime | None = None) -> set[str]:
        """Every paper this subscriber has been mailed (in its latest version), or has waiting in an unfinished delivery.

        Read from the layouts of their deliveries: those sent, and those failed after the server may have had them
        (`uncertain`: the reader may have them), each in the version current when it went out; and any not finished.
        With `since`, mail sent before it is not read: it holds only papers first seen before then, which are
        candidates again only when revised since, and so news again to whoever got them (the planner's horizon).
        """
        key = subscriber.lower()
        after = since.isoformat() if since else ""
        rows = self.db.execute(
            f"SELECT d.updated, d.status, {_IDS} FROM {_ROWS} WHERE d.subscriber = ?1 AND d.status IN ('pending', 'sending', 'deferred') "
            f"UNION ALL SELECT d.updated, d.status, {_IDS} FROM {_ROWS} WHERE d.subscriber = ?1 AND d.status IN ('sent', 'failed') AND d.updated >= ?2 "
            "AND (d.status = 'sent' OR d.uncertain > 0) "
            "UNION ALL SELECT sent_at, 'sent', paper_ids, NULL FROM sent_lists WHERE subscriber = ?1 AND sent_at >= ?2",
            (key, after),
        ).fetchall()
        if not rows:
            return set()
        revised = {r[0]: r[1] for r in self.db.execute("SELECT id, revised FROM papers WHERE revised >= ?", (after,))}
        sent: set[str] = set()
        for row in rows:
            if row["status"] != "sent" and row["status"] != "failed":  # waiting: not to be offered again in any version
                sent.update(_ids(row))
            else:
                sent.update(pid for pid in _ids(row) if pid not in revised or revised[pid] <= row["updated"])
        return sent

    def sent_paper_ids_by_reader(self, since: datetime | None = None) -> dict[str, frozenset[str]]:
        """`sent_paper_ids` of every subscriber with a row, by lower-cased address, in three range reads rather than a query per reader.

        Each distinct layout is read and parsed once, each distinct (papers, revisions after it) once, and readers
        sent the same mails share one set: at 100,000 readers a send reads what it needs in about as many rows as
        there are deliveries within the horizon, with no per-reader round trip.
        """
        after = since.isoformat() if since else ""
        rows = self.db.execute(
            "SELECT subscriber, updated, status, paper_ids, layout FROM deliveries WHERE status IN ('pending', 'sending', 'deferred') "
            "UNION ALL SELECT subscriber, updated, status, paper_ids, layout FROM deliveries WHERE status IN ('sent', 'failed') AND updated >= ?1 "
            "AND (status = 'sent' OR uncertain > 0) "
            "UNION ALL SELECT subscriber, sent_at, 'sent', paper_ids, NULL FROM sent_lists WHERE sent_at >= ?1",
            (after,),
        ).fetchall()
        if not rows:
            return {}
        revised = {r[0]: r[1] for r in self.db.execute("SELECT id, revised FROM papers WHERE revised >= ?", (after,))}
        keys = list({r[4] for r in rows if r[4] is not None})
        layouts: dict[str, list[str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            found = self.db.execute(f"SELECT key, data FROM layouts WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            layouts.update((r[0], Layout.stored_ids(json.loads(r[1]))) for r in found)
        bases: dict[tuple[str, str | None], tuple[frozenset[str], tuple[str, ...]]] = {}  # a row's papers, and those of them revised since
        kept: dict[tuple[frozenset[str], frozenset[str]], frozenset[str]] = {}  # a row's papers less those revised after it went out
        mine: dict[str, set[frozenset[str]]] = {}
        for subscriber, updated, status, paper_ids, layout in rows:
            base = bases.get((paper_ids, layout))
            if base is None:
                ids = frozenset(json.loads(paper_ids) + layouts.get(layout, []) if layout is not None else json.loads(paper_ids))
                base = bases[(paper_ids, layout)] = (ids, tuple(pid for pid in ids if pid in revised))
            ids, changed = base
            if changed and (status == "sent" or status == "failed"):  # waiting rows hold every version; mail sent holds the one it had
                newer = frozenset(pid for pid in changed if revised[pid] > updated)
                if newer:
                    ids = kept.setdefault((ids, newer), ids - newer)
            mine.setdefault(subscriber, set()).add(ids)
        unions: dict[frozenset[frozenset[str]], frozenset[str]] = {}
        out: dict[str, frozenset[str]] = {}
        for subscriber, sets in mine.items():
            key = frozenset(sets)
            union = unions.get(key)
            if union is None:
                union = unions[key] = next(iter(sets)) if len(sets) == 1 else frozenset().union(*sets)
            out[subscriber] = union
        return out

    def plan_delivery(self, edition: str, subscriber: str, layout: Layout, now: datetime | None = None) -> bool:
        """Record a digest to send, its layout stored once for every reader who gets it; False when this edition already has a row for the subscriber."""
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            _store_layout(db, layout, now_s)
            cur = db.execute(
                "INSERT INTO deliveries (edition, subscriber, status, paper_ids, layout, created, updated) VALUES (?, ?, 'pending', '[]', ?, ?, ?) ON CONFLICT DO NOTHING",
                (edition, subscriber.lower(), layout.key, now_s, now_s),
            )
            return cur.rowcount == 1

    def attach_layout(self, edition: str, subscriber: str, layout: Layout, now: datetime | None = None) -> None:
        """Give a row from before layouts, resent now, the layout of the mail it goes out as (its own paper list stays counted)."""
        with self.transaction() as db:
            _store_layout(db, layout, (now or utcnow()).isoformat())
            db.execute("UPDATE deliveries SET layout = ? WHERE edition = ? AND subscriber = ? AND layout IS NULL", (layout.key, edition, subscriber.lower()))

    def layout(self, subscriber: str, key: str) -> Layout | None:
        """The layout of an edition this subscriber has a row for; None for anyone else's (or no such edition)."""
        row = self.db.execute(
            "SELECT l.data FROM deliveries d JOIN layouts l ON l.key = d.layout WHERE d.subscriber = ? AND d.layout = ? LIMIT 1", (subscriber.lower(), key)
        ).fetchone()
        return None if row is None else _layout(row[0])

    def editions(self, subscriber: str, limit: int) -> list[Edition]:
        """The subscriber's latest editions with a page, newest first: those sent, and those the server may have had."""
        rows = self.db.execute(
            "SELECT d.edition, d.status, d.updated, l.data FROM deliveries d JOIN layouts l ON l.key = d.layout "
            "WHERE d.subscriber = ? AND (d.status = 'sent' OR d.uncertain > 0) ORDER BY d.updated DESC LIMIT ?",
            (subscriber.lower(), limit),
        )
        return [Edition(r["edition"], _layout(r["data"]), r["status"], datetime.fromisoformat(r["updated"])) for r in rows]

    def claim(self, edition: str, subscriber: str, now: datetime | None = None) -> int | None:
        """Atomically move a pending/deferred row to sending; the attempt number, or None if the row is not claimable."""
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            row = db.execute(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, updated = ?, claimed_by = ? "
                "WHERE edition = ? AND subscriber = ? AND status IN ('pending', 'deferred') RETURNING attempts",
                (now_s, db.worker, edition, subscriber.lower()),
            ).fetchone()
            return None if row is None else int(row[0])

    def mark_sent(self, edition: str, subscriber: str, message_id: str, reply: str, now: datetime | None = None) -> None:
        """The server accepted the message: the row (whose layout now counts as sent) and the reader's failure count change together."""
        now_s = (now or utcnow()).isoformat()
        key = subscriber.lower()
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'sent', message_id = ?, last_reply = ?, updated = ? WHERE edition = ? AND subscriber = ?",
                (message_id, reply, now_s, edition, key),
            )
            db.execute("UPDATE readers SET consecutive_failures = 0 WHERE subscriber = ? AND consecutive_failures > 0", (key,))

    def record_sent(self, subscriber: str, paper_ids: list[str], edition: str, now: datetime | None = None) -> None:
        """Papers mailed outside the ledger (the welcome mail's taste of the digest), so no digest repeats them."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sent_lists (subscriber, sent_at, edition, paper_ids) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (subscriber.lower(), (now or utcnow()).isoformat(), edition, json.dumps(paper_ids)),
            )

    def mark_deferred(self, edition: str, subscriber: str, reply: str, *, counted: bool = True, now: datetime | None = None) -> None:
        """A temporary refusal: try again later. `counted=False` when the server, not this reader, was the problem."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'deferred', last_reply = ?, updated = ?, attempts = attempts - ? WHERE edition = ? AND subscriber = ?",
                (reply, (now or utcnow()).isoformat(), 0 if counted else 1, edition, subscriber.lower()),
            )

    def mark_failed(self, edition: str, subscriber: str, reply: str, *, hard: bool, pause_after: int, now: datetime | None = None) -> bool:
        """Give up on a row. A hard refusal (5xx) also counts against the reader; True when that pauses them.

        A row the server may have had once (`uncertain`) keeps its papers as offered (see sent_paper_ids), so no later edition sends them again.
        """
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
                "ON CONFLICT(subscriber) DO UPDATE SET consecutive_failures = readers.consecutive_failures + 1, last_failure = excluded.last_failure "
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
            r["subscriber"]: PausedReader(
                r["subscriber"], r["consecutive_failures"], r["last_failure"], datetime.fromisoformat(r["paused_at"]), r["pause_reason"]
            )
            for r in rows
        }

    def resume(self, subscriber: str) -> bool:
        """Lift a pause (after the address was fixed); False if the subscriber was not paused."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE readers SET paused_at = NULL, pause_reason = NULL, consecutive_failures = 0, resumed_at = ? WHERE subscriber = ? AND paused_at IS NOT NULL",
                (utcnow().isoformat(), subscriber.lower()),
            )
            return cur.rowcount == 1

    def mark_uncertain(self, edition: str, subscriber: str, reply: str, limit: int = UNCERTAIN_LIMIT, now: datetime | None = None) -> bool:
        """The connection died after the message was handed over, before the server answered: it may have it.

        Counted like a row found interrupted in `sending`: deferred and sent once more, or, at `limit`, failed with
        its papers kept as offered. True when the row is failed.
        """
        now_s = (now or utcnow()).isoformat()
        key = subscriber.lower()
        with self.transaction() as db:
            row = db.execute(
                "UPDATE deliveries SET uncertain = uncertain + 1, updated = ? WHERE edition = ? AND subscriber = ? RETURNING uncertain",
                (now_s, edition, key),
            ).fetchone()
            if row["uncertain"] >= limit:
                db.execute(
                    "UPDATE deliveries SET status = 'failed', last_reply = ? WHERE edition = ? AND subscriber = ?",
                    (f"{reply}; unconfirmed {row['uncertain']} times (the reader may have it): not sent again", edition, key),
                )
                return True
            db.execute(
                "UPDATE deliveries SET status = 'deferred', last_reply = ? WHERE edition = ? AND subscriber = ?",
                (f"{reply}; the server may have it: sending once more", edition, key),
            )
            return False

    def recover_interrupted(self, limit: int = UNCERTAIN_LIMIT, now: datetime | None = None) -> int:
        """Rows left in 'sending' by a crash may or may not be at the server: each is sent again once, and counted as uncertain.

        Returns how many rows go out again; `recover_interrupted_rows` also says which were failed.
        """
        return self.recover_interrupted_rows(limit, now)[0]

    def recover_interrupted_rows(self, limit: int = UNCERTAIN_LIMIT, now: datetime | None = None) -> tuple[int, list[Delivery]]:
        """`recover_interrupted`, and the rows failed rather than sent again: (how many go out again, the failed rows).

        A row found uncertain `limit` times is failed rather than risk a crash loop mailing one reader over and
        over; its papers stay marked as offered (the reader may have them), so no new edition sends them again.
        """
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            # this connection's rows, and those of no sender still running (on PostgreSQL others may be sending theirs now)
            gone = f"(claimed_by = {db.worker:d} OR NOT coalesce(claimed_by IN ({db.alive}), FALSE))"
            failed = db.execute(
                "UPDATE deliveries SET status = 'failed', uncertain = uncertain + 1, updated = ?, "
                "last_reply = 'interrupted while sending ' || (uncertain + 1) || ' times (the reader may have it): not sent again' "
                f"WHERE status = 'sending' AND uncertain + 1 >= ? AND {gone} RETURNING *",
                (now_s, limit),
            ).fetchall()
            resent = db.execute(
                "UPDATE deliveries SET status = 'deferred', uncertain = uncertain + 1, updated = ?, "
                f"last_reply = 'interrupted while sending (the server may have it); sending once more' WHERE status = 'sending' AND {gone}",
                (now_s,),
            ).rowcount
            return resent, [_delivery(_with_layout(db, r)) for r in failed]

    def take_unfinished(self, limit: int) -> list[Delivery]:
        """Up to `limit` pending or deferred rows, oldest first (an edition's readers of one layout together: one digest
        for the sender to make), taken for this connection: not those it took before,
        nor those another sender still running holds (on PostgreSQL a row being taken by two at once goes to one: SKIP LOCKED)."""
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT d.*, l.data AS layout_data FROM {_ROWS} WHERE d.status IN ('pending', 'deferred') "
                f"AND (d.claimed_by IS NULL OR d.claimed_by <> ? AND NOT coalesce(d.claimed_by IN ({db.alive}), FALSE)) "
                f"ORDER BY d.created, d.layout, d.subscriber LIMIT ?{db.skip_locked}",
                (db.worker, limit),
            ).fetchall()
            db.executemany(
                "UPDATE deliveries SET claimed_by = ? WHERE edition = ? AND subscriber = ?", [(db.worker, r["edition"], r["subscriber"]) for r in rows]
            )
        return [_delivery(r) for r in rows]

    def register_sender(self, now: datetime | None = None) -> None:
        """Count this connection among the running senders of an SQLite file (a worker of `send --workers N`), so the
        others leave the rows it takes alone; on PostgreSQL its open connection says so already."""
        if not self.shared:
            with self.transaction() as db:
                db.execute("INSERT INTO senders (worker, started) VALUES (?, ?) ON CONFLICT DO NOTHING", (db.worker, (now or utcnow()).isoformat()))

    def forget_senders(self, workers: Iterable[int] | None = None) -> None:
        """These senders of an SQLite file are gone (default: all, as a new holder of its lock file knows): the rows they
        took and did not claim are free for another, and theirs in `sending` count as interrupted."""
        if self.shared:
            return
        with self.transaction() as db:
            if workers is None:
                db.execute("DELETE FROM senders")
            else:
                db.executemany("DELETE FROM senders WHERE worker = ?", [(w,) for w in workers])

    @contextmanager
    def planning(self) -> Iterator[bool]:
        """Whether this sender plans the new rows: an SQLite file's one sender always; on PostgreSQL the one that holds
        the planning lock, the others sending the rows it plans as they come."""
        if not self.shared:
            yield True
            return
        got = bool(self.db.execute("SELECT pg_try_advisory_lock(?)", (lock_key("planning"),)).fetchone()[0])
        try:
            yield got
        finally:
            if got:
                self.db.execute("SELECT pg_advisory_unlock(?)", (lock_key("planning"),))

    def planning_elsewhere(self) -> bool:
        """Another sender is planning rows right now (PostgreSQL): more may come."""
        with self.planning() as free:
            return not free

    def deliveries(self, statuses: Iterable[str] | None = None) -> list[Delivery]:
        """Ledger rows, oldest first, optionally only some statuses."""
        if statuses is None:
            rows = self.db.execute(f"SELECT d.*, l.data AS layout_data FROM {_ROWS} ORDER BY d.created, d.subscriber")
        else:
            wanted = list(statuses)
            marks = ",".join("?" * len(wanted))
            rows = self.db.execute(f"SELECT d.*, l.data AS layout_data FROM {_ROWS} WHERE d.status IN ({marks}) ORDER BY d.created, d.subscriber", wanted)
        return [_delivery(r) for r in rows]


# A delivery row with its layout's data beside it (NULL for rows from before layouts), and what _ids reads of it.
_ROWS = "deliveries d LEFT JOIN layouts l ON l.key = d.layout"
_IDS = "d.paper_ids, l.data AS layout_data"


@functools.lru_cache(maxsize=4096)
def _layout(data: str) -> Layout:
    """A stored layout, parsed once: every reader of an edition shares it, and a layout never changes (it is its content's hash)."""
    return Layout.from_dict(json.loads(data))


def _ids(row: Any) -> list[str]:
    """Every paper of a row's edition: its layout's, and a row from before layouts its own list."""
    ids: list[str] = json.loads(row["paper_ids"])
    data = row["layout_data"]
    return ids + _layout(data).ids if data is not None else ids


def _with_layout(db: Connection, row: Any) -> dict[str, Any]:
    """A row returned by an UPDATE (which cannot join) with its layout's data, for _ids and _delivery."""
    found = db.execute("SELECT data FROM layouts WHERE key = ?", (row["layout"],)).fetchone() if row["layout"] else None
    return {**dict(row), "layout_data": found[0] if found else None}


def _store_layout(db: Connection, layout: Layout, when: str) -> None:
    db.execute(
        "INSERT INTO layouts (key, data, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (layout.key, layout.canonical, when),
    )


def _delivery(r: Any) -> Delivery:
    layout = None if r["layout_data"] is None else _layout(r["layout_data"])
    return Delivery(
        edition=r["edition"],
        subscriber=r["subscriber"],
        status=r["status"],
        paper_ids=tuple(_ids(r)),
        layout=layout,
        attempts=r["attempts"],
        uncertain=r["uncertain"],
        last_reply=r["last_reply"],
        message_id=r["message_id"],
        created=datetime.fromisoformat(r["created"]),
        updated=datetime.fromisoformat(r["updated"]),
    )
