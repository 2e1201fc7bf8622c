"""Turning a Digest into HTML (CSS inlined) and plain text, rendered once per distinct content and then personalised."""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from premailer import Premailer

from .digest import Digest
from .papers import Paper

BUNDLED = [Path(__file__).parent / "templates", Path(__file__).parent.parent / "templates"]
ABSTRACT_CHARS = 420
MAX_AUTHORS = 4

# Placeholders survive autoescaping and inlining unchanged, then each reader's values replace them.
NAME = "__NL_READER_NAME__"
EMAIL = "__NL_READER_EMAIL__"
UNSUBSCRIBE = "__NL_UNSUBSCRIBE_TOKEN__"
PREFERENCES = "__NL_PREFERENCES_TOKEN__"


class RenderError(Exception):
    """A template is missing or broken; the message names the template and line."""


@dataclass(frozen=True)
class Rendered:
    """One digest's mail bodies, still holding the reader placeholders."""

    subject: str
    html: str
    text: str
    preheader: str


@dataclass(frozen=True)
class Reader:
    """What personalises a rendered digest for one subscriber."""

    email: str
    name: str
    unsubscribe_token: str
    preferences_token: str


class Renderer:
    """Holds the Jinja environment and a cache of rendered digests keyed by content."""

    def __init__(self, base_url: str, templates: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        folders = ([templates] if templates else []) + [p for p in BUNDLED if p.is_dir()]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in folders]),
            autoescape=lambda name: not (name or "").endswith(".txt"),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(highlight=highlight, snippet=snippet, authors=authors, wrap=wrap, mark_text=mark_text, day=format_day)
        self.env.globals.update(paper_links=paper_links)
        self._cache: dict[tuple[object, ...], Rendered] = {}

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
        titles = [s.title for s in digest.sections]
        noun = "paper" if digest.count == 1 else "papers"
        subject = f"Paper digest · {format_day(digest.day)} · {digest.count} new {noun}"
        preheader = f"{digest.count} new {noun} · " + ", ".join(titles[:3]) + ("…" if len(titles) > 3 else "")
        context: dict[str, Any] = {
            "digest": digest,
            "subject": subject,
            "preheader": preheader,
            "reader": {"name": NAME, "email": EMAIL},
            "unsubscribe_url": f"{self.base_url}/unsubscribe/{UNSUBSCRIBE}",
            "preferences_url": f"{self.base_url}/preferences/{PREFERENCES}",
            "base_url": self.base_url,
        }
        try:
            html = self.template("digest.html").render(context)
            text = self.template("digest.txt").render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"{_where(exc)}: {exc}") from exc
        return Rendered(subject, inline_css(html, self.base_url), text.strip() + "\n", preheader)

    def personalise(self, rendered: Rendered, reader: Reader) -> tuple[str, str]:
        """The HTML and text for one reader: plain string replacement, no re-rendering."""
        greeting_name = reader.name or reader.email
        html_values = {NAME: str(escape(greeting_name)), EMAIL: str(escape(reader.email)), UNSUBSCRIBE: reader.unsubscribe_token, PREFERENCES: reader.preferences_token}
        text_values = {NAME: greeting_name, EMAIL: reader.email, UNSUBSCRIBE: reader.unsubscribe_token, PREFERENCES: reader.preferences_token}
        return _replace(rendered.html, html_values), _replace(rendered.text, text_values)


def inline_css(html: str, base_url: str) -> str:
    """premailer with no network, `!important` kept and links made absolute."""
    return Premailer(
        html,
        base_url=base_url + "/",
        allow_network=False,
        strip_important=False,
        keep_style_tags=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()


def highlight(text: str, spans: Sequence[tuple[int, int]], limit: int | None = None) -> Markup:
    """Escape text and wrap matched spans in <mark>, optionally cut as a snippet first."""
    cut = snippet(text, limit) if limit else text
    end_of_cut = len(cut.rstrip("…"))
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos or end > end_of_cut:
            continue
        out.append(str(escape(cut[pos:start])))
        out.append(f"<mark>{escape(cut[start:end])}</mark>")
        pos = end
    out.append(str(escape(cut[pos:])))
    return Markup("".join(out))


def mark_text(text: str, spans: Sequence[tuple[int, int]], limit: int | None = None) -> str:
    """Plain-text counterpart of highlight: matched words as *word*."""
    cut = snippet(text, limit) if limit else text
    end_of_cut = len(cut.rstrip("…"))
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos or end > end_of_cut:
            continue
        out.append(cut[pos:start] + "*" + cut[start:end] + "*")
        pos = end
    out.append(cut[pos:])
    return "".join(out)


def snippet(text: str, limit: int = ABSTRACT_CHARS) -> str:
    """Cut at the last sentence end before the limit, else at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[:limit]
    sentence = max(head.rfind(". "), head.rfind("? "), head.rfind("! "))
    if sentence >= limit // 2:
        return head[: sentence + 1]
    space = head.rfind(" ")
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


def paper_links(paper: Paper) -> list[tuple[str, str]]:
    """Labelled http(s) links for a paper, in reading order."""
    labels = [("abstract", "Abstract"), ("pdf", "PDF"), ("code", "Code"), ("project", "Project"), ("hf", "Hugging Face"), ("doi", "DOI")]
    return [(label, paper.links[key]) for key, label in labels if _safe_url(paper.links.get(key))]


def _safe_url(url: str | None) -> bool:
    return bool(url) and re.match(r"^https?://[^\s<>\"']+$", url or "") is not None


def _replace(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


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
