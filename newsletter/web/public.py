"""The public pages: the latest papers on the front page, each topic day by day, and each topic's Atom feed.

Built from the stored papers and the topic rules (no page is stored); the app serves them and `newsletter archive`
writes them out as files, through the same code.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cachetools import LRUCache
from markupsafe import Markup

from newsletter.mail.render import Renderer
from newsletter.model.config import Config
from newsletter.model.digest import Entry
from newsletter.model.listing import Listed, Listing
from newsletter.model.topics import Topic
from newsletter.storage.store import Store
from newsletter.web.atom import atom

FRONT_DAYS = 2  # days the front page shows
FRONT_PER_TOPIC = 5  # papers per topic and day on the front page (about 100 KB with a dozen topics); the topic's page has the rest
FRONT_WITHOUT_TOPICS = 100  # papers per day on the front page of an installation with no topics (no topic page to send the rest to)
FEED_ENTRIES = 50
CACHED_ENTRIES = 8192  # papers kept decoded and marked for the pages: a few days of every topic
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


def segment(name: str) -> str:
    """A topic's part of a URL and of a file path: its name when that is plainly safe, else a digest of it."""
    if _SEGMENT.match(name) and not name.endswith(".atom") and len(name) <= 80:
        return name
    return "t-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Links:
    """Where the public pages point: the app's routes, or (static) the files of an export, relative to the page."""

    static: bool = False
    up: str = ""  # static: from this page back to the site's root, e.g. "../../"

    def at(self, depth: int) -> Links:
        return Links(self.static, "../" * depth)

    def front(self) -> str:
        return self.up + "index.html" if self.static else "/"

    def topic(self, seg: str, day: date | None = None) -> str:
        path = f"topics/{seg}" + (f"/{day.isoformat()}" if day else "")
        return f"{self.up}{path}/index.html" if self.static else f"/{path}"

    def feed(self, seg: str) -> str:
        return f"{self.up}topics/{seg}.atom" if self.static else f"/topics/{seg}.atom"

    def style(self) -> str:
        return self.up + "style.css" if self.static else "/style.css"

    def absolute(self, base_url: str, seg: str) -> tuple[str, str]:
        """A topic's feed and page as absolute URLs, for the feed itself."""
        page = f"{base_url}/topics/{seg}" + ("/" if self.static else "")
        return f"{base_url}/topics/{seg}.atom", page


@dataclass(frozen=True)
class Shelf:
    """One topic's papers of one day on a page."""

    topic: Topic | None  # None: the front page of an installation without topics
    segment: str
    entries: tuple[Entry, ...]
    more: int  # papers of this shelf the page leaves out
    total: int  # every paper of the topic that day (its page's count)


@dataclass(frozen=True)
class Day:
    day: date
    shelves: tuple[Shelf, ...]


