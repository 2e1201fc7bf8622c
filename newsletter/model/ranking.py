"""Ordering a topic's papers: a score per (paper, topic) and the sort each topic asks for; no I/O here.

The score (README "Ranking" gives it as a formula):

* match = sum over the distinct any/all keywords of the topic that hit the paper of idf(keyword) × field weight
  (title 3, abstract 1, author or category 0.5, added up over the fields it hit), where idf = ln(1 + (N − n + ½) / (n + ½))
  over the N candidate papers of a send, n of which the keyword hits: a rare keyword says more. A topic without
  any/all keywords (sources or min_score only) has match 1.
* popularity = ln(1 + upvotes) + ½ ln(1 + comments) + ¼ ln(1 + GitHub stars), each 0 when unknown.
* rising = the same formula over what the figures gained within the topic's `rising_hours` (`gained`).
* recency = (1 + 2^(−age in days / 7)) / 2: 1 for a paper out today, ½ for a very old one.
* relevance = match × (1 + popularity / 4) × recency.

Sorts: relevance by relevance; trending by popularity, then relevance; rising by rising, then popularity, then
relevance; newest by date, then relevance. Ties: newer date first, then the newer arXiv id (read as numbers),
then the id in natural order (digit runs as numbers), so the order never depends on the order papers came in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from newsletter.model.paper import Paper
from newsletter.model.topics import RISING_HOURS, Found, Matcher, Topic

SORTS = ("relevance", "trending", "rising", "newest")
MAX_RISING_HOURS = 24 * 30  # snapshots are kept this long at most
TITLE, ABSTRACT, OTHER = 3.0, 1.0, 0.5  # field weights of a keyword hit
COMMENTS, STARS = 0.5, 0.25  # weights of the damped comment and star counts against upvotes
POPULARITY = 0.25  # how much popularity lifts relevance: 1 + popularity / 4
HALF_LIFE_DAYS = 7.0  # recency: a week-old paper keeps half of what recency can take away
_NEW_ID = re.compile(r"^(\d\d)(\d\d)\.(\d{4,5})$")
_OLD_ID = re.compile(r"^[a-z-]+(?:\.[A-Z]{2})?/(\d\d)(\d\d)(\d{3})$")
_DIGITS = re.compile(r"(\d+)")

SortKey = tuple[tuple[float, ...], tuple[tuple[int, int, str], ...]]


@dataclass(frozen=True)
class Figures:
    """Popularity figures as a source gave them; None where it does not say."""

    upvotes: int | None = None
    comments: int | None = None
    stars: int | None = None

    @classmethod
    def of(cls, paper: Paper) -> Figures:
        return cls(paper.score, paper.comments, paper.stars)

    @property
    def known(self) -> bool:
        return self.upvotes is not None or self.comments is not None or self.stars is not None

    @property
    def weight(self) -> float:
        """ln(1 + upvotes) + ½ ln(1 + comments) + ¼ ln(1 + stars): counts damped, so 10 → 100 upvotes counts like 1 → 10."""
        return math.log1p(self.upvotes or 0) + COMMENTS * math.log1p(self.comments or 0) + STARS * math.log1p(self.stars or 0)

    def since(self, base: Figures) -> Figures:
        """What each known figure gained since `base` (never below 0: a recount down is no loss of interest)."""

        def gain(now: int | None, then: int | None) -> int | None:
            return None if now is None else max(0, now - (then or 0))

        return Figures(gain(self.upvotes, base.upvotes), gain(self.comments, base.comments), gain(self.stars, base.stars))


ZERO = Figures(0, 0, 0)


@dataclass(frozen=True)
class Snapshot:
    """The figures one fetch saw for a paper, and when."""

    at: datetime
    figures: Figures


def gained(history: Sequence[Snapshot], start: datetime, published: datetime | None) -> Figures:
    """The figures gained from `start` to the latest snapshot (history oldest first).

    The baseline is the last snapshot at or before `start`; without one, zero for a paper published since
    `start` (all its popularity is new), else its first snapshot. No snapshot, no gain."""
    if not history:
        return Figures()
    base = None
    for snapshot in history:
        if snapshot.at > start:
            break
        base = snapshot.figures
    if base is None:
        base = ZERO if published is not None and published >= start else history[0].figures
    return history[-1].figures.since(base)


def idf(hits: int, total: int) -> float:
    """How much a keyword that hits `hits` of `total` papers says (BM25's idf, never negative)."""
    return math.log1p((total - hits + 0.5) / (hits + 0.5))


def recency(when: datetime | None, now: datetime | None) -> float:
    """(1 + 2^(−age/7 days)) / 2; 1 when the age is unknown."""
    if when is None or now is None:
        return 1.0
    days = max(0.0, (now - when).total_seconds() / 86400)
    return (1 + math.pow(0.5, days / HALF_LIFE_DAYS)) / 2


@dataclass(frozen=True)
class Score:
    """One paper's standing in one topic, with its parts, so `topics explain` can show how it came about."""

    match: float
    popularity: float
    rising: float
    recency: float
    gain: Figures  # what `rising` counts: the figures gained over the topic's rising_hours
    key: SortKey  # ascending: the topic's best paper first

    @property
    def relevance(self) -> float:
        return relevance(self.match, self.popularity, self.recency)


def relevance(match: float, popularity: float, recency: float) -> float:
    """match × (1 + popularity / 4) × recency."""
    return match * (1 + POPULARITY * popularity) * recency


@dataclass(frozen=True)
class Matched:
    """One paper's topics, each with its score: computed once per send and shared by every reader."""

    found: Found
    scores: dict[str, Score]  # the topics that take the paper, in topic order (none: it is only counted in the idf)


def window_hours(topics: Iterable[Topic]) -> int:
    """The longest rising window of these topics (at least the default): how long snapshots must be kept."""
    return max([RISING_HOURS, *(t.rising_hours for t in topics)])


def match_all(
    matcher: Matcher,
    papers: Iterable[Paper],
    *,
    now: datetime | None = None,
    first_seen: Mapping[str, datetime] | None = None,
    history: Mapping[str, Sequence[Snapshot]] | None = None,
) -> dict[str, Matched]:
    """Match every paper once and score it in each topic that takes it; the idf counts over these papers.

    `now` dates recency and the rising windows (None: every paper counts as new and nothing as rising);
    `first_seen` dates a paper that has no publication date; `history` holds each paper's snapshots, oldest first.
    """
    matched = [(paper, *matcher.match(paper)) for paper in papers]
    weights = idfs(matcher.keyword_count(), [found for _, _, found in matched])
    topics = {t.name: (t, sum(1 << kid for kid, _ in matcher.keywords_of(t.name))) for t in matcher.topics}
    first_seen, history = first_seen or {}, history or {}
    out: dict[str, Matched] = {}
    for paper, names, found in matched:
        if not names:
            out[paper.id] = Matched(found, {})
            continue
        kids = {kid: weights[kid] * field_weight(found, kid) for kid in _kids(found.any)}
        when = paper.published or first_seen.get(paper.id)
        popularity = Figures.of(paper).weight
        fresh = recency(when, now)
        ties, natural = tie_key(paper.id, when)
        gains: dict[int, Figures] = {}
        scores = {}
        for name in names:
            topic, wanted = topics[name]
            mine = found.any & wanted
            match = sum(kids[k] for k in _kids(mine)) if wanted else 1.0
            if topic.rising_hours not in gains:
                start = now - timedelta(hours=topic.rising_hours) if now else None
                gains[topic.rising_hours] = gained(history.get(paper.id, ()), start, paper.published) if start else Figures()
            gain = gains[topic.rising_hours]
            rising = gain.weight
            value = relevance(match, popularity, fresh)
            if topic.sort == "relevance":
                first: tuple[float, ...] = (-value, *ties)
            elif topic.sort == "trending":
                first = (-popularity, -value, *ties)
            elif topic.sort == "rising":
                first = (-rising, -popularity, -value, *ties)
            else:  # newest
                first = (*ties[:1], -value, *ties[1:])
            scores[name] = Score(match, popularity, rising, fresh, gain, (first, natural))
        out[paper.id] = Matched(found, scores)
    return out


def tie_key(paper_id: str, when: datetime | None) -> SortKey:
    """What orders papers that score the same: newer first (date, then arXiv id), then the id in natural order."""
    return (-when.timestamp() if when else math.inf, -_arxiv_order(paper_id)), _natural(paper_id)


def matched_words(matcher: Matcher, topic: str, found: Found) -> tuple[str, ...]:
    """The topic's any/all keywords, as written, that hit the paper: why it is in the topic."""
    return tuple(text for kid, text in matcher.keywords_of(topic) if found.any >> kid & 1)


def idfs(keywords: int, found: Sequence[Found]) -> list[float]:
    """The idf of each keyword id over these papers (`Found` of each)."""
    hits = [0] * keywords
    for paper in found:
        for kid in _kids(paper.any):
            hits[kid] += 1
    return [idf(n, len(found)) for n in hits]


def field_weight(found: Found, kid: int) -> float:
    """Where keyword `kid` hit the paper, weighed: title 3, abstract 1, author or category 0.5, added up."""
    bit = 1 << kid
    return (TITLE if found.title & bit else 0.0) + (ABSTRACT if found.abstract & bit else 0.0) + (OTHER if (found.authors | found.categories) & bit else 0.0)


def _kids(bits: int) -> Iterable[int]:
    """The keyword ids whose bits are set."""
    while bits:
        low = bits & -bits
        bits ^= low
        yield low.bit_length() - 1


def _arxiv_order(paper_id: str) -> float:
    """An arXiv id as a number that grows with its date and sequence (old and new style alike); -1 for any other id."""
    if m := _NEW_ID.match(paper_id):
        year, month, number = 2000 + int(m[1]), int(m[2]), int(m[3])
    elif m := _OLD_ID.match(paper_id):
        year, month, number = (1900 if int(m[1]) >= 91 else 2000) + int(m[1]), int(m[2]), int(m[3])
    else:
        return -1.0
    return float((year * 100 + month) * 100_000 + number)


def _natural(paper_id: str) -> tuple[tuple[int, int, str], ...]:
    """The id in natural order: digit runs compare as numbers ("9" < "10" < "100"), the rest as text."""
    return tuple((1, int(part), "") if part.isdigit() else (0, 0, part) for part in _DIGITS.split(paper_id) if part)
