"""What subscribers.yaml describes, once checked: settings, sources, topics and subscribers."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import time
from functools import cached_property
from pathlib import Path

from newsletter.errors import Problem
from newsletter.model.addresses import address_key
from newsletter.model.topics import Topic

FREQUENCIES = ("daily", "weekdays", "weekly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
KEYWORDS_TOPIC = "keywords"  # section key of a subscriber's personal keywords
AUTHORS_TOPIC = "authors"  # section key of the authors a subscriber follows (their `author:` keywords)
EXCLUDE_TOPIC = "exclude"  # matcher rule of a subscriber's `exclude:` list: never a section, it takes papers out


@dataclass(frozen=True)
class Settings:
    """Installation-wide defaults from the `settings:` block."""

    timezone: str = "UTC"
    send_at: time = time(7, 0)
    max_papers_per_topic: int = 10
    horizon_days: int = 7
    allow_private_network: bool = False
    catch_up_hours: int = 12  # `run`: a slot missed while down is still sent if this recent
    fetch_every: int = 60  # `run`: minutes between fetches of hf_daily and feed sources
    public_pages: bool = True  # `serve`: the front page's paper listing, topic pages and topic feeds (the subscribe form stays)


@dataclass(frozen=True)
class Subscriber:
    """One reader and what they want to read."""

    email: str
    name: str = ""
    topics: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()  # their own rule; the `author:` ones are the authors they follow
    exclude: tuple[str, ...] = ()  # keywords that take a paper out of their digest, whatever let it in
    min_score: int = 0
    max_papers: int | None = None  # cap on the whole digest
    frequency: str = "daily"
    day: str = "monday"  # for weekly
    send_at: time = time(7, 0)
    timezone: str = "UTC"
    paused: bool = False


@dataclass(frozen=True)
class Config:
    """A validated subscribers.yaml."""

    path: Path
    settings: Settings
    sources: tuple[Source, ...]
    topics: dict[str, Topic]
    subscribers: tuple[Subscriber, ...]
    warnings: tuple[Problem, ...] = ()  # allowed but likely unintended (a comma inside a keyword); `check` prints them

    def subscriber(self, email: str) -> Subscriber | None:
        """Find a subscriber by address, ignoring case; a Unicode domain finds its punycode form."""
        return self._by_address.get(address_key(email))

    def edited(self, removed: Collection[str], added: Sequence[Subscriber], warnings: tuple[Problem, ...]) -> Config:
        """This config without the readers of these lower-cased addresses and with these appended (none of them listed
        yet): the address index, once built, is carried over rather than built again over every reader."""
        kept = tuple(s for s in self.subscribers if s.email.lower() not in removed) if removed else self.subscribers
        out = dataclasses.replace(self, subscribers=(*kept, *added), warnings=warnings)
        if "_by_address" in self.__dict__:  # built (a cached_property lives in the instance's dict)
            index = {key: s for key, s in self._by_address.items() if s.email.lower() not in removed} if removed else dict(self._by_address)
            for s in added:
                index.setdefault(address_key(s.email), s)
            out.__dict__["_by_address"] = index
        return out

    @cached_property
    def _by_address(self) -> dict[str, Subscriber]:
        """Subscribers by `address_key`, the first of each: a web request looks one up among thousands."""
        out: dict[str, Subscriber] = {}
        for s in self.subscribers:
            out.setdefault(address_key(s.email), s)
        return out

    def personal_topics(self, subscriber: Subscriber) -> list[Topic]:
        """The subscriber's followed authors and their other keywords, each a topic of their own shown as its own section."""
        authors = tuple(k for k in subscriber.keywords if is_author_keyword(k))
        words = tuple(k for k in subscriber.keywords if not is_author_keyword(k))
        out = [Topic(name=own_rule_name(AUTHORS_TOPIC, subscriber.email), title="Followed authors", any=authors)] if authors else []
        return out + ([Topic(name=own_rule_name(KEYWORDS_TOPIC, subscriber.email), title="Your keywords", any=words)] if words else [])

    def own_rules(self, subscriber: Subscriber) -> list[Topic]:
        """Every rule the subscriber wrote for themselves (followed authors, keywords, exclude), each a matcher topic."""
        excluded = self.exclude_topic(subscriber)
        return self.personal_topics(subscriber) + ([excluded] if excluded else [])

    def exclude_topic(self, subscriber: Subscriber) -> Topic | None:
        """The subscriber's `exclude:` list as a rule: a paper it takes stays out of their digest."""
        if not subscriber.exclude:
            return None
        return Topic(name=own_rule_name(EXCLUDE_TOPIC, subscriber.email), title="Excluded", any=subscriber.exclude)


def own_rule_name(kind: str, email: str) -> str:
    """The topic name of one subscriber's own rule of this kind (AUTHORS_TOPIC, KEYWORDS_TOPIC, EXCLUDE_TOPIC): the
    section key their digest shows it under, and the name the matcher and the planner know it by."""
    return f"{kind}:{email.lower()}"


def is_author_keyword(keyword: str) -> bool:
    """Whether a personal keyword follows an author (`author:Name`): those make the "Followed authors" section."""
    return keyword.strip()[:7].lower() == "author:"


SOURCE_TYPES: tuple[str, ...] = ("hf_daily", "arxiv_rss", "arxiv_api", "feed")


@dataclass(frozen=True)
class Source:
    """One configured source: where to fetch and how to read what comes back."""

    name: str
    type: str  # hf_daily | arxiv_rss | arxiv_api | feed
    url: str | None = None  # overrides the default URL; for feed it is required
    categories: tuple[str, ...] = ()  # arxiv_rss
    announce_types: tuple[str, ...] = ("new", "cross")  # arxiv_rss
    query: str | None = None  # arxiv_api
    max_results: int = 100  # arxiv_api
    days: int = 1  # hf_daily
    replace: bool = False  # a new version (v2) of an already-sent paper is news again (arxiv_rss reads replace entries too)
    timeout: float | None = None  # seconds per HTTP exchange; None: the fetch policy's default