class PublicSite:
    """Keeps the listing in step with the store and renders the pages and feeds; one lock serialises both (the
    listing and the renderer's card cache are shared by the app's threads)."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self._lock = threading.Lock()
        self._listing: Listing | None = None
        # Card entries of the papers shown lately, by (id, the topic whose page shows them; None on the front page).
        self._entries_made: LRUCache[tuple[str, str | None], tuple[Listed, Entry]] = LRUCache(CACHED_ENTRIES)
        # The front page's days as rendered, for the listing as it stood: every visitor's page holds them (their form differs).
        self._front_days: tuple[tuple[Listing, int, Links], list[Day], Markup] | None = None

    def _refresh(self, store: Store, topics: Sequence[Topic]) -> Listing:
        """The listing for these topics, with every paper added or merged since the last call; rebuilt when the rules change."""
        listing = self._listing
        if listing is None or listing.topics != tuple(topics):
            listing = self._listing = Listing(topics)
        for changed in store.papers_changed_since(listing.watermark):
            if changed.pruned:
                listing.drop(changed.paper.id, changed.changed)
            else:
                listing.add(changed.paper, changed.first_seen, changed.changed)
        return listing

    def warm(self, store: Store, config: Config) -> None:
        """Build the listing now (seconds for tens of thousands of papers) rather than on the first visitor's request."""
        with self._lock:
            self._refresh(store, list(config.topics.values()))

    def topic(self, config: Config, seg: str) -> Topic | None:
        return next((t for t in config.topics.values() if segment(t.name) == seg), None)

    def front(self, store: Store, config: Config, links: Links, **form: Any) -> str:
        """The front page: the subscribe form (given its fields; a static export has none), then the latest days' papers."""
        with self._lock:
            listing = self._refresh(store, list(config.topics.values()))
            key = (listing, listing.watermark, links)
            if self._front_days is None or self._front_days[0] != key:
                plan = [(day, self._front_shelves(listing, config, day)) for day in listing.days()[:FRONT_DAYS]]
                shown = [
                    Day(day, tuple(self._shelf(store, listing, config, t, kept, more, total) for t, kept, more, total in shelves)) for day, shelves in plan
                ]
                self._front_days = (key, shown, Markup(self._page("web/front_days.html", links, config, days=shown)))
            _, days, days_html = self._front_days
            return self._page("web/front.html", links, config, days=days, days_html=days_html, **form)

    def _front_shelves(self, listing: Listing, config: Config, day: date) -> list[tuple[Topic | None, list[Listed], int, int]]:
        """A day on the front page: each paper once, under its first topic (as in the digest), each topic cut to its best few."""
        listed = listing.on(day)
        if not config.topics:
            return [(None, listed[:FRONT_WITHOUT_TOPICS], max(0, len(listed) - FRONT_WITHOUT_TOPICS), len(listed))]
        firsts: dict[str, list[Listed]] = {}
        for e in listed:
            firsts.setdefault(e.topics[0], []).append(e)
        out: list[tuple[Topic | None, list[Listed], int, int]] = []
        for topic in config.topics.values():
            mine = firsts.get(topic.name, [])
            if mine:
                out.append((topic, mine[:FRONT_PER_TOPIC], len(mine) - min(len(mine), FRONT_PER_TOPIC), listing.count(day, topic.name)))
        return out

    def topic_page(self, store: Store, config: Config, topic: Topic, day: date | None, links: Links) -> str | None:
        """A topic's papers of one day (its latest when no day is given), with the days before and after; None for a day without papers."""
        with self._lock:
            listing = self._refresh(store, list(config.topics.values()))
            days = listing.days(topic.name)
            day = day or (days[0] if days else None)
            if day is not None and day not in days:
                return None
            listed = listing.on(day, topic.name) if day else []
            shelf = self._shelf(store, listing, config, topic, listed, 0, len(listed), primary=topic.name)
            i = days.index(day) if day else 0
            older = days[i + 1] if i + 1 < len(days) else None
            newer = days[i - 1] if day and i > 0 else None
            return self._page("web/topic.html", links, config, topic=topic, seg=segment(topic.name), day=day, shelf=shelf, older=older, newer=newer)

    def feed(self, store: Store, config: Config, topic: Topic, links: Links, base_url: str) -> bytes:
        """The topic's newest papers as Atom."""
        with self._lock:
            listing = self._refresh(store, list(config.topics.values()))
            newest = listing.newest(topic.name, FEED_ENTRIES)
            papers = {entry.paper.id: entry.paper for entry in self._entries(store, listing, config, newest, topic.name)}
        feed_url, page_url = links.absolute(base_url, segment(topic.name))
        return atom(topic, [(e, papers[e.id]) for e in newest if e.id in papers], feed_url, page_url, base_url)

    def days(self, store: Store, config: Config, topic: Topic) -> list[date]:
        """Every day the topic has papers on, newest first (what a static export writes a page for)."""
        with self._lock:
            return self._refresh(store, list(config.topics.values())).days(topic.name)

    def _shelf(
        self, store: Store, listing: Listing, config: Config, topic: Topic | None, listed: Sequence[Listed], more: int, total: int, primary: str | None = None
    ) -> Shelf:
        return Shelf(topic, segment(topic.name) if topic else "", tuple(self._entries(store, listing, config, listed, primary)), more, total)

    def _entries(self, store: Store, listing: Listing, config: Config, listed: Sequence[Listed], primary: str | None) -> list[Entry]:
        """The cards' entries, made once per listed paper and kept: tagged with the paper's other topics and marked with the
        words that matched, as in the digest (marking is the costly part of a page). A paper gone from the store is left out."""
        made: dict[str, Entry] = {}
        missing: dict[str, Listed] = {}
        for e in listed:
            hit = self._entries_made.get((e.id, primary))
            if hit is not None and hit[0] is e:  # a changed paper is listed anew, so an older entry of it is never reused
                made[e.id] = hit[1]
            else:
                missing[e.id] = e
        for paper in store.papers_by_id(missing):
            e = missing[paper.id]
            first = primary or (e.topics[0] if e.topics else None)
            tags = tuple(config.topics[name].title for name in e.topics if name != first and name in config.topics)
            made[e.id] = Entry(paper, tags, listing.matcher.marks(paper, e.topics))
            self._entries_made[(e.id, primary)] = (e, made[e.id])
        return [made[e.id] for e in listed if e.id in made]

    def stylesheet(self) -> str:
        """The pages' stylesheet (web/style.css, overridable like every template)."""
        return self.source("web/style.css")

    def source(self, name: str) -> str:
        """A file of the templates folder as it is (the stylesheet, the sign-up form's script), overridable like every template."""
        source, _, _ = self.renderer.env.loader.get_source(self.renderer.env, name)  # type: ignore[union-attr]
        return source

    def _page(self, name: str, links: Links, config: Config, **context: Any) -> str:
        feeds = [(t.title, links.feed(segment(t.name))) for t in config.topics.values()]
        topics = [(t, segment(t.name)) for t in config.topics.values()]
        return self.renderer.template(name).render(context, links=links, card=self.renderer.page_card, feeds=feeds, topic_links=topics)
