"""Turning a Digest into HTML (CSS inlined) and plain text, rendered once per distinct content and then personalised."""

from __future__ import annotations

import binascii
import logging
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from cachetools import LRUCache
from markupsafe import Markup, escape
from premailer import Premailer

from newsletter.errors import RenderError
from newsletter.mail import tokens
from newsletter.mail.filters import CARD_FILTERS, CARD_GLOBALS, format_day
from newsletter.mail.templates import environment, is_html
from newsletter.model.digest import Digest, Entry, anonymous, count_phrase, shrink
from newsletter.model.paper import Paper

TEMPLATES = ("digest.html", "paper.html", "digest.txt", "paper.txt")  # what a digest is rendered from (base.html via digest.html)
MAX_HTML_BYTES = 100_000  # Gmail clips an HTML part past ~102 KB; stay under it with a margin
MIME_LINE_BYTES = 500  # longest line of a rendered part, for people reading the source (the wire has quoted-printable lines of 76)
MAX_NAME_CHARS = 64
BUDGET_ADDRESS_CHARS = 64  # the longest address whose mails are sure to fit: the card links carry the reader's edition token
EDITION_TOKEN_CHARS = len(tokens.edition("budget", "x" * BUDGET_ADDRESS_CHARS, "0" * 32, 999))  # that token, as the budget counts it


# Distinct digests kept rendered: shared topic selections hit it; personal keywords make most digests unique,
# and then a bound keeps a 10,000-reader send from holding every rendered mail in memory at once.
CACHED_DIGESTS = 256


# Paper cards kept rendered (HTML inlined, and text): the same top papers recur in most digests of a send.
CACHED_CARDS = 4096


