"""The helpers templates call: escaping and marking feed text, snippets, author lists, dates, links."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from datetime import date, datetime

import nh3
from markupsafe import Markup, escape

from newsletter.model.paper import Paper

ABSTRACT_CHARS = 420
MAX_AUTHORS = 4
MAX_URL_CHARS = 500  # longer links are dropped: they would only break lines and layouts


# What may survive of feed text inside HTML: our own <mark> and simple inline markup, links only http(s).
ALLOWED_TAGS = {"mark", "b", "i", "em", "strong", "sub", "sup", "code", "a"}


def highlight(text: str, spans: Sequence[tuple[int, int]], limit: int | None = None) -> Markup:
    """Escape text and wrap matched spans in <mark>, optionally cut as a snippet first; nh3 has the last word."""
    return sanitise("".join(f"<mark>{escape(part)}</mark>" if marked else str(escape(part)) for part, marked in _marked(text, spans, limit)))


def sanitise(markup: str) -> Markup:
    """Allow-list HTML from anywhere near a feed: unknown tags and attributes go, links stay http(s) only."""
    return Markup(nh3.clean(markup, tags=ALLOWED_TAGS, attributes={"a": {"href"}}, url_schemes={"http", "https"}, link_rel="noopener"))


def mark_text(text: str, spans: Sequence[tuple[int, int]], limit: int | None = None) -> str:
    """Plain-text counterpart of highlight: matched words as *word*."""
    return "".join(f"*{part}*" if marked else part for part, marked in _marked(text, spans, limit))


def _marked(text: str, spans: Sequence[tuple[int, int]], limit: int | None) -> list[tuple[str, bool]]:
    """The (snippet of the) text as pieces, each flagged when a matcher span covers it; spans past the cut are dropped."""
    cut = snippet(text, limit) if limit else text
    end_of_cut = len(cut.rstrip("…"))
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for start, end in spans:
        if start < pos or end > end_of_cut:
            continue
        pieces += [(cut[pos:start], False), (cut[start:end], True)]
        pos = end
    pieces.append((cut[pos:], False))
    return pieces


def snippet(text: str, limit: int = ABSTRACT_CHARS) -> str:
    """Cut at the last sentence end before the limit, else at a word boundary, with an ellipsis.

    Only cut, never reflowed: the matcher's spans index the original text, and must still fit the snippet.
    """
    if len(text) <= limit:
        return text
    head = text[:limit]
    sentence = max(head.rfind(end + gap) for end in ".?!" for gap in " \n")
    if sentence >= limit // 2:
        return head[: sentence + 1]
    space = max(head.rfind(" "), head.rfind("\n"))
    return (head[:space] if space > 0 else head).rstrip(",;:") + "…"


def authors(names: Sequence[str], limit: int = MAX_AUTHORS) -> str:
    """First few authors, then et al."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + " et al."


def wrap(text: str, width: int = 76, indent: str = "") -> str:
    """Wrap plain text for a terminal, keeping long URLs whole."""
    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def format_day(value: date | datetime | None) -> str:
    """25 Nov 2026: unambiguous in every locale."""
    return f"{value.day} {value:%b %Y}" if value else ""


def source_label(paper: Paper) -> str:
    """Where a paper came from, readably: arXiv and Hugging Face by name, other feeds by their source name."""
    labels = []
    if _ARXIV_ID.match(paper.id):
        labels.append("arXiv")
    if paper.links.get("hf") or paper.score is not None:
        labels.append("Hugging Face")
    if not labels:
        labels.extend(paper.sources)
    return " · ".join(labels)


def paper_links(paper: Paper) -> list[tuple[str, str]]:
    """Labelled http(s) links for a paper, in reading order."""
    labels = [("abstract", "Abstract"), ("pdf", "PDF"), ("code", "Code"), ("project", "Project"), ("hf", "Hugging Face"), ("doi", "DOI")]
    return [(label, paper.links[key]) for key, label in labels if _safe_url(paper.links.get(key))]


_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})$")


def _safe_url(url: str | None) -> bool:
    return bool(url) and len(url or "") <= MAX_URL_CHARS and re.match(r"^https?://[^\s<>\"']+$", url or "") is not None
