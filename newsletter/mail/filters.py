"""The helpers templates call: escaping and marking feed text, snippets, author lists, dates, links."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

import nh3
from markupsafe import Markup, escape

from newsletter.model.paper import Paper
from newsletter.model.topics import Marks

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
    """The (snippet of the) text as pieces, each flagged when a matcher span covers it; spans past the cut are dropped.

    A snippet opens where the text does, unless no matched word is in that opening: then it opens at the
    sentence of the first match (or a few words before it), after an ellipsis, so the card shows why it is there.
    """
    offset = _window(text, spans, limit) if limit else 0
    cut = snippet(text[offset:], limit) if limit else text
    end_of_cut = len(cut.rstrip("…"))
    pieces: list[tuple[str, bool]] = [("…", False)] if offset else []
    pos = 0
    for start, end in ((start - offset, end - offset) for start, end in spans):
        if start < pos or end > end_of_cut:
            continue
        pieces += [(cut[pos:start], False), (cut[start:end], True)]
        pos = end
    pieces.append((cut[pos:], False))
    return pieces


def _window(text: str, spans: Sequence[tuple[int, int]], limit: int) -> int:
    """Where the snippet of `text` opens: 0 when its opening shows a matched word (or none matched), else the
    start of the first match's sentence, or of a word a third of the snippet before the match."""
    if not spans or spans[0][1] <= len(snippet(text, limit).rstrip("…")):
        return 0
    first = spans[0][0]
    sentence = max(text.rfind(end + gap, 0, first) for end in ".?!" for gap in " \n")
    if sentence >= 0 and first - sentence <= limit // 2:
        return sentence + 2
    space = text.rfind(" ", 0, max(first - limit // 3, 0) + 1)
    return space + 1 if space >= 0 else 0


def matched_words(paper: Paper, marks: Marks) -> list[str]:
    """The words that put the paper on the card, once each (case aside): in the title, the abstract, then the
    author names and categories that author:/category: keywords matched."""
    words: dict[str, str] = {}
    for found in [paper.title[a:b] for a, b in marks.title] + [paper.abstract[a:b] for a, b in marks.abstract] + list(marks.values):
        word = " ".join(found.split())
        words.setdefault(word.casefold(), word)
    return list(words.values())


def matched_line(paper: Paper, marks: Marks, limit: int = ABSTRACT_CHARS) -> list[str]:
    """What a card's "Matched:" line lists, so that every card says why it is there: all its matched words
    when an author name or category matched (no mark shows those) or when no marked word is in the title or
    the abstract snippet; else nothing, as the marks say it."""
    if not marks.values:
        if marks.title:
            return []
        if paper.abstract and marks.abstract:
            offset = _window(paper.abstract, marks.abstract, limit)
            end = offset + len(snippet(paper.abstract[offset:], limit).rstrip("…"))
            if any(a >= offset and b <= end for a, b in marks.abstract):
                return []
    return matched_words(paper, marks)


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


_KEEP = "\0"  # a space no line may break at, while wrapping (no feed text or setting has a NUL)


def wrap_items(items: Iterable[str], width: int = 76, indent: str = "", separator: str = " · ") -> str:
    """Short items (a card's "★ 8 stars", "25 Nov 2026") joined by `separator` and wrapped, a line breaking only
    after a separator, so no item comes apart; an item too long for a line of its own wraps inside."""
    room, mark = width - len(indent), separator.rstrip()
    kept = [item if len(item) + len(mark) > room else item.replace(" ", _KEEP) for item in items]
    return wrap((mark.replace(" ", _KEEP) + " ").join(kept), width, indent).replace(_KEEP, " ")


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
_ARXIV_CATEGORY = re.compile(r"^(?:[a-z-]+\.[A-Za-z-]+|hep-th|hep-ph|hep-ex|hep-lat|gr-qc|quant-ph|math-ph|nucl-th|nucl-ex|astro-ph|cond-mat|nlin)$")


def arxiv_id(paper: Paper) -> str:
    """The paper's arXiv identifier, or "" when it has none."""
    return paper.id if _ARXIV_ID.match(paper.id) else ""


def categories_label(paper: Paper) -> str:
    """arXiv categories readably: the primary one, then its cross-lists ("cs.CL, also cs.AI, cs.LG"); other
    feeds' categories are journal sections and tags, left out."""
    if not arxiv_id(paper):
        return ""
    terms = [c for c in paper.categories if _ARXIV_CATEGORY.match(c)]
    primary = paper.primary_category if paper.primary_category in terms else None
    if primary is None:
        return ", ".join(terms)
    cross = [c for c in terms if c != primary]
    return primary + (", also " + ", ".join(cross) if cross else "")


def _safe_url(url: str | None) -> bool:
    return bool(url) and len(url or "") <= MAX_URL_CHARS and re.match(r"^https?://[^\s<>\"']+$", url or "") is not None


# What templates/paper.html and paper.txt call, for every Jinja environment that renders a paper card.
CARD_FILTERS: dict[str, Callable[..., Any]] = {
    "highlight": highlight, "snippet": snippet, "authors": authors, "wrap": wrap, "wrap_items": wrap_items, "mark_text": mark_text, "day": format_day,
}  # fmt: skip
CARD_GLOBALS: dict[str, Callable[..., Any]] = {
    "paper_links": paper_links, "source_label": source_label, "arxiv_id": arxiv_id, "categories_label": categories_label,
    "matched_line": matched_line,
}  # fmt: skip
