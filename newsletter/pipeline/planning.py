"""Which papers each subscriber is owed now, matched once for everyone."""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cachetools import LRUCache

from newsletter.environment import Env
from newsletter.mail import tokens
from newsletter.mail.render import Reader
from newsletter.model.config import AUTHORS_TOPIC, KEYWORDS_TOPIC, Config, Subscriber, own_rule_name
from newsletter.model.digest import Digest, all_topics, compose, readdressed, rules_of
from newsletter.model.paper import Paper
from newsletter.model.ranking import Matched, match_all, window_hours
from newsletter.model.topics import Matcher
from newsletter.storage.store import Store

CACHED_SELECTIONS = 1024  # digests kept composed, by selection: readers of one selection need not be listed together
BULK_SHARE = 64  # past this share of the list planned (1 in 64), every reader's deliveries are read at once: a slot's small batch reads its own

# sending


def secret_key(env: Env, store: Store) -> str:
    """NEWSLETTER_SECRET_KEY, or for the local outbox a key made once and kept in the database."""
    if env.secret_key:
        return env.secret_key
    key = store.meta("secret_key")
    if key is None:
        key = secrets.token_urlsafe(32)
        store.set_meta("secret_key", key)
    return key


def reader_for(subscriber: Subscriber, secret: str, link_version: int, layout_key: str) -> Reader:
    """What personalises one subscriber's digest: their name and their unsubscribe, preferences and edition links
    (the edition `layout_key`), made at the reader's current link version (storage: `link_version`), so a
    revocation voids only older mails' links."""
    return Reader(
        email=subscriber.email,
        name=subscriber.name,
        unsubscribe_token=tokens.sign(secret, tokens.UNSUBSCRIBE, subscriber.email, link_version),
        preferences_token=tokens.sign(secret, tokens.PREFERENCES, subscriber.email, link_version),
        edition_token=tokens.edition(secret, subscriber.email, layout_key, link_version),
    )


_everyone: tuple[weakref.ref[Config], weakref.ref[Matcher]] | None = None  # the last config's matcher of every reader's rules, while in use


def everyones_matcher(config: Config) -> Matcher:
    """Every reader's rules compiled once per config while something holds them: the daemon's tick holds them over
    its slots' batches (at 100,000 readers compiling them took seconds a batch), and lets them go between ticks."""
    global _everyone
    held = _everyone
    matcher = held[1]() if held is not None and held[0]() is config else None
    if matcher is None:
        matcher = Matcher(all_topics(config))
        _everyone = (weakref.ref(config), weakref.ref(matcher))
    return matcher


