"""Turn fetched documents from every source type into normalised Paper records.

Everything a feed says is untrusted: text comes out as plain text (tags, scripts and invisible
characters removed), links only when they are http(s), and arXiv ids, DOIs and versions are
read the same way whatever document they came from, so sightings of one paper merge.
"""

from __future__ import annotations

import html
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from time import struct_time
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import feedparser
import nh3
from feedparser import FeedParserDict

from .papers import Paper, merge

SOURCE_TYPES: tuple[str, ...] = ("hf_daily", "arxiv_rss", "arxiv_api", "feed")

ARXIV_RSS_BASE = "https://rss.arxiv.org/rss/"
ARXIV_API_BASE = "https://export.arxiv.org/api/query"
HF_DAILY_BASE = "https://huggingface.co/api/daily_papers"
HF_PAPER_BASE = "https://huggingface.co/papers/"
API_PAGE_SIZE = 100
MAX_TEXT = 100_000  # characters of any one feed field we read; longer is junk or an attack


class SourceError(Exception):
    """A source answered, but with something we cannot use (error feed, bad JSON, unparseable document)."""


@dataclass(frozen=True)
class Source:
    """One configured source: where to fetch and how to read what comes back."""

    name: str
    type: str  # hf_daily | arxiv_rss | arxiv_api | feed
    url: str | None = None  # overrides the default URL; for feed it is required
    categories: tuple[str, ...] = ()  # arxiv_rss
    announce_types: tuple[str, ...] = ("new", "cross")  # arxiv_rss
    query: str | None = None  # arxiv_api
    max_results: int = 100  # arxiv_api
    days: int = 1  # hf_daily
    replace: bool = False  # a new version (v2) of an already-sent paper is news again (arxiv_rss reads replace entries too)
    timeout: float | None = None  # seconds per HTTP exchange; None: the fetch policy's default


@dataclass
class Parsed:
    """What one fetched document yielded, plus the next page to fetch when the source pages."""

    papers: list[Paper]
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


