"""Each reader's editions on the web: the page of one edition (every paper it holds, as the mail grouped them)
and a private Atom feed of them, both opened by signed links and read only."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cachetools import LRUCache
from feedgen.feed import FeedGenerator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.config.edit import SubscriberFile
from newsletter.environment import Env
from newsletter.errors import ConfigError, StorageError
from newsletter.mail import tokens
from newsletter.mail.filters import format_day
from newsletter.mail.render import Renderer
from newsletter.model.digest import Layout, count_phrase, edition_digest, subscriber_topics
from newsletter.model.topics import Matcher, Topic
from newsletter.storage.ledger import Edition
from newsletter.storage.store import Store

log = logging.getLogger("newsletter.web")
FEED_ENTRIES = 50  # latest editions in a reader's feed
CACHED_PAGES = 128  # rendered edition pages kept (about 100 KB each)
CACHED_MATCHERS = 256  # compiled matchers kept, one per distinct topic selection


class Editions:
    """The edition page and the reader's feed; nothing here writes (GET only, mail scanners open every link)."""

    def __init__(self, env: Env, config_path: Path, secret: str) -> None:
        self.env = env
        self.config_path = config_path
        self.secret = secret
        self.renderer = Renderer(env.base_url, env.templates)
        # Pages rendered, by edition, the reader's topics as they stand and the papers' last change: readers who
        # got one edition (all who share its topics) open the same page, and it is built once for them.
        self.pages: LRUCache[tuple[str, bool, str, str], str] = LRUCache(CACHED_PAGES)
        self.lock = threading.Lock()
        # Matchers by the topics they compile: readers sharing a selection share one, and compiling one took a sixth of a page
        self.matchers: LRUCache[tuple[Topic, ...], Matcher] = LRUCache(CACHED_MATCHERS)

    def matcher(self, topics: Sequence[Topic]) -> Matcher:
        """A matcher of these topics, compiled once while they stand (matching is thread-safe; the cache is guarded)."""
        key = tuple(topics)
        with self.lock:
            matcher = self.matchers.get(key)
        if matcher is None:
            matcher = Matcher(topics)
            with self.lock:
                self.matchers[key] = matcher
        return matcher

    async def page(self, request: Request) -> Response:
        return await run_in_threadpool(self._page, request.path_params["token"])

    async def feed(self, request: Request) -> Response:
        return await run_in_threadpool(self._feed, request.path_params["token"])

    def _page(self, token: str) -> Response:
        try:
            config = SubscriberFile(self.config_path).load()
            link = open_link(self.secret, token, config.settings.horizon_days)
            if link is None:
                return self.not_found()
            subscriber = config.subscriber(link.email)
            topics = subscriber_topics(config, subscriber) if subscriber else []
            with Store(self.env.db, self.env.db_timeout) as store:
                layout = link_layout(store, link)
                if layout is None:
                    return self.not_found()
                preview = isinstance(link, tokens.PreviewLink)
                cache_key = (layout.key, preview, repr(topics), store.papers_version(layout.ids))
                with self.lock:
                    html = self.pages.get(cache_key)
                papers = {p.id: p for p in store.papers_by_id(layout.ids)} if html is None else {}
        except (ConfigError, StorageError) as exc:
            return self.unavailable(exc)
        if html is None:
            digest = edition_digest(layout, papers, topics, self.matcher(topics))
            title = f"{'Preview of your' if preview else 'Your'} paper digest · {format_day(layout.day)}"
            with self.lock:  # the caches here and the renderer's are shared by the request threads
                html = self.pages[cache_key] = self.renderer.page(
                    "web/edition.html", digest, title=title, preview=preview, shown={pid for s in layout.sections for pid in s.shown}
                )
        return HTMLResponse(html)

    def _feed(self, token: str) -> Response:
        claim = tokens.verify(self.secret, tokens.FEED, token)
        try:
            with Store(self.env.db, self.env.db_timeout) as store:
                version = store.link_version(claim.value) if claim else 0
                if claim is None or claim.version < version:
                    return self.not_found()
                editions = store.editions(claim.value, FEED_ENTRIES)
        except StorageError as exc:
            return self.unavailable(exc)
        body = atom(self.env.base_url, self.secret, claim.value, version, f"{self.env.base_url}/feeds/{token}.atom", editions)
        return Response(body, media_type="application/atom+xml")

    def not_found(self) -> Response:
        """The one answer to a link that is tampered with, someone else's, aged out or revoked: it says which of these it was to nobody."""
        return self.message("This page does not exist", "The link may have expired or been cut off by your mail program.", 404)

    def unavailable(self, exc: Exception) -> Response:
        log.error("edition page failed: %s", exc)
        return self.message("Please try again later", "This page cannot be shown just now; please try again in a few minutes.", 503)

    def message(self, title: str, text: str, status: int) -> Response:
        return HTMLResponse(self.renderer.template("web/message.html").render(title=title, text=text, home=True), status_code=status)


def open_link(secret: str, token: str, horizon_days: int) -> tokens.EditionLink | tokens.PreviewLink | None:
    """What an edition's link, or the link of a digest `newsletter preview` showed, opens; None for any other token."""
    return tokens.read_edition(secret, token, horizon_days) or tokens.read_preview(secret, token)


def link_layout(store: Store, link: tokens.EditionLink | tokens.PreviewLink) -> Layout | None:
    """The layout the link opens: the edition's, from the ledger, or the preview's own; None once the reader's links were revoked past it."""
    if isinstance(link, tokens.EditionLink):
        return store.edition_layout(link.email, link.layout_key, link.version)
    return link.layout if link.version >= store.link_version(link.email) else None


def edition_link(base_url: str, secret: str, email: str, version: int, layout: Layout) -> str:
    """A fresh link to one reader's page of one edition, at their current link version."""
    return f"{base_url}/editions/{tokens.edition(secret, email, layout.key, version)}"


def atom(base_url: str, secret: str, email: str, version: int, self_url: str, editions: list[Edition]) -> bytes:
    """The reader's editions as an Atom feed: an entry per edition, linking to its page. Ids are stable and
    name no address, nor tell two readers' entries of one edition alike (they are keyed by the secret)."""
    fg = FeedGenerator()
    fg.id(_urn(secret, email.lower()))
    fg.title("Your paper digest")
    fg.subtitle("Every edition mailed to you, each with all its papers")
    fg.author({"name": "Paper digest"})
    fg.link(href=self_url, rel="self", type="application/atom+xml")
    fg.link(href=f"{base_url}/", rel="alternate", type="text/html")
    fg.updated(editions[0].updated if editions else datetime.now(UTC))
    for edition in editions:
        layout = edition.layout
        entry = fg.add_entry(order="append")
        entry.id(_urn(secret, f"{email.lower()}\0{layout.key}"))
        entry.title(f"Paper digest · {format_day(layout.day)} · {count_phrase(layout.shown, layout.total)}")
        entry.link(href=edition_link(base_url, secret, email, version, layout), rel="alternate", type="text/html")
        entry.updated(edition.updated)
        entry.summary(" · ".join(f"{s.title} ({len(s.ids)})" for s in layout.sections))
    body: bytes = fg.atom_str(pretty=True)
    return body


def _urn(secret: str, value: str) -> str:
    return uuid.UUID(bytes=hashlib.blake2b(value.encode(), key=secret.encode()[:64], digest_size=16).digest()).urn
