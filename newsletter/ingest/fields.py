"""Reading one feed field into clean plain text: markup, LaTeX, invisible characters, author lists, dates."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from time import struct_time
from typing import Any

import nh3
from feedparser import FeedParserDict

from newsletter.ingest.tex import readable_tex

MAX_TEXT = 100_000  # characters of any one feed field we read; longer is junk or an attack


# --------------------------------------------------------------------------- text

_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "table",
        "blockquote",
        "pre",
        "hr",
        "section",
        "article",
        "header",
        "footer",
        "figure",
        "figcaption",
    ]
)


_SKIP_TAGS = frozenset(["script", "style", "noscript", "template", "iframe", "object", "embed", "head", "title", "textarea", "select"])
_LOOKS_LIKE_HTML = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_PARAGRAPHS = re.compile(r"\n[^\S\n]*\n")  # a blank line
HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")


def _html_blocks(markup: str) -> list[str]:
    """The text of each block of an HTML fragment, entities decoded exactly once.

    nh3 (html5ever) does the parsing: it stays linear on hostile markup where html.parser goes
    quadratic (thousands of unclosed "<!--"). Its output keeps only bare block tags and escapes
    all text, so splitting on tags and unescaping once is exact.
    """
    cleaned = nh3.clean(markup, tags=_BLOCK_TAGS, clean_content_tags=_SKIP_TAGS, attributes={}, strip_comments=True, link_rel=None)
    return [html.unescape(block) for block in re.split(r"<[^>]*>", cleaned)]


def fold_space(text: str) -> str:
    """One line of text: invisible and control characters dropped, whitespace runs as single spaces."""
    return " ".join(_INVISIBLE.sub("", text).split())


def plain_text(value: Any, *, html: bool = False, paragraphs: bool = False) -> str:
    """Feed text as plain text: tags stripped, entities decoded once, LaTeX made readable, whitespace folded.

    `html` says the value is declared HTML; plain values are still treated as HTML when they contain
    tags or character references (feeds often escape markup inside "plain" titles). With `paragraphs`,
    paragraph breaks survive as blank lines.
    """
    if not isinstance(value, str) or not value:
        return ""
    value = value[:MAX_TEXT]
    blocks = _html_blocks(value) if html or _LOOKS_LIKE_HTML.search(value) else _PARAGRAPHS.split(value)
    return _readable_blocks(blocks, paragraphs)


def readable_text(text: str, *, paragraphs: bool = False) -> str:
    """Plain text (a stored title or abstract) with its LaTeX made readable and its whitespace folded as `plain_text`
    does, markup and character references left alone: stored text has had them read once already."""
    return _readable_blocks(_PARAGRAPHS.split(text), paragraphs)


def _readable_blocks(blocks: Iterable[str], paragraphs: bool) -> str:
    cleaned = [fold_space(readable_tex(block)) for block in blocks]
    return ("\n\n" if paragraphs else " ").join(c for c in cleaned if c)


_ET_AL = re.compile(r"^(?:and\s+)?(?:et\.?\s*al\.?|others)$", re.IGNORECASE)


def _drop_parenthesised(text: str) -> str:
    """The text without its (possibly nested) parenthesised parts; unchanged when the parentheses do not balance."""
    kept: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            kept.append(ch)
    return "".join(kept) if depth == 0 else text


def split_authors(raw: Any, *, comma_separated: bool = False) -> list[str]:
    """Author names from one author string, which may list several ("A, B and C"; "Smith J; Doe K").

    Parenthesised affiliations are dropped. Commas always separate names when `comma_separated`
    (arXiv); otherwise only when every part is a multi-word name, so "Inoda, Toshio" stays one name.
    """
    text = _drop_parenthesised(plain_text(raw))
    names: list[str] = []
    for group in text.split(";"):
        parts = [p for p in (fold_space(p) for p in group.split(",")) if p]
        if not comma_separated and not all(" " in p for p in parts):
            parts = [fold_space(group)]
        for part in parts:
            names.extend(n for n in (fold_space(n) for n in re.split(r"(?:^|\s+)and\s+", part)) if n and not _ET_AL.match(n))
    return names


def unique(values: Iterable[str]) -> tuple[str, ...]:
    """Non-empty values, first occurrence kept."""
    return tuple(dict.fromkeys(v for v in values if v))


# --------------------------------------------------------------------------- dates and numbers


def _utc(parsed: Any) -> datetime | None:
    """feedparser's *_parsed struct_time (always UTC) as an aware datetime; None when absent or impossible."""
    if not isinstance(parsed, struct_time):
        return None
    try:
        return datetime(*parsed[:6], tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def iso_datetime(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no zone); None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_count(value: Any) -> int | None:
    """A non-negative JSON integer, or None for anything else (booleans, strings, floats)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def entry_date(entry: FeedParserDict) -> datetime | None:
    """The entry's publication date, falling back to its update date (dc:date lands there)."""
    return _utc(entry.get("published_parsed")) or _utc(entry.get("updated_parsed"))
