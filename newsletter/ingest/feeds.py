"""Any RSS 0.9x/1.0/2.0 or Atom feed through feedparser, and the Paper built from one entry."""

from __future__ import annotations

import codecs
import io
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import feedparser
from feedparser import FeedParserDict

from newsletter.errors import SourceError
from newsletter.ingest.blocks import read_block
from newsletter.ingest.fields import (
    HTML_TYPES,
    entry_date,
    fold_space,
    plain_text,
    split_authors,
    unique,
)
from newsletter.ingest.ids import (
    arxiv_links,
    canonical_id,
    http_url,
    normalize_doi,
    parse_arxiv_id,
)
from newsletter.model.config import Source
from newsletter.model.paper import Paper

log = logging.getLogger("newsletter")

# Warnings about a document feedparser still parsed as well-formed XML: a recognised feed with
# no entries and only these complaints is an empty feed, not a broken one.
_HARMLESS_BOZO = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)


def read_feed(body: bytes, url: str, content_type: str | None) -> FeedParserDict:
    """feedparser's reading of the bytes; SourceError when they are not a feed at all.

    The bytes go in as a stream: feedparser opens a bytes/str argument as a local file path when
    one exists by that name, which a hostile server must never be able to trigger. feedparser's
    HTML sanitiser and URI resolver are off because they rewrite text (they turn "$a<b$" into
    tags); plain_text strips markup itself.
    """
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    body = utf8_repaired(body, url, content_type)
    try:
        doc = feedparser.parse(io.BytesIO(body), response_headers=headers, sanitize_html=False, resolve_relative_uris=False)
    except Exception as exc:  # feedparser on hostile input: whatever it raises, the document is unusable
        raise SourceError(f"not a feed: {type(exc).__name__}: {exc}") from exc
    problem = doc.get("bozo_exception")
    broken = doc.get("bozo") and not doc.entries and not (doc.get("version") and isinstance(problem, _HARMLESS_BOZO))
    if broken or (not doc.get("version") and not doc.entries):  # neither RSS nor Atom: an empty body, an HTML page, other XML
        what = _what_it_is(body, content_type)
        if what is None:
            what = f"{type(problem).__name__}: {problem}" if broken and problem else "a document that is neither RSS nor Atom"
        raise SourceError(f"not a feed: {what}")
    return doc


def _what_it_is(body: bytes, content_type: str | None) -> str | None:
    """What came back instead of a feed when it is plain to see: nothing, or an HTML page (often a login or error
    page behind a feed's old address); None otherwise."""
    served = f" (served as {content_type.split(';')[0].strip()})" if content_type else ""
    if not body.strip():
        return f"the response was empty ({len(body)} bytes){served}"
    head = body[:2048].lower()
    if b"<html" in head or b"<!doctype html" in head:
        title = re.search(rb"<title[^>]*>([^<]{1,120})", body[:8192], re.IGNORECASE)
        text = fold_space("".join(c for c in title[1].decode("utf-8", "replace") if c.isprintable())) if title else ""
        named = f" titled {text!r}" if text else ""
        return f"an HTML page{named}{served}, perhaps a login or error page: check the source's url"
    return None


