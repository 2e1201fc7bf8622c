"""One topic's Atom feed (RFC 4287), written by feedgen; feed text goes in as escaped plain text, links http(s) only."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from feedgen.feed import FeedGenerator

from newsletter.mail.filters import paper_links
from newsletter.model.listing import Listed
from newsletter.model.paper import Paper
from newsletter.model.topics import Topic

MAX_AUTHORS = 50  # a collaboration's thousand names help no feed reader
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Characters XML 1.0 cannot carry at all (lxml refuses them): C0 controls but tab and newlines, surrogates, U+FFFE/F.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def atom(topic: Topic, papers: Sequence[tuple[Listed, Paper]], feed_url: str, page_url: str, base_url: str) -> bytes:
    """The feed of these papers (newest first as given); the same papers always give the same bytes (for ETags)."""
    fg = FeedGenerator()
    fg.id(feed_url)
    fg.title(_text(topic.title))
    if topic.description:
        fg.subtitle(_text(topic.description))
    fg.link(href=feed_url, rel="self", type="application/atom+xml")
    fg.link(href=page_url, rel="alternate", type="text/html")
    fg.author(name="Paper digest")
    fg.updated(max((entry.when for entry, _ in papers), default=_EPOCH))
    for entry, paper in papers:
        item = fg.add_entry(order="append")
        item.id(f"{base_url}/papers/{quote(paper.id, safe='')}")
        item.title(_text(paper.title) or paper.id)
        item.updated(entry.when)
        item.published(entry.when)
        for name in paper.authors[:MAX_AUTHORS]:
            item.author(name=_text(name))
        links = paper_links(paper)
        if links:  # one link only: feedgen 1.0 writes an entry's links without their rel, so every one would be an alternate
            item.link(href=links[0][1])
        if links and paper.abstract:
            item.summary(_text(paper.abstract))
        elif not links:  # an entry without a link must carry its content (RFC 4287 4.1.1)
            item.content(_text(paper.abstract or paper.title or paper.id), type="text")
    xml: bytes = fg.atom_str(pretty=True)
    return xml


def _text(value: str) -> str:
    """Feed text as XML can carry it; lxml escapes the rest."""
    return _NOT_XML.sub("", value)
