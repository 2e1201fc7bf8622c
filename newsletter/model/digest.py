"""Choosing which papers go into one subscriber's digest, grouped by their topics; no I/O here."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property
from typing import Any

from newsletter.model.config import AUTHORS_TOPIC, KEYWORDS_TOPIC, Config, Subscriber
from newsletter.model.paper import Paper
from newsletter.model.ranking import Matched, SortKey
from newsletter.model.topics import Marks, Matcher, Topic
from newsletter.model.wording import counted


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

    @property
    def anchor(self) -> str:
        return anchor(self.key)


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
        """Papers shown in the mail."""
        return sum(len(s.entries) for s in self.sections)

    @property
    def total(self) -> int:
        """Papers in the edition: those shown and those cut, every one on the edition's page."""
        return self.count + sum(s.more for s in self.sections)

    @cached_property
    def layout(self) -> Layout:
        return Layout(self.day, tuple(Shelf(s.key, s.title, tuple(e.paper.id for e in s.entries), s.cut) for s in self.sections))

    @cached_property
    def key(self) -> str:
        """Identity of the content: equal keys render to equal mails (a personal-keywords section counts by what it
        shows, not whose it is: see `anonymous`). A string, so it hashes once (see Entry.key)."""
        return repr((self.day, [(_shared(s.key), s.title, s.more, [e.key for e in s.entries]) for s in self.sections]))


@dataclass(frozen=True)
class Shelf:
    """One topic of an edition: the ids shown in the mail, then those cut, in the mail's order."""

    key: str
    title: str
    shown: tuple[str, ...]
    cut: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return self.shown + self.cut

    @property
    def anchor(self) -> str:
        return anchor(self.key)


@dataclass(frozen=True)
class Layout:
    """What one edition holds, grouped and ordered as in the mail: stored once however many readers got it,
    and enough to rebuild its page from the stored papers."""

    day: date
    sections: tuple[Shelf, ...]

    @property
    def ids(self) -> list[str]:
        """Every paper of the edition: the reader was told of each, so none comes again."""
        return [pid for s in self.sections for pid in s.ids]

    @property
    def shown(self) -> int:
        return sum(len(s.shown) for s in self.sections)

    @property
    def total(self) -> int:
        return sum(len(s.ids) for s in self.sections)

    def to_dict(self) -> dict[str, object]:
        return {"day": self.day.isoformat(), "sections": [{"key": s.key, "title": s.title, "shown": list(s.shown), "cut": list(s.cut)} for s in self.sections]}

    @staticmethod
    def stored_ids(data: Mapping[str, Any]) -> list[str]:
        """`from_dict(data).ids` without building the layout: a send reads thousands of them."""
        return [pid for s in data["sections"] for pid in (*s["shown"], *s["cut"])]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layout:
        return cls(date.fromisoformat(data["day"]), tuple(Shelf(s["key"], s["title"], tuple(s["shown"]), tuple(s["cut"])) for s in data["sections"]))

    @cached_property
    def canonical(self) -> str:
        """The layout as JSON, one way only: what its key hashes and what the ledger stores."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @cached_property
    def key(self) -> str:
        """A content hash: equal layouts are one stored edition; 128 bits, so it fits in a short link."""
        return hashlib.blake2b(self.canonical.encode("utf-8"), digest_size=16).hexdigest()


PERSONAL = (f"{AUTHORS_TOPIC}:", f"{KEYWORDS_TOPIC}:")  # how a reader's own sections' keys start: `Config.personal_topics` names them


def _shared(key: str) -> str:
    """A section's key with no reader's address in it."""
    return key.partition(":")[0] + ":" if key.startswith(PERSONAL) else key


def readdressed(digest: Digest, email: str | None) -> Digest:
    """The digest with its personal sections (followed authors, keywords) keyed as `email`'s: another reader's of the same
    selection, or, with None, no one's (see `anonymous`)."""

    def key(section: Section) -> str:
        kind = _shared(section.key)
        return kind + email.lower() if email is not None else kind

    if not any(s.key.startswith(PERSONAL) and s.key != key(s) for s in digest.sections):
        return digest
    return replace(digest, sections=tuple(replace(s, key=key(s)) if s.key.startswith(PERSONAL) else s for s in digest.sections))


def anonymous(digest: Digest) -> Digest:
    """The digest as it is rendered: its personal sections keyed by no one's address (their anchors stay
    "followed-authors" and "your-keywords"), so one render serves every reader it fits and no template can show one
    reader's address to another."""
    return readdressed(digest, None)


def count_phrase(shown: int, total: int) -> str:
    """How many papers a mail shows and its edition holds, said the same way in subject, header, CLI and `status`."""
    if shown >= total:
        return counted(shown, "new paper")
    return f"{shown} in this mail, {total} in the edition"


_NOT_ANCHOR = re.compile(r"[^A-Za-z0-9_-]+")


def anchor(key: str) -> str:
    """A section's id in the mail and on the edition page; a reader's own keywords never put their address in a URL."""
    if key.startswith(f"{KEYWORDS_TOPIC}:"):
        return "your-keywords"
    if key.startswith(f"{AUTHORS_TOPIC}:"):
        return "followed-authors"
    return _NOT_ANCHOR.sub("-", key)


