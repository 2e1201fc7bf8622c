"""Papers: each one stored once by id, merged across sightings, with when this installation first saw it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from newsletter.model.paper import Paper, merge
from newsletter.storage.database import Database, utcnow

PARSED_PAPERS = 8192  # papers kept read by `papers_by_id`: a few days' worth


class Added(NamedTuple):
    """What one source's papers did to the store."""

    new: int  # papers this installation had not seen
    fresh: int  # papers their source had not brought before (a paper first seen from another source counts): "papers seen"


@dataclass(frozen=True)
class StoredPaper:
    """A paper with when this installation first saw it: age counts from there, not from publication."""

    paper: Paper
    first_seen: datetime


@dataclass(frozen=True)
class ChangedPaper:
    """A paper as the public pages list it: when it was first seen, and the number of its row's last change."""

    paper: Paper
    first_seen: datetime
    changed: int  # grows with every insert or merge in the store: the next question starts after the largest seen
    pruned: bool = False  # its body was cut by `newsletter prune`: listed nowhere any more


class Papers(Database):
    """papers."""

    def add_papers(self, papers: Iterable[Paper], now: datetime | None = None, *, replace: bool = False) -> Added:
        """Insert or merge papers; counts what was new to this installation, and to the sources that brought them.

        With `replace` (the source asks for new versions), a higher arXiv version than the stored one
        marks the paper revised, so it is sent again, once, to whoever was sent an older version.
        """
        now_s = (now or utcnow()).isoformat()
        new = fresh = 0
        with self.transaction() as db:
            db.exclusive("papers")
            changed = db.execute("SELECT coalesce(max(changed), 0) FROM papers").fetchone()[0]  # writers queue: no other can take these numbers
            for paper in papers:
                changed += 1
                row = db.execute("SELECT data, revised, pruned FROM papers WHERE id = ?", (paper.id,)).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO papers (id, data, first_seen, updated, changed) VALUES (?, ?, ?, ?, ?)", (paper.id, _dumps(paper), now_s, now_s, changed)
                    )
                    new += 1
                    fresh += 1
                else:
                    old = Paper.from_dict(json.loads(row["data"]))
                    fresh += not set(paper.sources) <= set(old.sources)
                    revised = now_s if replace and (paper.version or 1) > (old.version or 1) else row["revised"]
                    db.execute(
                        "UPDATE papers SET data = ?, updated = ?, revised = ?, changed = ?, pruned = NULL WHERE id = ?",  # a pruned paper gets its body back
                        (_dumps(merge(old, paper)), now_s, revised, changed, paper.id),
                    )
        return Added(new, fresh)

    def paper(self, paper_id: str) -> Paper | None:
        row = self.db.execute("SELECT data FROM papers WHERE id = ?", (paper_id,)).fetchone()
        return Paper.from_dict(json.loads(row["data"])) if row else None

    def papers_seen_since(self, since: datetime) -> list[StoredPaper]:
        """Papers first fetched (or revised) at or after `since`, newest first; none whose body was pruned."""
        rows = self.db.execute(  # a UNION rather than an OR, so each half reads its own index
            "SELECT id, data, first_seen FROM papers WHERE first_seen >= ?1 AND pruned IS NULL "
            "UNION SELECT id, data, first_seen FROM papers WHERE revised >= ?1 AND pruned IS NULL ORDER BY first_seen DESC, id",
            (since.isoformat(),),
        )
        return [StoredPaper(Paper.from_dict(json.loads(r["data"])), datetime.fromisoformat(r["first_seen"])) for r in rows]

    def papers_changed_since(self, changed: int = 0) -> list[ChangedPaper]:
        """Papers added or merged after change number `changed` (an earlier answer's largest; 0 for every paper), oldest change first."""
        rows = self.db.execute("SELECT data, first_seen, changed, pruned FROM papers WHERE changed > ? ORDER BY changed", (changed,))
        return [
            ChangedPaper(Paper.from_dict(json.loads(r["data"])), datetime.fromisoformat(r["first_seen"]), r["changed"], r["pruned"] is not None) for r in rows
        ]

    def papers_by_id(self, ids: Iterable[str]) -> list[Paper]:
        """Papers in the order asked, skipping unknown ids: one query however many (an edition's page asks for hundreds)."""
        wanted = list(ids)
        rows = self.db.execute("SELECT id, data FROM papers WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(wanted),))
        found = {r["id"]: r["data"] for r in rows}
        return [_parsed(found[pid]) for pid in wanted if pid in found]

    def papers_version(self, ids: Iterable[str]) -> str:
        """When any of these papers last changed, and how many are stored: equal answers mean equal papers."""
        row = self.db.execute("SELECT COUNT(*), MAX(updated) FROM papers WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),)).fetchone()
        return f"{row[0]} {row[1]}"


@lru_cache(maxsize=PARSED_PAPERS)
def _parsed(data: str) -> Paper:
    """A stored paper's JSON read, kept by its text: edition pages ask for the same day's papers again and again,
    and reading them was a fifth of building a page. The text is the key, so a changed paper is read anew."""
    return Paper.from_dict(json.loads(data))


def _dumps(paper: Paper) -> str:
    return json.dumps(paper.to_dict(), ensure_ascii=False, separators=(",", ":"))
