"""arXiv's RSS announcements and its Atom query API, with paging."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from feedparser import FeedParserDict

from newsletter.errors import SourceError
from newsletter.ingest.feeds import entry_paper, entry_tags
from newsletter.ingest.fields import entry_date, plain_text, split_authors, unique
from newsletter.ingest.ids import normalize_doi, parse_arxiv_id
from newsletter.model.config import Source
from newsletter.model.paper import Paper

ARXIV_RSS_BASE = "https://rss.arxiv.org/rss/"
ARXIV_API_BASE = "https://export.arxiv.org/api/query"
API_PAGE_SIZE = 100


def _with_start(url: str, start: int, page_size: int) -> str:
    """The same arXiv API query URL, asking for the page that begins at `start`."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("start", "max_results")]
    query += [("start", str(start)), ("max_results", str(page_size))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def rss_papers(source: Source, doc: FeedParserDict) -> Iterator[Paper]:
    """Papers from rss.arxiv.org, filtered by announce type; arXiv's error channel raises."""
    channel_title = plain_text(doc.feed.get("title"))
    if channel_title.lower().startswith("feed error for query"):
        detail = plain_text(doc.feed.get("description") or doc.feed.get("subtitle"))
        raise SourceError(f"arXiv RSS {channel_title}: {detail}"[:500])
    wanted = {t.strip().lower() for t in source.announce_types}
    if source.replace:
        wanted |= {"replace", "replace-cross"}
    for entry in doc.entries:
        announce = plain_text(entry.get("arxiv_announce_type")).lower() or None
        if announce and announce not in wanted:
            continue
        guid, link = entry.get("id"), entry.get("link")
        found = parse_arxiv_id(guid) or parse_arxiv_id(link)  # else the description's "arXiv:…" line (entry_paper)
        doi = normalize_doi(entry.get("arxiv_doi"))
        authors = [name for a in entry.get("authors") or [] for name in split_authors(a.get("name"), comma_separated=True)]
        categories = entry_tags(entry)  # rss.arxiv.org lists the primary category first
        paper = entry_paper(
            source,
            found=found,
            candidates=(guid, link),
            doi=doi,
            title=plain_text(entry.get("title")),
            abstract=plain_text(entry.get("summary"), paragraphs=True),
            authors=authors,
            categories=categories,
            link=link,
            published=entry_date(entry),
            announce_type=announce,
            journal_ref=plain_text(entry.get("arxiv_journal_reference")) or None,
            primary_category=categories[0] if categories else None,
        )
        if paper:
            yield paper


def api_papers(source: Source, doc: FeedParserDict) -> Iterator[Paper]:
    """Papers from an export.arxiv.org Atom response; the API's error feed raises."""
    for entry in doc.entries:
        if "/api/errors" in str(entry.get("id") or ""):
            message = plain_text(entry.get("summary")) or plain_text(entry.get("title")) or "unknown error"
            raise SourceError(f"arXiv API error: {message}"[:500])
    for entry in doc.entries:
        primary = entry.get("arxiv_primary_category") or {}
        categories = unique([plain_text(primary.get("term")) if isinstance(primary, dict) else "", *entry_tags(entry)])
        paper = entry_paper(
            source,
            found=parse_arxiv_id(entry.get("id")) or parse_arxiv_id(entry.get("link")),
            candidates=(entry.get("id"), entry.get("link")),
            doi=normalize_doi(entry.get("arxiv_doi")),
            title=plain_text(entry.get("title")),
            abstract=plain_text(entry.get("summary"), paragraphs=True),
            authors=[name for a in entry.get("authors") or [] for name in split_authors(a.get("name"), comma_separated=True)],
            categories=categories,
            link=entry.get("link"),
            published=entry_date(entry),
            journal_ref=plain_text(entry.get("arxiv_journal_ref")) or None,
            arxiv_comment=plain_text(entry.get("arxiv_comment")) or None,
            primary_category=categories[0] if categories else None,
        )
        if paper:
            yield paper


def next_api_url(source: Source, doc: FeedParserDict, url: str) -> str | None:
    """The next arXiv API page, or None once the results or the source's max_results are exhausted."""
    feed = doc.feed
    try:
        total = int(feed.get("opensearch_totalresults"))
        start = int(feed.get("opensearch_startindex") or 0)
        per_page = int(feed.get("opensearch_itemsperpage") or len(doc.entries))
    except (TypeError, ValueError):
        return None
    if not doc.entries or per_page <= 0:
        return None  # an empty page would repeat forever
    next_start = start + per_page
    limit = min(total, source.max_results)
    if next_start >= limit:
        return None
    return _with_start(url, next_start, min(per_page, limit - next_start))
