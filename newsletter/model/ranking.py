"""Ordering a topic's papers: a score per (paper, topic) and the sort each topic asks for; no I/O here.

The score (README "Ranking" gives it as a formula):

* match = sum over the distinct any/all keywords of the topic that hit the paper of idf(keyword) × field weight
  (title 3, abstract 1, author or category 0.5, added up over the fields it hit), where idf = ln(1 + (N − n + ½) / (n + ½))
  over the N candidate papers of a send, n of which the keyword hits: a rare keyword says more. A topic without
  any/all keywords (sources or min_score only) has match 1.
* popularity = ln(1 + upvotes) + 0.05 ln(1 + comments) + 0.02 ln(1 + GitHub stars), each 0 when unknown:
  upvotes decide, comments and stars order papers of like upvotes.
* rising = the same formula over what the figures gained within the topic's `rising_hours` (`gained`).
* recency = 1 up to 7 days old, then (1 + 2^(−(age in days − 7) / 30)) / 2: ½ for a very old one (an API query's 2010 paper).
* relevance = match × (1 + popularity / 4) × recency.

Sorts: relevance by relevance; trending by popularity, then relevance; rising by rising, then popularity, then
relevance; newest by date, then relevance. Ties: newer date first, then the newer arXiv id (read as numbers),
then the id in natural order (digit runs as numbers), so the order never depends on the order papers came in.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import NamedTuple

from newsletter.model.paper import Paper
from newsletter.model.topics import RISING_HOURS, Found, Matcher, Topic

SORTS = ("relevance", "trending", "rising", "newest")
MAX_RISING_HOURS = 24 * 30  # snapshots are kept this long at most
TITLE, ABSTRACT, OTHER = 3.0, 1.0, 0.5  # field weights of a keyword hit
_WEIGHTS = tuple(ABSTRACT * (hit & 1) + TITLE * (hit >> 1 & 1) + OTHER * (hit >> 2) for hit in range(8))  # by fields hit: bits abstract, title, other
COMMENTS, STARS = 0.05, 0.02  # the damped comment and star counts weigh little: they order papers of like upvotes
POPULARITY = 0.25  # how much popularity lifts relevance: 1 + popularity / 4
FRESH_DAYS = 7.0  # recency: papers up to a week old count in full (a digest's usual span: upvotes order them)
HALF_LIFE_DAYS = 30.0  # then they lose up to half, the gap to half halving every 30 days
_NEW_ID = re.compile(r"^(\d{4})\.(\d{4,5})$")  # year and month, number
_OLD_ID = re.compile(r"^[a-z-]+(?:\.[A-Z]{2})?/(\d\d)(\d\d)(\d{3})$")
_DIGITS = re.compile(r"(\d+)")
_WIDTH = 24  # digits a run in an id is padded to for natural order (longer runs compare as text)
_NEW_STYLE = float(200704 * 100_000)  # `_arxiv_order` of the first new-style id, 0704.0001

SortKey = tuple[float | str, ...]  # floats, then the id in natural order: flat, so the garbage collector soon stops tracking it


class Figures(NamedTuple):
    """Popularity figures as a source gave them; None where it does not say. (Named tuples, like `Score`: a send
    makes one or more per paper, and a frozen dataclass costs several times as much to build.)"""

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
        """The popularity these figures make (`weight`)."""
        return weight(*self)

    def since(self, base: Figures) -> Figures:
        """What each known figure gained since `base` (never below 0: a recount down is no loss of interest)."""
        upvotes, comments, stars = self
        return Figures(
            None if upvotes is None else max(0, upvotes - (base.upvotes or 0)),
            None if comments is None else max(0, comments - (base.comments or 0)),
            None if stars is None else max(0, stars - (base.stars or 0)),
        )


def weight(upvotes: int | None, comments: int | None, stars: int | None) -> float:
    """ln(1 + upvotes) + 0.05 ln(1 + comments) + 0.02 ln(1 + stars): damped, so 10 → 100 upvotes counts like 1 → 10."""
    return math.log1p(upvotes or 0) + COMMENTS * math.log1p(comments or 0) + STARS * math.log1p(stars or 0)


ZERO = Figures(0, 0, 0)
NO_GAIN = Figures()
_NO_RISE = -NO_GAIN.weight  # the first part of a rising key without snapshots
_NO_GAINS: Mapping[int, Figures] = MappingProxyType({})


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
    """1 up to a week old, then (1 + 2^(−(age − 7 days) / 30 days)) / 2; 1 when the age is unknown."""
    if when is None or now is None:
        return 1.0
    days = (now - when).total_seconds() / 86400 - FRESH_DAYS
    return 1.0 if days <= 0 else (1 + math.pow(0.5, days / HALF_LIFE_DAYS)) / 2


class Score(NamedTuple):
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


class Matched(NamedTuple):
    """One paper's topics, each with its sort key and the parts of its score: computed once per send, shared by every reader.

    Only what differs per topic is kept per topic (its match and sort key); `score` assembles the rest on demand."""

    found: Found
    keys: dict[str, SortKey]  # the topics that take the paper, in topic order (none: it is only counted in the idf)
    matches: dict[str, float]  # their match strengths
    popularity: float = 0.0
    recency: float = 1.0
    gains: Mapping[int, Figures] = _NO_GAINS  # rising window (hours) -> the figures gained (topics sorted by rising)

    def score(self, topic: Topic) -> Score:
        """The paper's score in a topic that takes it."""
        gain = self.gains.get(topic.rising_hours, NO_GAIN)
        return Score(self.matches[topic.name], self.popularity, gain.weight, self.recency, gain, self.keys[topic.name])


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
    The cyclic garbage collector waits meanwhile: what is built here holds no cycles, and its passes over a heap
    growing by a few objects per (paper, topic) took as long as the scoring itself.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _match_all(matcher, papers, now, first_seen or {}, history or {})
    finally:
        if paused:
            gc.enable()


