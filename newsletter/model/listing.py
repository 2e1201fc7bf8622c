"""Which stored papers each topic takes, day by day: what the public pages and topic feeds list; no I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from newsletter.model.paper import Paper
from newsletter.model.ranking import Figures, SortKey, tie_key
from newsletter.model.topics import Matcher, Topic

FRONT = ""  # the front page's bucket: papers some topic takes, or every paper when there are no topics (no topic is named "")


@dataclass(frozen=True)
class Listed:
    """One stored paper's place in the listing."""

    id: str
    day: date  # the day it is listed under
    when: datetime  # published, but never later than first seen: a feed's future dates cannot pin it on top
    rank: SortKey  # order within a day: most popular first, as on a daily-papers page, then newest (ranking.tie_key)
    topics: tuple[str, ...]  # the topics that take it, in their configured order


def listed(paper: Paper, first_seen: datetime, topics: Sequence[str]) -> Listed:
    """A paper's entry: listed on the (UTC) day it was published, or first seen when that is earlier or unknown."""
    when = min(paper.published or first_seen, first_seen).astimezone(UTC)
    return Listed(paper.id, when.date(), when, (-Figures.of(paper).weight, *tie_key(paper.id, paper.published)), tuple(topics))


class Listing:
    """The topic rules' verdict on every stored paper, kept by topic and day; built once, then fed only what changed."""

    def __init__(self, topics: Sequence[Topic]) -> None:
        self.topics = tuple(topics)
        self.matcher = Matcher(self.topics)
        self.watermark = 0  # the store's largest change number seen: it is asked only for what changed since
        self._papers: dict[str, Listed] = {}
        self._days: dict[str, dict[date, set[str]]] = {name: {} for name in [t.name for t in self.topics] + [FRONT]}

    def add(self, paper: Paper, first_seen: datetime, changed: int) -> None:
        """List a paper, or list it again after a merge (its score, and so its topics, may have changed)."""
        old = self._papers.get(paper.id)
        if old is not None:
            for name in old.topics + (FRONT,):
                self._days[name].get(old.day, set()).discard(old.id)
        entry = listed(paper, first_seen, self.matcher.topics_for(paper))
        buckets = entry.topics + (FRONT,) if entry.topics or not self.topics else ()
        for name in buckets:
            self._days[name].setdefault(entry.day, set()).add(entry.id)
        self._papers[paper.id] = entry
        self.watermark = max(self.watermark, changed)

    def drop(self, paper_id: str, changed: int) -> None:
        """List a paper nowhere any more (its body was pruned)."""
        old = self._papers.pop(paper_id, None)
        if old is not None:
            for name in old.topics + (FRONT,):
                self._days[name].get(old.day, set()).discard(old.id)
        self.watermark = max(self.watermark, changed)

    def days(self, topic: str = FRONT) -> list[date]:
        """The days the topic (or the front page) has papers on, newest first."""
        return sorted((day for day, ids in self._days[topic].items() if ids), reverse=True)

    def on(self, day: date, topic: str = FRONT) -> list[Listed]:
        """The topic's papers of one day, best first."""
        return sorted((self._papers[i] for i in self._days[topic].get(day, ())), key=lambda e: e.rank)

    def count(self, day: date, topic: str = FRONT) -> int:
        return len(self._days[topic].get(day, ()))

    def newest(self, topic: str, limit: int) -> list[Listed]:
        """The topic's most recent papers, newest first: what its feed carries."""
        out: list[Listed] = []
        for day in self.days(topic):
            out += sorted((self._papers[i] for i in self._days[topic][day]), key=lambda e: (-e.when.timestamp(), e.id))
            if len(out) >= limit:
                break
        return out[:limit]