_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._-]+)""", re.IGNORECASE)
_UTF8 = ("utf-8", "utf8")
_MOSTLY = 0.01  # more invalid bytes than this share of the text: not UTF-8 after all, let feedparser guess


def utf8_repaired(body: bytes, url: str, content_type: str | None) -> bytes:
    """A document meant as UTF-8 that holds a few invalid bytes keeps its good text, each bad byte becoming
    U+FFFD. Left alone, feedparser reads the whole document as Windows-1252 and every non-ASCII title and
    abstract turns to mojibake (and arXiv's "Announce Type" prefix is no longer recognised)."""
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return body
    declared = _XML_ENCODING.match(body[:512])
    charset = _CHARSET.search(content_type or "")
    for name in (declared[1].decode() if declared else None, charset[1] if charset else None):
        if name is not None and name.lower() not in _UTF8:
            return body
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
    bad = text.count("\ufffd") - body.count("\ufffd".encode())  # some feeds carry U+FFFD already
    if bad > len(text) * _MOSTLY:
        return body
    log.warning("%s: %d invalid UTF-8 byte%s replaced by U+FFFD; the rest of the feed is read as UTF-8", url, bad, "" if bad == 1 else "s")
    return text.encode("utf-8")


def _detail_is_html(entry: FeedParserDict, key: str) -> bool:
    """Whether feedparser saw the entry's `key` field declared as HTML."""
    detail = entry.get(f"{key}_detail") or {}
    return str(detail.get("type") or "").lower() in HTML_TYPES


def entry_tags(entry: FeedParserDict) -> tuple[str, ...]:
    """The entry's category terms as plain text."""
    return unique(plain_text(tag.get("term")) for tag in entry.get("tags") or [] if isinstance(tag, dict))


def feed_papers(source: Source, doc: FeedParserDict) -> Iterator[Paper]:
    """Papers from any RSS 0.9x/1.0/2.0 or Atom feed (journals, bioRxiv, PubMed, digests)."""
    for entry in doc.entries:
        guid, link = entry.get("id"), entry.get("link")
        entry_links = [item for item in entry.get("links") or [] if isinstance(item, dict)]
        hrefs = [item.get("href") for item in entry_links]
        pdf = next((item.get("href") for item in entry_links if item.get("type") == "application/pdf"), None)
        found = next(filter(None, map(parse_arxiv_id, (guid, link, *hrefs))), None)
        doi_fields = (entry.get("prism_doi"), entry.get("dc_identifier"), guid, link, *hrefs)
        doi = next(filter(None, map(normalize_doi, doi_fields)), None)
        texts = [(entry.get("summary"), _detail_is_html(entry, "summary"))]
        texts += [(c.get("value"), str(c.get("type") or "").lower() in HTML_TYPES) for c in entry.get("content") or []]
        abstracts = [plain_text(value, html=is_html, paragraphs=True) for value, is_html in texts]
        raw_authors = [a.get("name") for a in entry.get("authors") or [] if isinstance(a, dict)] or [entry.get("author")]
        paper = entry_paper(
            source,
            found=found,
            candidates=(guid, link),
            doi=doi,
            title=plain_text(entry.get("title"), html=_detail_is_html(entry, "title")),
            abstract=max(abstracts, key=len),
            authors=[name for raw in raw_authors for name in split_authors(raw)],
            categories=entry_tags(entry),
            link=link,
            published=entry_date(entry),
            pdf=pdf,
        )
        if paper:
            yield paper


def entry_paper(
    source: Source,
    *,
    found: tuple[str, int | None] | None,
    candidates: tuple[Any, ...],
    doi: str | None,
    title: str,
    abstract: str,
    authors: Iterable[str],
    categories: Iterable[str],
    link: Any,
    published: datetime | None,
    announce_type: str | None = None,
    journal_ref: str | None = None,
    pdf: Any = None,
    arxiv_comment: str | None = None,
    primary_category: str | None = None,
) -> Paper | None:
    """Assemble one Paper with its canonical id and links; None when the entry names nothing at all.

    A metadata block in the abstract ("Authors: … Abstract: …") is read here, once for every kind of
    feed, and fills what the entry's own elements left empty.
    """
    block = read_block(abstract)
    meta = block.fields
    found = found or parse_arxiv_id(meta.get("arxiv"))
    authors = list(authors) or split_authors(meta.get("authors"))
    ids = [fold_space(c) for c in candidates if isinstance(c, str)]
    paper_id = found[0] if found else canonical_id(ids, doi)  # not the block's DOI: stored papers keep their ids
    doi = doi or normalize_doi(meta.get("doi"))
    if not paper_id:
        if not title:
            return None
        paper_id = f"title:{title.casefold()}"
    links = {key: url for key, url in (("abstract", http_url(link)), ("pdf", http_url(pdf))) if url}
    if found:
        links = arxiv_links(found[0])
    if doi:
        links["doi"] = f"https://doi.org/{quote(doi, safe='/:;()._-')}"
    upvotes = meta.get("upvotes", "").replace(",", "")
    return Paper(
        id=paper_id,
        title=title,
        abstract=block.abstract,
        authors=unique(authors),
        categories=tuple(categories),
        links=links,
        published=published,
        sources=(source.name,),
        score=int(upvotes) if upvotes.isdecimal() and upvotes.isascii() else None,
        version=found[1] if found else None,
        announce_type=announce_type or meta.get("announce", "").lower() or None,
        doi=doi,
        journal_ref=journal_ref or meta.get("journal"),
        arxiv_comment=arxiv_comment or meta.get("comment"),
        primary_category=primary_category,
    )