def _match_all(
    matcher: Matcher, papers: Iterable[Paper], now: datetime | None, first_seen: Mapping[str, datetime], history: Mapping[str, Sequence[Snapshot]]
) -> dict[str, Matched]:
    matched = [(paper, *matcher.take(paper)) for paper in papers]
    weights = idfs(matcher.keyword_count(), [found for _, _, found in matched])
    # by topic number: its name, sort, rising window and any/all keywords as bits by id (0: it has none, and match 1)
    rules = [(t.name, t.sort, t.rising_hours, sum(1 << kid for kid, _ in matcher.keywords_of(t.name))) for t in matcher.topics]
    starts = {hours: now - timedelta(hours=hours) for hours in {t.rising_hours for t in matcher.topics}} if now else {}
    out: dict[str, Matched] = {}
    for paper, taken, found in matched:
        if not taken:
            out[paper.id] = Matched(found, {}, {})
            continue
        title, abstract, authors, categories = found  # unpacked: faster than the fields by name
        elsewhere = title | authors | categories  # most hits are in the abstract only
        hits = elsewhere | abstract
        when = paper.published or first_seen.get(paper.id)
        popularity = weight(paper.score, paper.comments, paper.stars)  # `Figures.of(paper).weight`, without building one
        lift, fresh = 1 + POPULARITY * popularity, recency(when, now)
        down, fall = -lift, -popularity  # keys sort ascending: match × -lift × fresh is -relevance, bit for bit
        day, order, natural = tie_key(paper.id, when)  # each key spelled out: a tuple display builds faster than `(…, *ties)`
        seen = history.get(paper.id) if starts else None
        gains: dict[int, Figures] = {}
        keys: dict[str, SortKey] = {}
        matches: dict[str, float] = {}
        while taken:  # lowest topic number first: the keys in topic order
            rule = taken & -taken
            taken ^= rule
            name, sort, hours, kids = rules[rule.bit_length() - 1]
            bits = hits & kids
            if bits.bit_count() == 1:  # one keyword hit: most topics of most papers, weighed as `_weighed` does
                kid = bits.bit_length() - 1
                match = weights[kid] if not elsewhere & bits else _WEIGHTS[_fields_hit(found, bits)] * weights[kid]
            else:
                match = _match(bits, found, weights) if kids else 1.0
            matches[name] = match
            if sort == "relevance":
                keys[name] = (match * down * fresh, day, order, natural)
            elif sort == "trending":
                keys[name] = (fall, match * down * fresh, day, order, natural)
            elif sort == "newest":
                keys[name] = (day, match * down * fresh, order, natural)
            else:  # rising
                if not seen:
                    rise = _NO_RISE
                else:
                    gain = gains.get(hours)
                    if gain is None:
                        gain = gains[hours] = gained(seen, starts[hours], paper.published)
                    rise = -gain.weight
                keys[name] = (rise, fall, match * down * fresh, day, order, natural)
        out[paper.id] = Matched(found, keys, matches, popularity, fresh, gains or _NO_GAINS)
    return out