@dataclass(frozen=True)
class Reader:
    """What personalises a rendered digest for one subscriber."""

    email: str
    name: str
    unsubscribe_token: str
    preferences_token: str
    edition_token: str  # opens this reader's page of this edition


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
    edition: str

    @classmethod
    def fresh(cls) -> Placeholders:
        nonce = secrets.token_hex(16)
        return cls(*(f"nl{nonce}{kind}" for kind in ("hn", "he", "tn", "te", "ut", "pt", "et")))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.html_name, self.html_email, self.text_name, self.text_email, self.unsubscribe, self.preferences, self.edition)

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
            self.edition: reader.edition_token,
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
        self.env = environment(templates)
        self.env.filters.update(CARD_FILTERS)
        self.env.globals.update(CARD_GLOBALS)
        self.placeholders = Placeholders.fresh()
        self.feedback = f"{self.base_url}/feedback/{self.placeholders.edition}"  # the cards' Follow / More / Fewer links (newsletter.web.feedback)
        self._cache: LRUCache[str, Rendered] = LRUCache(CACHED_DIGESTS)
        self._cards: LRUCache[tuple[str, str], str] = LRUCache(CACHED_CARDS)
        self._page_cards: LRUCache[tuple[str, str], tuple[Paper, Markup]] = LRUCache(CACHED_CARDS)  # cards as web pages show them, not inlined

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
        """Render and inline (as `anonymous`: the render is shared by every reader of this content); when the HTML is
        over budget, cut the lowest-ranked papers and render again."""
        digest = anonymous(digest)
        rendered = self._render_once(digest)
        if mime_size_at_most(_as_sent(rendered)) <= self.max_html_bytes:  # most digests: no need to encode them to know
            return rendered
        size = sent_size(rendered)
        while size > self.max_html_bytes and digest.count > len(digest.sections):
            keep = int(digest.count * self.max_html_bytes / size * 0.97)
            digest = shrink(digest, max(len(digest.sections), min(keep, digest.count - 1)))
            rendered = self._render_once(digest)
            size = sent_size(rendered)
        return rendered

    def _render_once(self, digest: Digest) -> Rendered:
        titles = [s.title for s in digest.sections]
        counts = count_phrase(digest.count, digest.total)
        subject = f"Paper digest · {format_day(digest.day)} · {counts}"
        preheader = f"{counts} · " + ", ".join(titles[:3]) + ("…" if len(titles) > 3 else "")
        marks = self.placeholders
        context: dict[str, Any] = {
            "digest": digest,
            "subject": subject,
            "preheader": preheader,
            "counts": counts,
            "unsubscribe_url": f"{self.base_url}/unsubscribe/{marks.unsubscribe}",
            "preferences_url": f"{self.base_url}/preferences/{marks.preferences}",
            "edition_url": f"{self.base_url}/editions/{marks.edition}",
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

    def page_card(self, entry: Entry, template: str = "paper.html") -> Markup:
        """A paper's card for a web page, with the mail's template (user overrides apply), rendered once per entry and
        paper: not inlined, since pages take their styles from a stylesheet and their CSP allows no style attributes.
        Kept with the paper it shows, as pages outlive a send (its upvotes and links change): a stored paper read again
        unchanged is the same object (storage keeps them read), so the check is mostly `is`, not a repr of the paper
        (that was a third of an edition page). Not thread-safe: callers serialise."""
        key = (template, entry.key)
        kept = self._page_cards.get(key)
        if kept is not None and (kept[0] is entry.paper or kept[0] == entry.paper):
            return kept[1]
        try:
            done = Markup(self.template(template).render(entry=entry, paper=entry.paper))
        except jinja2.TemplateError as exc:
            raise RenderError(f"{_where(exc)}: {exc}") from exc
        self._page_cards[key] = (entry.paper, done)
        return done

    def page(self, name: str, digest: Digest, **context: Any) -> str:
        """A web page showing `digest` with the mail's cards (`page_card`)."""
        try:
            return self.template(name).render(context, digest=digest, card=lambda template, entry: self.page_card(entry, template))
        except jinja2.TemplateError as exc:
            raise RenderError(f"{_where(exc)}: {exc}") from exc

    def personalise(self, rendered: Rendered, reader: Reader) -> tuple[str, str]:
        """The HTML and text for one reader: placeholders filled, no re-rendering."""
        return rendered.placeholders.fill(rendered.html, reader), rendered.placeholders.fill(rendered.text, reader)


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
        if not is_html(name):
            if done is None:
                done = self.renderer._cards[key] = self.renderer.template(name).render(entry=entry, paper=entry.paper, feedback=self.renderer.feedback)
            return done
        if done is not None:
            self.reused.append(done)
            return Markup(f"<!--nl-card:{len(self.reused) - 1}-->")
        self.new.append(key)
        i = len(self.new) - 1
        card = self.renderer.template(name).render(entry=entry, paper=entry.paper, feedback=self.renderer.feedback)
        return Markup(f"<!--nl-new:{i}-->{card}<!--nl-end:{i}-->")

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
    inlined: str = _Premailer(
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
    return inlined


class _Premailer(Premailer):  # type: ignore[misc]  # premailer ships no type hints
    """premailer that turns a stylesheet into rules once, not on every page: cssutils re-serialising every
    property was two thirds of inlining a digest whose paper cards were already inlined.

    Only inline_css makes these, always with the same options, so a stylesheet's text is a complete key.
    The pinned premailer version is the one these two overrides were read against.
    """

    _rules: LRUCache[tuple[str, int], tuple[list[Any], list[Any]]] = LRUCache(16)
    _leftovers: LRUCache[int, tuple[list[Any], str]] = LRUCache(16)

    def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list[Any], list[Any]]:
        """The stylesheet's rules, less those naming a class or id that the page's text does not even contain:
        they match nothing, and each rule costs a search of the whole page (a third of inlining). Most rules are
        the cards', and most cards of a digest are reused, so its page holds only placeholders for them."""
        key = (css_body, ruleset_index)
        parsed = self._rules.get(key)
        if parsed is None:
            parsed = self._rules[key] = super()._parse_style_rules(css_body, ruleset_index)
        rules, leftovers = parsed
        page: str = self.html
        return [rule for rule in rules if all(name in page for name in _selector_names(rule[1]))], leftovers

    def _css_rules_to_string(self, rules: list[Any]) -> str:
        """The @media and pseudo-class rules kept in <style>, written out once per (remembered) list of them."""
        done = self._leftovers.get(id(rules))
        if done is None or done[0] is not rules:
            done = self._leftovers[id(rules)] = (rules, super()._css_rules_to_string(rules))
        return done[1]


_NAMED = re.compile(r"[.#](-?[_a-zA-Z][\w-]*)")  # a class or id a selector requires (escapes left out: fewer names, as safe)


@lru_cache(maxsize=1024)
def _selector_names(selector: str) -> tuple[str, ...]:
    """The class and id names an element must carry to match this selector (a necessary condition only)."""
    return tuple(_NAMED.findall(selector))


def short_lines(text: str, limit: int = MIME_LINE_BYTES) -> str:
    """Break lines longer than `limit` UTF-8 bytes at a space: source lines a person can read, though the
    mail goes out quoted-printable in lines of 76 whatever their length.

    A newline is the same whitespace as a space in HTML (no <pre> in the digest) and in wrapped text. An ASCII
    line is as long in bytes as in characters, so only the others are encoded to be measured.
    """
    out: list[str] = []
    for line in text.split("\n"):
        while len(line) > limit or (not line.isascii() and len(line.encode("utf-8")) > limit):
            head = line.encode("utf-8")[:limit].decode("utf-8", "ignore")
            cut = head.rfind(" ")
            if cut <= 0:  # one unbroken run (only hostile text does this): leave it to the mailer's encoding
                break
            out.append(line[:cut])
            line = line[cut + 1 :]
        out.append(line)
    return "\n".join(out)


# bytes that quoted-printable writes as they are anywhere in a line: the others are escaped as three
_QP_PLAIN = bytes(c for c in range(33, 127) if c != ord("=")) + b" \t\n"


def mime_size_at_most(html: str) -> int:
    """An upper bound of `mime_size`, five times cheaper: every other byte escaped, each line's last character
    and a leading dot too, a soft line break each 72 characters; within 3% for a digest."""
    data = html.encode("utf-8")
    lines = data.count(b"\n") + 1
    flat = len(data) + 2 * len(data.translate(None, _QP_PLAIN)) + 4 * lines
    return flat + 3 * (flat // 72 + 1) + lines


def mime_size(html: str) -> int:
    """Bytes of the HTML part as the mailer sends it: UTF-8, quoted-printable, CRLF line ends."""
    encoded = binascii.b2a_qp(html.encode("utf-8"), istext=True)
    return len(encoded) + encoded.count(b"\n")


def sent_size(rendered: Rendered) -> int:
    """`mime_size` of the HTML part once a reader's values are in (see `_as_sent`)."""
    return mime_size(_as_sent(rendered))


def _as_sent(rendered: Rendered) -> str:
    """The HTML part as long as a reader's: each edition token (one per card link and the header's) counted at
    EDITION_TOKEN_CHARS, the other placeholders as they are (a few, each about a token long)."""
    return rendered.html.replace(rendered.placeholders.edition, "x" * EDITION_TOKEN_CHARS)


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
