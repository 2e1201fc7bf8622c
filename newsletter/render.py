"""Turning a Digest into HTML (CSS inlined) and plain text, rendered once per distinct content and then personalised."""

from __future__ import annotations

import logging
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from cachetools import LRUCache
import nh3
from markupsafe import Markup, escape
from premailer import Premailer

from .digest import Digest, Entry
from .papers import Paper

BUNDLED = [Path(__file__).parent / "templates", Path(__file__).parent.parent / "templates"]
TEMPLATES = ("digest.html", "paper.html", "digest.txt", "paper.txt")  # what a digest is rendered from (base.html via digest.html)
ABSTRACT_CHARS = 420
MAX_AUTHORS = 4
MAX_HTML_BYTES = 100_000  # Gmail clips an HTML part past ~102 KB; stay under it with a margin
MAX_URL_CHARS = 500  # longer links are dropped: they would only break lines and layouts
MIME_LINE_BYTES = 500  # longest line of a rendered part; SMTP allows 998, the rest is room for reader values
# What may survive of feed text inside HTML: our own <mark> and simple inline markup, links only http(s).
ALLOWED_TAGS = {"mark", "b", "i", "em", "strong", "sub", "sup", "code", "a"}

MAX_NAME_CHARS = 64
# Distinct digests kept rendered: shared topic selections hit it; personal keywords make most digests unique,
# and then a bound keeps a 10,000-reader send from holding every rendered mail in memory at once.
CACHED_DIGESTS = 256
# Paper cards kept rendered (HTML inlined, and text): the same top papers recur in most digests of a send.
CACHED_CARDS = 4096


class RenderError(Exception):
    """A template is missing or broken; the message names the template and line."""


@dataclass(frozen=True)
class Reader:
    """What personalises a rendered digest for one subscriber."""

    email: str
    name: str
    unsubscribe_token: str
    preferences_token: str


@dataclass(frozen=True)
class Placeholders:
    """Where each reader's values go in a rendered digest: random words made per renderer, so that no feed
    text can know them. Fixed markers let a feed link carry every reader's tokens and address out.

    They survive autoescaping and inlining unchanged (letters and digits only). Name and address differ per
    part (escaped in HTML, as-is in text); the tokens are URL-safe in both.
    """

    html_name: str
    html_email: str
    text_name: str
    text_email: str
    unsubscribe: str
    preferences: str

    @classmethod
    def fresh(cls) -> Placeholders:
        nonce = secrets.token_hex(16)
        return cls(*(f"nl{nonce}{kind}" for kind in ("hn", "he", "tn", "te", "ut", "pt")))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.html_name, self.html_email, self.text_name, self.text_email, self.unsubscribe, self.preferences)

    def values(self, reader: Reader) -> dict[str, str]:
        """What each placeholder becomes for one reader: escaped for HTML, one line, the name kept short."""
        name = " ".join((reader.name or reader.email).split())[:MAX_NAME_CHARS]
        email = " ".join(reader.email.split())
        return {
            self.html_name: str(escape(name)),
            self.html_email: str(escape(email)),
            self.text_name: name,
            self.text_email: email,
            self.unsubscribe: reader.unsubscribe_token,
            self.preferences: reader.preferences_token,
        }

    def fill(self, content: str, reader: Reader) -> str:
        """One pass, so a value that looks like a placeholder (a reader's chosen name) is never filled in turn."""
        values = self.values(reader)
        return _pattern(self.names).sub(lambda m: values[m.group()], content)


@lru_cache(maxsize=8)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, names)))


@dataclass(frozen=True)
class Rendered:
    """One digest's mail bodies, still holding the reader placeholders."""

    subject: str
    html: str
    text: str
    preheader: str
    digest: Digest  # what was rendered: the input, or a smaller cut of it when the HTML was over budget
    placeholders: Placeholders  # what personalise and Stationery fill in


