"""Which URLs a source fetches and which reader turns its bytes into papers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import quote, urlencode

from newsletter.ingest.arxiv import (
    API_PAGE_SIZE,
    ARXIV_API_BASE,
    ARXIV_RSS_BASE,
    api_papers,
    next_api_url,
    rss_papers,
)
from newsletter.ingest.feeds import feed_papers, read_feed
from newsletter.ingest.hf import HF_DAILY_BASE, hf_papers
from newsletter.model.config import SOURCE_TYPES, Source
from newsletter.model.paper import Paper, merge


@dataclass
class Parsed:
    """What one fetched document yielded, plus the next page to fetch when the source pages."""

    papers: list[Paper]
    entries: int  # items the document listed, before any filtering: 0 is an empty feed
    next_url: str | None = None  # arxiv_api paging; None otherwise


# --------------------------------------------------------------------------- URLs


def first_urls(source: Source, today: date) -> list[str]:
    """The URLs to fetch for one run (hf_daily: one per day; arxiv_api: first page; others: one).

    Raises ValueError for a source the config should have rejected (unknown type, nothing to fetch).
    """
    if source.type not in SOURCE_TYPES:
        raise ValueError(f"source {source.name!r}: unknown type {source.type!r}")
    if source.url:
        return [source.url]
    if source.type == "hf_daily":
        days = [today - timedelta(days=n) for n in range(max(1, source.days))]
        return [f"{HF_DAILY_BASE}?{urlencode({'date': day.isoformat()})}" for day in days]
    if source.type == "arxiv_rss" and source.categories:
        return [ARXIV_RSS_BASE + "+".join(quote(c.strip(), safe=".-") for c in source.categories)]
    if source.type == "arxiv_api" and source.query:
        params = {
            "search_query": source.query,
            "start": 0,
            "max_results": min(API_PAGE_SIZE, max(1, source.max_results)),
            "sortBy": "submittedDate",
            "sortOrder": "descending",
        }
        return [f"{ARXIV_API_BASE}?{urlencode(params)}"]
    need = {"feed": "url", "arxiv_rss": "categories or url", "arxiv_api": "query or url"}[source.type]
    raise ValueError(f"source {source.name!r}: type {source.type} needs {need}")


# --------------------------------------------------------------------------- parsing


def parse(source: Source, body: bytes, url: str, content_type: str | None = None) -> Parsed:
    """Turn one fetched document into papers; raises SourceError for documents that are errors or unusable."""
    if source.type == "hf_daily":
        papers = _collect(hf_papers(source, body))
        return Parsed(papers, len(papers))
    if source.type not in SOURCE_TYPES:
        raise ValueError(f"source {source.name!r}: unknown type {source.type!r}")
    doc = read_feed(body, url, content_type)
    if source.type == "arxiv_rss":
        return Parsed(_collect(rss_papers(source, doc)), len(doc.entries))
    if source.type == "arxiv_api":
        return Parsed(_collect(api_papers(source, doc)), len(doc.entries), next_api_url(source, doc, url))
    return Parsed(_collect(feed_papers(source, doc)), len(doc.entries))


def _collect(papers: Iterable[Paper]) -> list[Paper]:
    """Papers in document order, a paper listed twice merged into its first sighting."""
    seen: dict[str, Paper] = {}
    for paper in papers:
        seen[paper.id] = merge(seen[paper.id], paper) if paper.id in seen else paper
    return list(seen.values())