def subscriber_topics(config: Config, subscriber: Subscriber) -> list[Topic]:
    """The subscriber's sections in order: the authors they follow, their topics, then their other keywords."""
    personal = config.personal_topics(subscriber)
    follows = [t for t in personal if t.name.startswith(f"{AUTHORS_TOPIC}:")]
    return follows + [config.topics[name] for name in subscriber.topics if name in config.topics] + [t for t in personal if t not in follows]


def all_topics(config: Config) -> list[Topic]:
    """Every shared topic and every reader's personal topics and exclude rule, for compiling one matcher."""
    return list(config.topics.values()) + [t for s in config.subscribers for t in config.own_rules(s)]


def rules_of(config: Config, readers: Sequence[Subscriber]) -> list[Topic]:
    """The shared topics these readers follow and their own rules: a matcher for a few readers (a welcome mail)
    compiles only what their digests hold, and each topic matches and scores papers the same whatever is beside it."""
    followed = dict.fromkeys(name for s in readers for name in s.topics if name in config.topics)
    return [config.topics[name] for name in followed] + [t for s in readers for t in config.own_rules(s)]


def topic_labels(config: Config) -> dict[str, str]:
    """How `topics explain` and `topics try` name each topic: shared ones by name, personal rules by their owner."""
    labels = {name: name for name in config.topics}
    for s in config.subscribers:
        for topic in config.own_rules(s):
            labels[topic.name] = f"{topic.name.partition(':')[0].replace('authors', 'followed authors')} of {s.email}"
    return labels


def compose(
    config: Config,
    subscriber: Subscriber,
    matcher: Matcher,
    papers: Sequence[Paper],
    matches: Mapping[str, Matched],
    already_sent: set[str],
    day: date,
) -> Digest | None:
    """The subscriber's next digest from candidate papers, or None when nothing is new to them.

    `matches` (`ranking.match_all`) holds each paper's topics and scores; each section is in its topic's sort order.
    A paper the subscriber's `exclude:` rule takes is left out, whichever topic or followed author let it in."""
    topics = subscriber_topics(config, subscriber)
    excluded = config.exclude_topic(subscriber)
    out = excluded.name if excluded else None
    buckets: dict[str, list[tuple[SortKey, Paper, list[Topic]]]] = {t.name: [] for t in topics}
    for paper in papers:
        matched = matches.get(paper.id)
        if (
            matched is None
            or buckets.keys().isdisjoint(matched.keys.keys())
            or paper.id in already_sent
            or (paper.score or 0) < subscriber.min_score
            or (out is not None and out in matched.keys)
        ):
            continue
        hits = [t for t in topics if t.name in matched.keys]
        if hits:
            buckets[hits[0].name].append((matched.keys[hits[0].name], paper, hits))

    budget = subscriber.max_papers
    sections = []
    for topic in topics:
        ranked = sorted(buckets[topic.name], key=lambda item: item[0])
        cap = topic.max_papers or config.settings.max_papers_per_topic
        if budget is not None:
            cap = min(cap, budget)
        # marked only once a cap has kept them: a cut paper shows no words
        kept = tuple(Entry(paper, tuple(t.title for t in hits[1:]), matcher.marks(paper, [t.name for t in hits])) for _, paper, hits in ranked[:cap])
        if budget is not None:
            budget -= len(kept)
        if kept:
            sections.append(Section(topic.name, topic.title, topic.description, kept, tuple(paper.id for _, paper, _ in ranked[cap:])))
    if not sections:
        return None
    return Digest(day, tuple(sections))


def cut_as(digest: Digest, rendered: Digest) -> Digest:
    """`digest` cut the way `rendered` (an equal digest, maybe shrunk to fit a mail) was: readers whose mails render
    alike may still differ in the papers a cap left out, and each reader's edition holds their own."""
    if digest is rendered:
        return digest
    sections = tuple(
        replace(s, entries=s.entries[: len(r.entries)], cut=tuple(e.paper.id for e in s.entries[len(r.entries) :]) + s.cut)
        for s, r in zip(digest.sections, rendered.sections, strict=True)
    )
    return replace(digest, sections=sections)


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


def edition_digest(layout: Layout, papers: Mapping[str, Paper], topics: Sequence[Topic], matcher: Matcher) -> Digest:
    """A whole edition as one digest with nothing cut, for its page: the mail's sections in the mail's order,
    each paper tagged and marked by the reader's topics as they stand now. Papers no longer stored are skipped."""
    by_name = {t.name: t for t in topics}
    sections = []
    for shelf in layout.sections:
        entries = []
        for pid in shelf.ids:
            paper = papers.get(pid)
            if paper is None:
                continue
            found = set(matcher.topics_for(paper))
            others = [t for t in topics if t.name in found and t.name != shelf.key]
            marks = matcher.marks(paper, [shelf.key, *(t.name for t in others)])
            entries.append(Entry(paper, tuple(t.title for t in others), marks))
        topic = by_name.get(shelf.key)
        sections.append(Section(shelf.key, shelf.title, topic.description if topic else "", tuple(entries)))
    return Digest(layout.day, tuple(s for s in sections if s.entries))
