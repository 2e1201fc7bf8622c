"""Pruning: what no guarantee needs any more is removed, so the file grows with the horizon kept, not with the years."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from newsletter.model.paper import Paper, stub
from newsletter.storage.database import Database, utcnow
from newsletter.storage.ledger import _layout
from newsletter.storage.popularity import _stamp

PRUNED_BEFORE = "prune.deliveries_before"  # meta key: finished deliveries before this time are gone (no look-back may reach past it)


@dataclass(frozen=True)
class Keep:
    """What `prune` keeps, as times: everything at or after each stays."""

    deliveries: datetime  # finished ledger rows (sent, failed) last changed before it go, with their edition pages
    papers: datetime  # papers first seen (and revised) before it are cut to their id, version and sources, unless a kept edition holds them
    candidates: datetime  # the planner's look-back: papers first seen (or revised) since are candidates, and their snapshots stay
    snapshots: datetime  # popularity snapshots before it go, but each paper's newest before it (a rising window's baseline)
    http_cache: datetime  # validators saved before it go, unless their URL is one a configured source fetches
    urls: frozenset[str]  # the first URLs of the configured sources


@dataclass(frozen=True)
class Pruned:
    """How many of each kind `prune` removed (or, in a dry run, would remove)."""

    deliveries: int = 0
    layouts: int = 0
    sent_lists: int = 0
    paper_bodies: int = 0
    snapshots: int = 0
    http_cache: int = 0

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


class Pruning(Database):
    """The removal of old rows from every table that would otherwise grow for ever."""

    def prune(self, keep: Keep, *, dry_run: bool = False, now: datetime | None = None) -> Pruned:
        """Remove what `keep` no longer covers; with `dry_run` count it in one transaction and roll back.

        A day of deliveries per transaction, then each other kind in one, so the web app's and a fetch's writes are
        kept waiting for a moment only, even by a first prune of years of history.
        Never removed: unfinished deliveries (pending, sending, deferred), the paper rows themselves (a paper fetched
        again years later is known by its id and first-seen time, so it is no candidate and nobody gets it again),
        and the bodies of papers that a kept edition holds (its page is rebuilt from them)."""
        if not dry_run:
            return self._prune(keep, now or utcnow())
        with self.failures():
            self.db.begin()
        try:
            return self._prune(keep, now or utcnow())
        finally:
            self._rollback()

    def pruned_before(self) -> datetime | None:
        """Finished deliveries before this time were pruned: a look-back reaching past it would send their papers again."""
        value = self.meta(PRUNED_BEFORE)
        return datetime.fromisoformat(value) if value else None

    def _prune(self, keep: Keep, now: datetime) -> Pruned:
        before = keep.deliveries.isoformat()
        previous = self.pruned_before()
        if previous is None or previous < keep.deliveries:  # first: no look-back may reach into what goes next
            self.set_meta(PRUNED_BEFORE, before)
        deliveries = 0
        for step in self._days_until(keep.deliveries):
            with self.transaction() as db:
                deliveries += db.execute("DELETE FROM deliveries WHERE status IN ('sent', 'failed') AND updated < ?", (step.isoformat(),)).rowcount
        with self.transaction() as db:
            sent_lists = db.execute("DELETE FROM sent_lists WHERE sent_at < ?", (before,)).rowcount
            layouts = db.execute("DELETE FROM layouts WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.layout = layouts.key)").rowcount
        with self.transaction():
            bodies = self._cut_papers(keep.papers, now)
        with self.transaction():
            snapshots = self._prune_snapshots(keep.snapshots, keep.candidates)
            http_cache = self._prune_http_cache(keep.http_cache, keep.urls)
        return Pruned(deliveries, layouts, sent_lists, bodies, snapshots, http_cache)

    def _days_until(self, cutoff: datetime) -> list[datetime]:
        """Cutoffs a day apart from the oldest finished delivery's day up to `cutoff`, for one transaction each."""
        found = [self.db.execute("SELECT MIN(updated) FROM deliveries WHERE status = ?", (status,)).fetchone()[0] for status in ("sent", "failed")]
        dates = [datetime.fromisoformat(v) for v in found if v is not None]
        if not dates or min(dates) >= cutoff:
            return []
        step, steps = min(dates) + timedelta(days=1), []
        while step < cutoff:
            steps.append(step)
            step += timedelta(days=1)
        return [*steps, cutoff]

    def _cut_papers(self, before: datetime, now: datetime) -> int:
        """Cut the papers seen before `before` that no kept edition holds to what dedup needs; their snapshots go too."""
        db = self.db
        cut: list[tuple[str, str]] = []  # (id, the stub's data)
        held: set[str] | None = None
        for row in db.execute(
            "SELECT id, data FROM papers WHERE pruned IS NULL AND first_seen < ?1 AND (revised IS NULL OR revised < ?1)", (before.isoformat(),)
        ).fetchall():
            if held is None:
                held = self._held()
            if row["id"] not in held:
                cut.append((row["id"], json.dumps(stub(Paper.from_dict(json.loads(row["data"]))).to_dict(), ensure_ascii=False, separators=(",", ":"))))
        if not cut:
            return 0
        changed = db.execute("SELECT coalesce(max(changed), 0) FROM papers").fetchone()[0]  # the public listing hears of each cut
        db.executemany(
            "UPDATE papers SET data = ?, pruned = ?, changed = ? WHERE id = ?",
            [(data, now.isoformat(), changed + n, pid) for n, (pid, data) in enumerate(cut, 1)],
        )
        db.executemany("DELETE FROM popularity WHERE paper = ?", [(pid,) for pid, _ in cut])
        return len(cut)

    def _held(self) -> set[str]:
        """Every paper of a delivery still kept (its edition page, or a digest yet to go out, is built from them)."""
        held = {pid for row in self.db.execute("SELECT data FROM layouts") for pid in _layout(row[0]).ids}  # each is some kept delivery's
        for row in self.db.execute("SELECT paper_ids FROM deliveries WHERE paper_ids <> '[]'"):  # rows from before layouts
            held.update(json.loads(row[0]))
        return held

    def _prune_snapshots(self, before: datetime, candidates: datetime) -> int:
        """Snapshots no rising window needs: those before `before` but each paper's newest there (a gain's baseline),
        and every one of a paper no fetch has seen since `candidates` (it was first seen before: it is no candidate)."""
        cutoff = _stamp(before)
        older = self.db.execute(
            "DELETE FROM popularity WHERE at < (SELECT MAX(at) FROM popularity AS newer WHERE newer.paper = popularity.paper AND newer.at <= ?1)",
            (cutoff,),
        ).rowcount
        unseen = self.db.execute(
            "DELETE FROM popularity WHERE at < ?1 AND NOT EXISTS (SELECT 1 FROM popularity AS newer WHERE newer.paper = popularity.paper AND newer.at >= ?1)",
            (_stamp(candidates),),
        ).rowcount
        return int(older + unseen)

    def _prune_http_cache(self, before: datetime, urls: Collection[str]) -> int:
        """Validators of URLs no configured source starts from and none saved lately (a page that came after, a past day)."""
        stale = [
            (r["url"],) for r in self.db.execute("SELECT url FROM http_cache WHERE saved IS NULL OR saved < ?", (before.isoformat(),)) if r["url"] not in urls
        ]
        self.db.executemany("DELETE FROM http_cache WHERE url = ?", stale)
        return len(stale)
