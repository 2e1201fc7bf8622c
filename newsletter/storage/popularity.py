"""Popularity snapshots: what each fetch saw of a paper's upvotes, comments and stars, kept as long as `rising` needs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from newsletter.model.paper import Paper
from newsletter.model.ranking import Figures, Snapshot
from newsletter.storage.database import Database


def _stamp(at: datetime) -> str:
    """One fixed-width UTC form, so snapshot times compare as text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class Popularity(Database):
    """popularity."""

    def record_popularity(self, papers: Iterable[Paper], at: datetime, keep_hours: int) -> int:
        """Record the figures of each paper that has any, as seen at `at`; returns how many were recorded.

        Then prunes, of these papers, what no rising window up to `keep_hours` needs: snapshots older than `at` − keep_hours, except
        each paper's newest at or before then (the baseline of a gain, or else its latest figures). Two sources seeing one
        paper in the same fetch keep the higher of each figure."""
        rows = [(p.id, _stamp(at), p.score, p.comments, p.stars) for p in papers if Figures.of(p).known]
        cutoff = _stamp(at - timedelta(hours=keep_hours))
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO popularity (paper, at, upvotes, comments, stars) VALUES (?, ?, ?, ?, ?) ON CONFLICT(paper, at) DO UPDATE SET "
                "upvotes = greatest(popularity.upvotes, excluded.upvotes), comments = greatest(popularity.comments, excluded.comments), "
                "stars = greatest(popularity.stars, excluded.stars)",
                rows,
            )
            db.executemany(  # by paper, through the primary key: the snapshots of papers no fetch sees any more are `prune`'s
                "DELETE FROM popularity WHERE paper = ?1 AND at < (SELECT MAX(at) FROM popularity AS newer WHERE newer.paper = ?1 AND newer.at <= ?2)",
                [(row[0], cutoff) for row in rows],
            )
        return len(rows)

    def popularity_history(self, paper_ids: Iterable[str], since: datetime) -> dict[str, list[Snapshot]]:
        """Each paper's snapshots from its last one at or before `since` (the baseline of a gain since then) on, oldest first."""
        rows = self.db.execute(
            "SELECT paper, at, upvotes, comments, stars FROM popularity AS p WHERE paper IN (SELECT value FROM json_each(?1)) "
            "AND at >= coalesce((SELECT MAX(at) FROM popularity AS q WHERE q.paper = p.paper AND q.at <= ?2), ?2) ORDER BY paper, at",
            (json.dumps(list(paper_ids)), _stamp(since)),
        )
        out: dict[str, list[Snapshot]] = {}
        for r in rows:
            out.setdefault(r["paper"], []).append(Snapshot(datetime.fromisoformat(r["at"]), Figures(r["upvotes"], r["comments"], r["stars"])))
        return out
