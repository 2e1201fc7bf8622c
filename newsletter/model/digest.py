"""Choosing which papers go into one subscriber's digest, grouped by their topics; no I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import cached_property

from newsletter.model.config import Config, Subscriber
from newsletter.model.paper import Paper
from newsletter.model.topics import Marks, Matcher, Topic

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    """A paper in a section, with the other topics it also belongs to and the words that matched."""

    paper: Paper
    tags: tuple[str, ...]
    marks: Marks

    @cached_property
    def key(self) -> str:
        """Identity of what a paper card shows: the paper, its tags and its marked words.

        A string, because a string keeps its hash: caches look these up once per reader.
        """
        return repr((self.paper.id, self.tags, self.marks.title, self.marks.abstract, self.marks.values))


@dataclass(frozen=True)
class Section:
    """One topic's part of the digest; papers cut by a cap are counted, and count as delivered."""

    key: str
    title: str
    description: str
    entries: tuple[Entry, ...]
    cut: tuple[str, ...] = ()  # ids of matching papers left out by a cap

    @property
    def more(self) -> int:
        return len(self.cut)


@dataclass(frozen=True)
class Digest:
    """The content of one mail, independent of who receives it, so equal digests render once."""

    day: date
    sections: tuple[Section, ...]

    @property
    def papers(self) -> list[Paper]:
        return [e.paper for s in self.sections for e in s.entries]

    @property
    def covered_ids(self) -> list[str]:
        """Papers shown plus papers cut: the reader was told of both, so neither comes again."""
        return [p.id for p in self.papers] + [pid for s in self.sections for pid in s.cut]

    @property
    def count(self) -> int:
        return sum(len(s.entries) for s in self.sections)

    @cached_property
    def key(self) -> str:
        """Identity of the content: equal keys render to equal mails. A string, so it hashes once (see Entry.key)."""
        return repr((self.day, [(s.key, s.title, s.more, [e.key for e in s.entries]) for s in self.sections]))


def subscriber_topics(config: Config, subscriber: Subscriber) -> list[Topic]:
    """The subscriber's topics in their order, then their personal keywords."""
    topics = [config.topics[name] for name in subscriber.topics if name in config.topics]
    personal = config.personal_topic(subscriber)
    return topics + ([personal] if personal else [])


def all_topics(config: Config) -> list[Topic]:
    """Every shared topic and every personal-keyword topic, for compiling one matcher."""
    personal = (config.personal_topic(s) for s in config.subscribers)
    return list(config.topics.values()) + [t for t in personal if t is not None]


def topic_labels(config: Config) -> dict[str, str]:
    """How `topics explain` and `topics try` name each topic: shared ones by name, personal keywords by their owner."""
    labels = {name: name for name in config.topics}
    for s in config.subscribers:
        personal = config.personal_topic(s)
        if personal is not None:
            labels[personal.name] = f"keywords of {s.email}"
    return labels


def match_all(matcher: Matcher, papers: Iterable[Paper]) -> dict[str, frozenset[str]]:
    """Topic names per paper id, computed once and shared by every subscriber."""
    return {p.id: frozenset(matcher.topics_for(p)) for p in papers}


def compose(
    config: Config,
    subscriber: Subscriber,
    matcher: Matcher,
    papers: Sequence[Paper],
    matches: Mapping[str, frozenset[str]],
    already_sent: set[str],
    day: date,
) -> Digest | None:
    """The subscriber's next digest from candidate papers, or None when nothing is new to them."""
    topics = subscriber_topics(config, subscriber)
    buckets: dict[str, list[Entry]] = {t.name: [] for t in topics}
    for paper in papers:
        if paper.id in already_sent or (paper.score or 0) < subscriber.min_score:
            continue
        hits = [t for t in topics if t.name in matches.get(paper.id, ())]
        if not hits:
            continue
        first = hits[0]
        tags = tuple(t.title for t in hits[1:])
        marks = matcher.marks(paper, [t.name for t in hits])
        buckets[first.name].append(Entry(paper, tags, marks))

    budget = subscriber.max_papers
    sections = []
    for topic in topics:
        entries = sorted(buckets[topic.name], key=lambda e: rank(e.paper))
        cap = topic.max_papers or config.settings.max_papers_per_topic
        if budget is not None:
            cap = min(cap, budget)
        kept = entries[:cap]
        if budget is not None:
            budget -= len(kept)
        if kept:
            sections.append(Section(topic.name, topic.title, topic.description, tuple(kept), tuple(e.paper.id for e in entries[cap:])))
    if not sections:
        return None
    return Digest(day, tuple(sections))


def rank(paper: Paper) -> tuple[int, float, str]:
    """Sort key within a topic: highest score first, then newest, then id for a stable order."""
    return (-(paper.score or 0), -(paper.published or _EPOCH).timestamp(), paper.id)


def shrink(digest: Digest, keep: int) -> Digest:
    """The digest with only `keep` papers, cut proportionally across topics (each keeps at least its best one).

    Sections are already ranked, so the tail of each goes; the ids cut join Section.cut, which makes the
    template say "…and N more" and keeps them counted as delivered (Digest.covered_ids).
    """
    sizes = [len(s.entries) for s in digest.sections]
    total = sum(sizes)
    if keep >= total:
        return digest
    quotas = [max(1, size * keep // total) for size in sizes]
    # Hand out what flooring left over, largest remainder first, never beyond a section's size.
    order = sorted(range(len(sizes)), key=lambda i: -(sizes[i] * keep % total))
    spare = keep - sum(quotas)
    for i in order:
        if spare <= 0:
            break
        if quotas[i] < sizes[i]:
            quotas[i] += 1
            spare -= 1
    sections = tuple(
        replace(s, entries=s.entries[:q], cut=tuple(e.paper.id for e in s.entries[q:]) + s.cut) for s, q in zip(digest.sections, quotas, strict=True)
    )
    return replace(digest, sections=sections)