def _with_start(url: str, start: int, page_size: int) -> str:
    """The same arXiv API query URL, asking for the page that begins at `start`."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("start", "max_results")]
    query += [("start", str(start)), ("max_results", str(page_size))]
    return urlunsplit(parts._replace(query=urlencode(query)))


# --------------------------------------------------------------------------- identity

_NEW_ID = r"(?P<new>(?P<yymm>\d{4})\.\d{4,5})"
_OLD_ID = r"(?P<old>[a-z]+(?:-[a-z]+)?(?:\.[A-Z]{2})?/\d{7})"
_VERSION = r"(?:v(?P<version>\d+))?"
_ID_BODY = rf"(?:{_NEW_ID}|{_OLD_ID}){_VERSION}(?![\w.])"
_BARE_ID = re.compile(rf"^{_ID_BODY}$")
_PREFIXED_ID = re.compile(rf"(?:^|[^\w.])(?:arxiv:|oai:arxiv\.org:|arxiv\.)\s*{_ID_BODY}", re.IGNORECASE)
_URL_ID = re.compile(rf"^/(?:abs|pdf|html|format|papers)/{_ID_BODY}/?$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


def parse_arxiv_id(value: str | None) -> tuple[str, int | None] | None:
    """Find an arXiv id and version in a URL, OAI guid, `arXiv:` string, arXiv DOI or bare id.

    Returns ("2411.01234", 2) / ("hep-th/9901001", None), or None when the value names no arXiv paper;
    arbitrary numbers that merely look like ids (journal URLs, dates) are not taken.
    """
    text = (value or "").strip()
    if not text:
        return None
    match = _BARE_ID.match(text) or _PREFIXED_ID.search(text)
    if match is None and "://" in text:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        if host == "arxiv.org" or host.endswith(".arxiv.org") or (host == "huggingface.co" and parts.path.startswith("/papers/")):
            match = _URL_ID.match(re.sub(r"\.pdf$", "", unquote(parts.path)))
    if match is None:
        return None
    if match.group("new") and not 1 <= int(match.group("yymm")[2:]) <= 12:
        return None
    version = match.group("version")
    return match.group("new") or match.group("old"), int(version) if version else None


def normalize_doi(value: str | None) -> str | None:
    """A bare DOI ("10.1038/x") from a DOI, `doi:` string or doi.org URL; None when it is not one."""
    text = (value or "").strip()
    if "://" in text:
        parts = urlsplit(text)
        if (parts.hostname or "").lower() not in ("doi.org", "dx.doi.org", "www.doi.org"):
            return None
        text = unquote(parts.path.lstrip("/"))
    tokens = re.sub(r"^doi:\s*", "", text, flags=re.IGNORECASE).split()
    text = tokens[0].rstrip(".,;") if tokens else ""
    return text if _DOI.match(text) else None


def canonical_id(candidates: Iterable[str | None], doi: str | None = None) -> str | None:
    """The id that merges sightings: arXiv id without version, else `doi:<lowercased DOI>`, else the first candidate.

    `candidates` are the entry's own identifiers in order of preference (guid/id first, then links).
    """
    values = [c.strip() for c in candidates if c and c.strip()]
    for value in [*values, doi]:
        found = parse_arxiv_id(value)
        if found:
            return found[0]
    bare = normalize_doi(doi)
    if bare:
        return f"doi:{bare.lower()}"
    return values[0] if values else None


def _arxiv_links(arxiv: str) -> dict[str, str]:
    """Version-less arXiv abstract and PDF links, identical from every source so merges keep one copy."""
    return {"abstract": f"https://arxiv.org/abs/{arxiv}", "pdf": f"https://arxiv.org/pdf/{arxiv}"}


def _http_url(value: Any) -> str | None:
    """The value as an absolute http(s) URL (inner spaces escaped), or None; control characters disqualify it."""
    if not isinstance(value, str):
        return None
    text = value.strip().replace(" ", "%20")
    if not text or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in text):
        return None
    parts = urlsplit(text)
    return text if parts.scheme.lower() in ("http", "https") and parts.netloc else None


# --------------------------------------------------------------------------- text

_BLOCK_TAGS = frozenset(
    "p div br li ul ol dl dt dd h1 h2 h3 h4 h5 h6 tr table blockquote pre hr section article header footer figure figcaption".split()
)
_SKIP_TAGS = frozenset("script style noscript template iframe object embed head title textarea select".split())
_LOOKS_LIKE_HTML = re.compile(
    r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);"
)
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")


def _html_blocks(markup: str) -> list[str]:
    """The text of each block of an HTML fragment, entities decoded exactly once.

    nh3 (html5ever) does the parsing: it stays linear on hostile markup where html.parser goes
    quadratic (thousands of unclosed "<!--"). Its output keeps only bare block tags and escapes
    all text, so splitting on tags and unescaping once is exact.
    """
    cleaned = nh3.clean(
        markup, tags=_BLOCK_TAGS, clean_content_tags=_SKIP_TAGS, attributes={}, strip_comments=True, link_rel=None
    )
    return [html.unescape(block) for block in re.split(r"<[^>]*>", cleaned)]


_TEX_COMBINING = {
    "'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304", ".": "\u0307",
    "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328", "r": "\u030a", "d": "\u0323", "b": "\u0331",
}  # fmt: skip
_TEX_LETTERS = {
    "l": "ł", "L": "Ł", "o": "ø", "O": "Ø", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ",
    "aa": "å", "AA": "Å", "ss": "ß", "dh": "ð", "DH": "Ð", "th": "þ", "TH": "Þ", "i": "ı", "j": "ȷ",
}  # fmt: skip
_TEX_BASE = r"(?:\\[ij](?![A-Za-z])|[A-Za-z])"
_TEX_ACCENT = re.compile(
    r"(?P<brace>\{)?\\(?:(?P<sym>[`'^\"~=.])\s*|(?P<cmd>[uvHckrdb])(?=\s*\{|\s+[A-Za-z])\s*)"
    rf"(?:\{{\s*(?P<inner>{_TEX_BASE})\s*\}}|(?P<bare>{_TEX_BASE}))(?(brace)\}})"
)
_TEX_LETTER = re.compile(r"(?P<brace>\{)?\\(?P<name>ae|AE|oe|OE|aa|AA|ss|dh|DH|th|TH|[lLoOij])(?![A-Za-z])(?(brace)\}| ?)")
_TEX_ESCAPE = re.compile(r"\\([&%#_])")
_TEX_MATH = re.compile(r"(\$\$.+?\$\$|\$[^$]+\$)", re.DOTALL)


def _tex_accent(match: re.Match[str]) -> str:
    """One TeX accent command as the accented character."""
    base = match.group("inner") or match.group("bare")
    base = base[1] if base.startswith("\\") else base  # dotless \i / \j take the accent as plain i / j
    mark = _TEX_COMBINING[match.group("sym") or match.group("cmd")]
    return unicodedata.normalize("NFC", base + mark)


def tex_to_unicode(text: str) -> str:
    """Simple TeX accents and letters (\\'e, {\\"u}, \\c{c}, {\\l}) as characters; `$math$` is left alone."""
    if "\\" not in text:
        return text
    pieces = _TEX_MATH.split(text)
    for i in range(0, len(pieces), 2):  # even pieces are outside $...$
        piece = _TEX_ACCENT.sub(_tex_accent, pieces[i])
        piece = _TEX_LETTER.sub(lambda m: _TEX_LETTERS[m.group("name")], piece)
        pieces[i] = _TEX_ESCAPE.sub(r"\1", piece)
    return "".join(pieces)


def _fold(text: str) -> str:
    """One line of text: invisible and control characters dropped, whitespace runs as single spaces."""
    return " ".join(_INVISIBLE.sub("", text).split())


def plain_text(value: Any, *, html: bool = False, paragraphs: bool = False) -> str:
    """Feed text as plain text: tags stripped, entities decoded once, TeX accents resolved, whitespace folded.

    `html` says the value is declared HTML; plain values are still treated as HTML when they contain
    tags or character references (feeds often escape markup inside "plain" titles). With `paragraphs`,
    paragraph breaks survive as blank lines.
    """
    if not isinstance(value, str) or not value:
        return ""
    value = value[:MAX_TEXT]
    if html or _LOOKS_LIKE_HTML.search(value):
        blocks = _html_blocks(value)
    else:
        blocks = re.split(r"\n[^\S\n]*\n", value)
    cleaned = [_fold(tex_to_unicode(block)) for block in blocks]
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
        parts = [p for p in (_fold(p) for p in group.split(",")) if p]
        if not comma_separated and not all(" " in p for p in parts):
            parts = [_fold(group)]
        for part in parts:
            names.extend(n for n in (_fold(n) for n in re.split(r"(?:^|\s+)and\s+", part)) if n and not _ET_AL.match(n))
    return names


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    """Non-empty values, first occurrence kept."""
    return tuple(dict.fromkeys(v for v in values if v))


# --------------------------------------------------------------------------- dates and numbers


def _utc(parsed: Any) -> datetime | None:
    """feedparser's *_parsed struct_time (always UTC) as an aware datetime; None when absent or impossible."""
    if not isinstance(parsed, struct_time):
        return None
    try:
        return datetime(*parsed[:6], tzinfo=timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def _iso(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no zone); None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _count(value: Any) -> int | None:
    """A non-negative JSON integer, or None for anything else (booleans, strings, floats)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _entry_date(entry: FeedParserDict) -> datetime | None:
    """The entry's publication date, falling back to its update date (dc:date lands there)."""
    return _utc(entry.get("published_parsed")) or _utc(entry.get("updated_parsed"))


# --------------------------------------------------------------------------- parsing


def parse(source: Source, body: bytes, url: str, content_type: str | None = None) -> Parsed:
    """Turn one fetched document into papers; raises SourceError for documents that are errors or unusable."""
    if source.type == "hf_daily":
        return Parsed(_collect(_hf_papers(source, body)))
    if source.type not in SOURCE_TYPES:
        raise ValueError(f"source {source.name!r}: unknown type {source.type!r}")
    doc = _read_feed(body, url, content_type)
    if source.type == "arxiv_rss":
        return Parsed(_collect(_arxiv_rss_papers(source, doc)))
    if source.type == "arxiv_api":
        return Parsed(_collect(_arxiv_api_papers(source, doc)), _next_api_url(source, doc, url))
    return Parsed(_collect(_feed_papers(source, doc)))


def _collect(papers: Iterable[Paper]) -> list[Paper]:
    """Papers in document order, a paper listed twice merged into its first sighting."""
    seen: dict[str, Paper] = {}
    for paper in papers:
        seen[paper.id] = merge(seen[paper.id], paper) if paper.id in seen else paper
    return list(seen.values())


# Warnings about a document feedparser still parsed as well-formed XML: a recognised feed with
# no entries and only these complaints is an empty feed, not a broken one.
_HARMLESS_BOZO = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)


def _read_feed(body: bytes, url: str, content_type: str | None) -> FeedParserDict:
    """feedparser's reading of the bytes; SourceError when they are not a feed at all.

    The bytes go in as a stream: feedparser opens a bytes/str argument as a local file path when
    one exists by that name, which a hostile server must never be able to trigger. feedparser's
    HTML sanitiser and URI resolver are off because they rewrite text (they turn "$a<b$" into
    tags); plain_text strips markup itself.
    """
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    try:
        doc = feedparser.parse(
            io.BytesIO(body), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
        )
    except Exception as exc:  # feedparser on hostile input: whatever it raises, the document is unusable
        raise SourceError(f"not a feed: {type(exc).__name__}: {exc}") from exc
    problem = doc.get("bozo_exception")
    if doc.get("bozo") and not doc.entries and not (doc.get("version") and isinstance(problem, _HARMLESS_BOZO)):
        raise SourceError(f"not a feed: {type(problem).__name__}: {problem}" if problem else "not a feed")
    return doc


def _detail_is_html(entry: FeedParserDict, key: str) -> bool:
    """Whether feedparser saw the entry's `key` field declared as HTML."""
    detail = entry.get(f"{key}_detail") or {}
    return str(detail.get("type") or "").lower() in _HTML_TYPES


def _tags(entry: FeedParserDict) -> tuple[str, ...]:
    """The entry's category terms as plain text."""
    return _unique(plain_text(tag.get("term")) for tag in entry.get("tags") or [] if isinstance(tag, dict))


_RSS_PREFIX = re.compile(r"^\s*arXiv:(?P<id>\S+)\s+Announce Type:\s*[\w-]*\s*Abstract:\s*", re.IGNORECASE)


def _arxiv_rss_papers(source: Source, doc: FeedParserDict) -> Iterator[Paper]:
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
        description = entry.get("summary") or ""
        prefix = _RSS_PREFIX.match(description)
        guid, link = entry.get("id"), entry.get("link")
        found = parse_arxiv_id(guid) or parse_arxiv_id(prefix.group("id") if prefix else None) or parse_arxiv_id(link)
        doi = normalize_doi(entry.get("arxiv_doi"))
        authors = [name for a in entry.get("authors") or [] for name in split_authors(a.get("name"), comma_separated=True)]
        paper = _paper(
            source,
            found=found,
            candidates=(guid, link),
            doi=doi,
            title=plain_text(entry.get("title")),
            abstract=plain_text(description[prefix.end() :] if prefix else description, paragraphs=True),
            authors=authors,
            categories=_tags(entry),
            link=link,
            published=_entry_date(entry),
            announce_type=announce,
            journal_ref=plain_text(entry.get("arxiv_journal_reference")) or None,
        )
        if paper:
            yield paper


def _arxiv_api_papers(source: Source, doc: FeedParserDict) -> Iterator[Paper]:
    """Papers from an export.arxiv.org Atom response; the API's error feed raises."""
    for entry in doc.entries:
        if "/api/errors" in str(entry.get("id") or ""):
            message = plain_text(entry.get("summary")) or plain_text(entry.get("title")) or "unknown error"
            raise SourceError(f"arXiv API error: {message}"[:500])
    for entry in doc.entries:
        primary = entry.get("arxiv_primary_category") or {}
        categories = _unique([plain_text(primary.get("term")) if isinstance(primary, dict) else "", *_tags(entry)])
        paper = _paper(
            source,
            found=parse_arxiv_id(entry.get("id")) or parse_arxiv_id(entry.get("link")),
            candidates=(entry.get("id"), entry.get("link")),
            doi=normalize_doi(entry.get("arxiv_doi")),
            title=plain_text(entry.get("title")),
            abstract=plain_text(entry.get("summary"), paragraphs=True),
            authors=[name for a in entry.get("authors") or [] for name in split_authors(a.get("name"), comma_separated=True)],
            categories=categories,
            link=entry.get("link"),
            published=_entry_date(entry),
            journal_ref=plain_text(entry.get("arxiv_journal_ref")) or None,
        )
        if paper:
            yield paper


def _next_api_url(source: Source, doc: FeedParserDict, url: str) -> str | None:
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


def _feed_papers(source: Source, doc: FeedParserDict) -> Iterator[Paper]:
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
        texts += [(c.get("value"), str(c.get("type") or "").lower() in _HTML_TYPES) for c in entry.get("content") or []]
        abstracts = [plain_text(value, html=is_html, paragraphs=True) for value, is_html in texts]
        raw_authors = [a.get("name") for a in entry.get("authors") or [] if isinstance(a, dict)] or [entry.get("author")]
        paper = _paper(
            source,
            found=found,
            candidates=(guid, link),
            doi=doi,
            title=plain_text(entry.get("title"), html=_detail_is_html(entry, "title")),
            abstract=max(abstracts, key=len),
            authors=[name for raw in raw_authors for name in split_authors(raw)],
            categories=_tags(entry),
            link=link,
            published=_entry_date(entry),
            pdf=pdf,
        )
        if paper:
            yield paper


def _paper(
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
) -> Paper | None:
    """Assemble one Paper with its canonical id and links; None when the entry names nothing at all."""
    ids = [_fold(c) for c in candidates if isinstance(c, str)]
    paper_id = found[0] if found else canonical_id(ids, doi)
    if not paper_id:
        if not title:
            return None
        paper_id = f"title:{title.casefold()}"
    links = {key: url for key, url in (("abstract", _http_url(link)), ("pdf", _http_url(pdf))) if url}
    if found:
        links = _arxiv_links(found[0])
    if doi:
        links["doi"] = f"https://doi.org/{quote(doi, safe='/:;()._-')}"
    return Paper(
        id=paper_id,
        title=title,
        abstract=abstract,
        authors=_unique(authors),
        categories=tuple(categories),
        links=links,
        published=published,
        sources=(source.name,),
        version=found[1] if found else None,
        announce_type=announce_type,
        doi=doi,
        journal_ref=journal_ref,
    )


def _hf_papers(source: Source, body: bytes) -> Iterator[Paper]:
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
        hf_id = info.get("id") if isinstance(info.get("id"), str) else ""
        found = parse_arxiv_id(hf_id)
        hf_link = f"{HF_PAPER_BASE}{quote(hf_id.strip(), safe='.')}" if hf_id.strip() else None
        title = plain_text(info.get("title")) or plain_text(item.get("title"))
        paper_id = found[0] if found else hf_link
        if not paper_id:
            continue
        extra = {"hf": hf_link, "code": _http_url(info.get("githubRepo")), "project": _http_url(info.get("projectPage"))}
        links = {**(_arxiv_links(found[0]) if found else {}), **{key: url for key, url in extra.items() if url}}
        authors = [a.get("name") for a in info.get("authors") or [] if isinstance(a, dict)]
        keywords = info.get("ai_keywords") if isinstance(info.get("ai_keywords"), list) else []
        yield Paper(
            id=paper_id,
            title=title,
            abstract=plain_text(info.get("summary") or item.get("summary"), paragraphs=True),
            authors=_unique(plain_text(name) for name in authors),
            links=links,
            published=_iso(info.get("publishedAt")) or _iso(item.get("publishedAt")),
            sources=(source.name,),
            score=_count(info.get("upvotes")),
            comments=_count(item.get("numComments")),
            stars=_count(info.get("githubStars")),
            keywords=_unique(plain_text(k) for k in keywords),
        )