@dataclass
class Planner:
    """Matches stored papers once and composes each subscriber's digest from the shared result."""

    config: Config
    store: Store
    now: datetime
    days: int | None = None  # papers first seen this many days back (default: settings.horizon_days)
    readers: Sequence[Subscriber] | None = None  # planning for these only (a welcome, a preview): the matcher holds their own rules, not everyone's
    since: datetime = field(init=False)  # the look-back those days make, never past what `prune` removed
    matcher: Matcher = field(init=False)
    papers: list[Paper] = field(init=False)
    first_seen: dict[str, datetime] = field(init=False)
    matches: dict[str, Matched] = field(init=False)
    _composed: LRUCache[tuple[object, ...], Digest | None] = field(init=False, default_factory=lambda: LRUCache(CACHED_SELECTIONS))
    _resumed: LRUCache[tuple[object, ...], Digest | None] = field(init=False, default_factory=lambda: LRUCache(CACHED_SELECTIONS))
    _matched: frozenset[str] = field(init=False)  # papers some topic takes: of a reader's sent papers, only these can change a digest
    _taken: dict[str, frozenset[str]] = field(init=False)  # the papers each topic takes
    _sent: dict[str, frozenset[str]] | None = field(init=False, default=None)  # every reader's sent papers among _matched, read at once
    _asked: int = field(init=False, default=0)  # readers whose sent papers were read one by one
    _owed: dict[tuple[tuple[str, ...], frozenset[str]], bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.matcher = everyones_matcher(self.config) if self.readers is None else Matcher(rules_of(self.config, self.readers))
        since = self.now - timedelta(days=self.days or self.config.settings.horizon_days)
        pruned = self.store.pruned_before()
        self.since = max(since, pruned) if pruned else since  # no look-back past pruned deliveries: their papers would go again
        stored = self.store.papers_seen_since(self.since)
        self.papers = [sp.paper for sp in stored]
        self.first_seen = {sp.paper.id: sp.first_seen for sp in stored}
        self.matches = self._match(self.papers)
        taken: dict[str, set[str]] = {}
        for pid, matched in self.matches.items():
            for key in matched.keys:
                taken.setdefault(key, set()).add(pid)
        self._taken = {key: frozenset(ids) for key, ids in taken.items()}
        self._matched = frozenset().union(*self._taken.values())

    def _match(self, papers: list[Paper]) -> dict[str, Matched]:
        """Topics and scores of these papers, the idf counted over them and rising from their snapshots."""
        since = self.now - timedelta(hours=window_hours(self.matcher.topics))
        history = self.store.popularity_history([p.id for p in papers], since)
        return match_all(self.matcher, papers, now=self.now, first_seen=self.first_seen, history=history)

    def matched(self, papers: list[Paper]) -> dict[str, Matched]:
        """The shared matches, plus those of any of these papers beyond the horizon (idf over the candidates and them)."""
        missing = [p for p in papers if p.id not in self.matches]
        return {**self._match([*self.papers, *missing]), **self.matches} if missing else self.matches

    def today(self, subscriber: Subscriber) -> datetime:
        return self.now.astimezone(ZoneInfo(subscriber.timezone))

    def next_digest(self, subscriber: Subscriber) -> Digest | None:
        """Every matching paper within the horizon that this subscriber has not been sent.

        Composed once per selection: readers of the same topics, keywords (followed authors among them), exclude rule,
        caps and day who have been sent the same of the papers any topic takes get one digest, only its personal
        sections renamed to theirs."""
        day = self.today(subscriber).date()
        sent = self._sent_to(subscriber)
        if not self._owed_any(subscriber, self._shared(subscriber), sent):
            return None
        selection = (*self.selection(subscriber), sent)
        if selection not in self._composed:
            self._composed[selection] = compose(self.config, subscriber, self.matcher, self.papers, self.matches, set(sent), day)
        digest = self._composed[selection]
        return digest if digest is None else readdressed(digest, subscriber.email)

    def _sent_to(self, subscriber: Subscriber) -> frozenset[str]:
        """The papers any topic takes that this subscriber was sent: read reader by reader for a planner of a few
        (a welcome, a daemon's small batch), and once more than one in BULK_SHARE of the list is asked for, every
        reader's at once (one set per distinct history). Either way after the send resumed its unfinished rows."""
        if self.readers is not None or (self._sent is None and self._asked < len(self.config.subscribers) // BULK_SHARE):
            self._asked += 1
            return self._matched.intersection(self.store.sent_paper_ids(subscriber.email, self.since))
        if self._sent is None:
            shared: dict[frozenset[str], frozenset[str]] = {}
            self._sent = {}
            for who, ids in self.store.sent_paper_ids_by_reader(self.since).items():
                if (mine := shared.get(ids)) is None:
                    mine = shared[ids] = self._matched.intersection(ids)
                self._sent[who] = mine
        return self._sent.get(subscriber.email.lower(), frozenset())

    def _owed_any(self, subscriber: Subscriber, shared: tuple[str, ...], sent: frozenset[str]) -> bool:
        """Whether any of the subscriber's sections takes a paper they were not sent: most readers of a send with
        nothing new are owed nothing, and are told so without composing (asked once per topics and history)."""
        owed = self._owed.get((shared, sent))
        if owed is None:
            owed = self._owed[(shared, sent)] = any(not self._taken.get(name, sent) <= sent for name in shared)
        if owed or not subscriber.keywords:
            return owed
        return any(not self._taken.get(own_rule_name(kind, subscriber.email), sent) <= sent for kind in (AUTHORS_TOPIC, KEYWORDS_TOPIC))

    def resumed_digest(self, subscriber: Subscriber, paper_ids: list[str]) -> Digest | None:
        """Rebuild an unfinished delivery's digest from the papers recorded for it: same papers, same caps, same mail.

        Composed once per selection and paper list, as `next_digest` composes (a send spread over workers resumes
        every row of its edition this way)."""
        key = (*self.selection(subscriber), tuple(paper_ids))
        if key not in self._resumed:
            papers = self.store.papers_by_id(paper_ids)
            self._resumed[key] = compose(self.config, subscriber, self.matcher, papers, self.matched(papers), set(), self.today(subscriber).date())
        digest = self._resumed[key]
        return digest if digest is None else readdressed(digest, subscriber.email)

    def _shared(self, subscriber: Subscriber) -> tuple[str, ...]:
        """The operator's topics this reader follows (a name no longer in the config is ignored)."""
        return tuple(t for t in subscriber.topics if t in self.config.topics)

    def selection(self, subscriber: Subscriber) -> tuple[object, ...]:
        """What a reader's digest depends on beside the papers: readers alike in these share one composed digest."""
        return (
            self._shared(subscriber),
            subscriber.keywords,
            frozenset(subscriber.exclude),
            subscriber.min_score,
            subscriber.max_papers,
            self.today(subscriber).date(),
        )