class Renderer:
    """Holds the Jinja environment and a cache of rendered digests keyed by content."""

    def __init__(self, base_url: str, templates: Path | None = None, max_html_bytes: int = MAX_HTML_BYTES) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_html_bytes = max_html_bytes
        folders = ([templates] if templates else []) + [p for p in BUNDLED if p.is_dir()]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in folders]),
            autoescape=_is_html,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(highlight=highlight, snippet=snippet, authors=authors, wrap=wrap, mark_text=mark_text, day=format_day)
        self.env.globals.update(paper_links=paper_links, source_label=source_label)
        self.placeholders = Placeholders.fresh()
        self._cache: LRUCache[str, Rendered] = LRUCache(CACHED_DIGESTS)
        self._cards: LRUCache[tuple[str, str], str] = LRUCache(CACHED_CARDS)

    def template(self, name: str) -> jinja2.Template:
        """Load a template, turning Jinja's errors into one line naming the file and line."""
        try:
            return self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"template {exc.name!r} not found") from exc

    def render(self, digest: Digest) -> Rendered:
        """Render and inline once per distinct digest; cheap on repeat."""
        cached = self._cache.get(digest.key)
        if cached is None:
            cached = self._cache[digest.key] = self._render(digest)
        return cached

    def _render(self, digest: Digest) -> Rendered:
        """Render and inline; when the HTML is over budget, cut the lowest-ranked papers and render again."""
        rendered = self._render_once(digest)
        size = mime_size(rendered.html)
        while size > self.max_html_bytes and digest.count > len(digest.sections):
            keep = int(digest.count * self.max_html_bytes / size * 0.97)
            digest = shrink(digest, max(len(digest.sections), min(keep, digest.count - 1)))
            rendered = self._render_once(digest)
            size = mime_size(rendered.html)
        return rendered

    def _render_once(self, digest: Digest) -> Rendered:
        titles = [s.title for s in digest.sections]
        noun = "paper" if digest.count == 1 else "papers"
        subject = f"Paper digest · {format_day(digest.day)} · {digest.count} new {noun}"
        preheader = f"{digest.count} new {noun} · " + ", ".join(titles[:3]) + ("…" if len(titles) > 3 else "")
        marks = self.placeholders
        context: dict[str, Any] = {
            "digest": digest,
            "subject": subject,
            "preheader": preheader,
            "unsubscribe_url": f"{self.base_url}/unsubscribe/{marks.unsubscribe}",
            "preferences_url": f"{self.base_url}/preferences/{marks.preferences}",
            "base_url": self.base_url,
        }
        cards = _Cards(self)
        try:
            html = self.template("digest.html").render(context, card=cards.card, reader={"name": marks.html_name, "email": marks.html_email})
            text = self.template("digest.txt").render(context, card=cards.card, reader={"name": marks.text_name, "email": marks.text_email})
        except jinja2.TemplateError as exc:
            raise RenderError(f"{_where(exc)}: {exc}") from exc
        html = cards.fill(short_lines(inline_css(html, self.base_url)))  # cards are whole lines: reused ones are short already
        return Rendered(subject, html, short_lines(text.strip()) + "\n", preheader, digest, marks)

    def personalise(self, rendered: Rendered, reader: Reader) -> tuple[str, str]:
        """The HTML and text for one reader: placeholders filled, no re-rendering."""
        return rendered.placeholders.fill(rendered.html, reader), rendered.placeholders.fill(rendered.text, reader)


def _is_html(name: str | None) -> bool:
    """Every template but the .txt ones is HTML: escaped when rendered, and inlined."""
    return not (name or "").endswith(".txt")


class _Cards:
    """The paper cards of one render: those an earlier digest rendered and inlined are reused, new ones are
    rendered into this digest, inlined with it, and kept for the next.

    In the HTML a reused card is a comment until the page is inlined (so premailer only works on what is new),
    and a new card is wrapped in two comments that mark it out of the inlined page. Feed text cannot forge these
    comments: it is escaped or sanitised, and nh3 drops comments.
    """

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.reused: list[str] = []
        self.new: list[tuple[str, str]] = []

    def card(self, name: str, entry: Entry) -> str:
        """What a template's `card(name, entry)` puts in the page."""
        key = (name, entry.key)
        done = self.renderer._cards.get(key)
        if not _is_html(name):
            if done is None:
                done = self.renderer._cards[key] = self.renderer.template(name).render(entry=entry, paper=entry.paper)
            return done
        if done is not None:
            self.reused.append(done)
            return Markup(f"<!--nl-card:{len(self.reused) - 1}-->")
        self.new.append(key)
        i = len(self.new) - 1
        return Markup(f"<!--nl-new:{i}-->{self.renderer.template(name).render(entry=entry, paper=entry.paper)}<!--nl-end:{i}-->")

    def fill(self, html: str) -> str:
        """The inlined page with new cards kept for reuse and reused cards put in."""

        def keep(match: re.Match[str]) -> str:
            self.renderer._cards[self.new[int(match[1])]] = match[2]
            return match[2]

        html = _NEW_CARD.sub(keep, html)
        return _REUSED_CARD.sub(lambda match: self.reused[int(match[1])], html)


