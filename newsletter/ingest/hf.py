"""Hugging Face Daily Papers (JSON): trending score is the upvote count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

from newsletter.errors import SourceError
from newsletter.ingest.fields import iso_datetime, parse_count, plain_text, unique
from newsletter.ingest.ids import arxiv_links, http_url, parse_arxiv_id
from newsletter.model.config import Source
from newsletter.model.paper import Paper

HF_DAILY_BASE = "https://huggingface.co/api/daily_papers"
HF_PAPER_BASE = "https://huggingface.co/papers/"


def hf_papers(source: Source, body: bytes) -> Iterator[Paper]:
    """Papers from huggingface.co/api/daily_papers: upvotes, comments, code and project links."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise SourceError(f"Hugging Face daily papers: not JSON ({type(exc).__name__}: {exc})"[:500]) from exc
    if isinstance(data, dict) and "error" in data:
        raise SourceError(f"Hugging Face daily papers error: {plain_text(str(data['error']))}"[:500])
    if not isinstance(data, list):
        raise SourceError(f"Hugging Face daily papers: expected a JSON list, got {type(data).__name__}")
    for item in data:
        info = item.get("paper") if isinstance(item, dict) else None
        if not isinstance(info, dict):
            continue
        raw_id = info.get("id")
        hf_id = raw_id if isinstance(raw_id, str) else ""
        found = parse_arxiv_id(hf_id)
        hf_link = f"{HF_PAPER_BASE}{quote(hf_id.strip(), safe='.')}" if hf_id.strip() else None
        title = plain_text(info.get("title")) or plain_text(item.get("title"))
        paper_id = found[0] if found else hf_link
        if not paper_id:
            continue
        extra = {"hf": hf_link, "code": http_url(info.get("githubRepo")), "project": http_url(info.get("projectPage"))}
        links = {**(arxiv_links(found[0]) if found else {}), **{key: url for key, url in extra.items() if url}}
        authors = [a.get("name") for a in info.get("authors") or [] if isinstance(a, dict)]
        raw_keywords = info.get("ai_keywords")
        keywords = raw_keywords if isinstance(raw_keywords, list) else []
        yield Paper(
            id=paper_id,
            title=title,
            abstract=plain_text(info.get("summary") or item.get("summary"), paragraphs=True),
            authors=unique(plain_text(name) for name in authors),
            links=links,
            published=iso_datetime(info.get("publishedAt")) or iso_datetime(item.get("publishedAt")),
            sources=(source.name,),
            score=parse_count(info.get("upvotes")),
            comments=parse_count(item.get("numComments")),
            stars=parse_count(info.get("githubStars")),
            keywords=unique(plain_text(k) for k in keywords),
            ai_summary=plain_text(info.get("ai_summary")) or None,
        )