def _match(bits: int, found: Found, weights: Sequence[float]) -> float:
    """The sum over these keyword bits of field weight × idf, added in `_weighed` order (a float sum depends on it)."""
    total = 0.0
    for kid, weight in _weighed(bits, found):
        total += weight * weights[kid]
    return total


def field_weights(found: Found) -> dict[int, float]:
    """Where each keyword hit the paper, weighed: title 3, abstract 1, author or category 0.5, added up over the
    fields it hit; by keyword id. A keyword's part of a match is this times its idf."""
    return dict(_weighed(found.any, found))


def _weighed(bits: int, found: Found) -> Iterator[tuple[int, float]]:
    """(keyword id, field weight) of these keyword bits: those that hit the abstract first (most do), then the title,
    then only authors or categories, each lowest id first."""
    in_abstract = bits & found.abstract
    in_title = bits & found.title & ~in_abstract
    for part in (in_abstract, in_title, bits & ~(found.abstract | found.title)):
        while part:
            low = part & -part
            part ^= low
            yield low.bit_length() - 1, _WEIGHTS[_fields_hit(found, low)]


def _fields_hit(found: Found, bit: int) -> int:
    """Which fields one keyword's bit is set in, as an index of `_WEIGHTS`."""
    return (found.abstract & bit and 1) | (found.title & bit and 2) | ((found.authors | found.categories) & bit and 4)


def tie_key(paper_id: str, when: datetime | None) -> SortKey:
    """What orders papers that score the same: newer first (date, then arXiv id), then the id in natural order
    (needless for a new-style arXiv id, whose number is its own)."""
    order = _arxiv_order(paper_id)
    return (-when.timestamp() if when else math.inf, -order, paper_id if order >= _NEW_STYLE else _natural(paper_id))


def matched_words(matcher: Matcher, topic: str, found: Found) -> tuple[tuple[int, str], ...]:
    """The topic's any/all keywords that hit the paper, as (keyword id, as written): why it is in the topic."""
    hits = found.any
    return tuple((kid, text) for kid, text in matcher.keywords_of(topic) if hits >> kid & 1)


def idfs(keywords: int, found: Sequence[Found]) -> list[float]:
    """The idf of each of `keywords` keyword ids over papers given as where keywords hit each."""
    # the hits of all keywords counted at once, bit-sliced: bit k of planes[i] is bit i of keyword k's count, and a
    # paper adds its hits as a binary adder would (a few int operations a paper instead of a few per keyword hit)
    planes: list[int] = []
    for title, abstract, authors, categories in found:  # unpacked: faster than the fields by name
        carry = title | abstract | authors | categories
        for i, plane in enumerate(planes):
            planes[i] = plane ^ carry
            carry &= plane
            if not carry:
                break
        else:
            if carry:
                planes.append(carry)
    return [idf(sum((plane >> kid & 1) << i for i, plane in enumerate(planes)), len(found)) for kid in range(keywords)]


def _arxiv_order(paper_id: str) -> float:
    """An arXiv id as a number that grows with its date and sequence (old and new style alike); -1 for any other id."""
    if m := _NEW_ID.match(paper_id):  # the most ids: year and month as one number, 20yymm = 200000 + yymm
        head, number = m.groups()  # one call for both: a third faster than m[1], m[2]
        return float((200_000 + int(head)) * 100_000 + int(number))
    if m := _OLD_ID.match(paper_id):
        yy, mm, number = m.groups()
        return float((((1900 if int(yy) >= 91 else 2000) + int(yy)) * 100 + int(mm)) * 100_000 + int(number))
    return -1.0


def _natural(paper_id: str) -> str:
    """The id in natural order as text: digit runs zero-padded to one width, so "9" < "10" < "100"."""
    parts = _DIGITS.split(paper_id)  # text, digits, text, …: faster than a `sub` calling back
    for i in range(1, len(parts), 2):
        parts[i] = parts[i].zfill(_WIDTH)
    return "".join(parts)