# lxml ends a serialised table row with a newline, and puts one after each comment standing where a row would.
_NEW_CARD = re.compile(r"<!--nl-new:(\d+)-->(.*?)<!--nl-end:\1-->\n?", re.S)
_REUSED_CARD = re.compile(r"<!--nl-card:(\d+)-->\n?")


def inline_css(html: str, base_url: str) -> str:
    """premailer with no network, `!important` kept and links made absolute (in-mail #anchors stay as they are)."""
    return _Premailer(
        html,
        base_url=base_url + "/",
        allow_network=False,
        strip_important=False,
        preserve_internal_links=True,
        disable_basic_attributes=["width", "height"],  # keep width="600" for Outlook; CSS makes it fluid elsewhere
        keep_style_tags=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()


class _Premailer(Premailer):
    """premailer that turns a stylesheet into rules once, not on every page: cssutils re-serialising every
    property was two thirds of inlining a digest whose paper cards were already inlined.

    Only inline_css makes these, always with the same options, so a stylesheet's text is a complete key.
    The pinned premailer version is the one these two overrides were read against.
    """

    _rules: LRUCache[tuple[str, int], tuple[list[Any], list[Any]]] = LRUCache(16)
    _leftovers: LRUCache[int, tuple[list[Any], str]] = LRUCache(16)

    def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list[Any], list[Any]]:
        key = (css_body, ruleset_index)
        parsed = self._rules.get(key)
        if parsed is None:
            parsed = self._rules[key] = super()._parse_style_rules(css_body, ruleset_index)
        return parsed

    def _css_rules_to_string(self, rules: list[Any]) -> str:
        """The @media and pseudo-class rules kept in <style>, written out once per (remembered) list of them."""
        done = self._leftovers.get(id(rules))
        if done is None or done[0] is not rules:
            done = self._leftovers[id(rules)] = (rules, super()._css_rules_to_string(rules))
        return done[1]


def short_lines(text: str, limit: int = MIME_LINE_BYTES) -> str:
    """Break lines longer than `limit` UTF-8 bytes at a space, so every reader's copy goes out as plain 8bit.

    SMTP allows 998 bytes a line; the margin leaves room for the reader's name and tokens filled in later.
    A newline is the same whitespace as a space in HTML (no <pre> in the digest) and in wrapped text.
    """
    out: list[str] = []
    for line in text.split("\n"):
        while len(line.encode("utf-8")) > limit:
            head = line.encode("utf-8")[:limit].decode("utf-8", "ignore")
            cut = head.rfind(" ")
            if cut <= 0:  # one unbroken run (only hostile text does this): leave it to the mailer's encoding
                break
            out.append(line[:cut])
            line = line[cut + 1 :]
        out.append(line)
    return "\n".join(out)


def mime_size(html: str) -> int:
    """Bytes of the HTML part as the mailer sends it: 8bit UTF-8 with CRLF line ends."""
    return len(html.encode("utf-8")) + html.count("\n")


def shrink(digest: Digest, keep: int) -> Digest:
    """The digest with only `keep` papers, cut proportionally across topics (each keeps at least its best one).

    Sections are already ranked, so the tail of each goes; the ids cut join Section.cut, which makes the
    template say "…and N more" and keeps them counted as delivered (Digest.covered_ids).
    """
    sizes = [len(s.entries) for s in digest.sections]
    total = sum(sizes)
    if keep >= total:
        return digest
    quotas = [max(1, size * keep // total) for size in sizes]
    # Hand out what flooring left over, largest remainder first, never beyond a section's size.
    order = sorted(range(len(sizes)), key=lambda i: -(sizes[i] * keep % total))
    spare = keep - sum(quotas)
    for i in order:
        if spare <= 0:
            break
        if quotas[i] < sizes[i]:
            quotas[i] += 1
            spare -= 1
    sections = tuple(
        replace(s, entries=s.entries[:q], cut=tuple(e.paper.id for e in s.entries[q:]) + s.cut)
        for s, q in zip(digest.sections, quotas)
    )
    return replace(digest, sections=sections)


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
    return value.strftime("%-d %b %Y") if value else ""


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


def _where(exc: jinja2.TemplateError) -> str:
    """Template file and line of a runtime error: Jinja rewrites traceback frames to point into templates."""
    tb = exc.__traceback__
    where = "template"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".html", ".txt")):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
