"""Rendering: feed text is escaped, CSS is inlined, both parts carry the same papers, the HTML stays under
Gmail's clipping size, templates can be overridden, and one prepared body serves every reader."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from email.headerregistry import Address
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from newsletter import config
from newsletter.errors import RenderError
from newsletter.ingest.sources import parse
from newsletter.mail.filters import snippet
from newsletter.mail.message import Headers, Stationery, build_message
from newsletter.mail.render import (
    EDITION_TOKEN_CHARS,
    MAX_HTML_BYTES,
    Reader,
    Renderer,
    inline_css,
    mime_size,
    sent_size,
)
from newsletter.model.config import Source
from newsletter.model.digest import (
    Digest,
    Entry,
    Section,
    all_topics,
    compose,
    shrink,
)
from newsletter.model.paper import Paper
from newsletter.model.ranking import match_all
from newsletter.model.topics import Marks, Matcher

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "https://news.example.org"

HOSTILE = Paper(
    id="2411.00666",
    title='<script>alert("x")</script> LoRA & <b>bold</b> claims',
    abstract='We <img src=x onerror="alert(1)"> study LoRA. ' + "More words here. " * 40,
    authors=("Eve <eve@evil>", "Bob"),
    links={"abstract": "https://arxiv.org/abs/2411.00666", "pdf": "javascript:alert(1)"},
    published=datetime(2026, 11, 24, tzinfo=UTC),
    score=12,
)
READER = Reader("ada@example.org", 'Ada "<The Great>"', "UNSUBTOKEN", "PREFTOKEN", "EDITIONTOKEN")


def digest(paper: Paper = HOSTILE, marks: Marks | None = None) -> Digest:
    entry = Entry(paper, ("Agents",), marks or Marks(title=[], abstract=[]))
    return Digest(date(2026, 11, 25), (Section("fine-tuning", "Fine-tuning", "About <tuning>", (entry,), cut=("a", "b", "c")),))


def render(d: Digest, templates: Path | None = None) -> tuple[str, str, str]:
    renderer = Renderer(BASE, templates)
    rendered = renderer.render(d)
    html, text = renderer.personalise(rendered, READER)
    return rendered.subject, html, text


def test_feed_markup_is_inert_in_html() -> None:
    _, html, _ = render(digest())
    assert "<script" not in html and "<img" not in html and "<b>bold" not in html
    assert "&lt;script&gt;" in html and "&lt;img" in html
    assert "javascript:" not in html, "only http(s) links are rendered"
    assert "&#34;&lt;The Great&gt;&#34;" in html and "<The Great>" not in html, "the reader's name is escaped too"


def test_css_is_inlined_and_links_are_absolute() -> None:
    _, html, _ = render(digest())
    assert re.search(r'<td class="paper break" style="[^"]*padding', html)
    assert 'href="https://news.example.org/unsubscribe/UNSUBTOKEN"' in html
    assert 'href="https://news.example.org/preferences/PREFTOKEN"' in html


def test_both_parts_carry_the_same_papers_links_and_counts() -> None:
    subject, html, text = render(digest())
    assert subject == "Paper digest · 25 Nov 2026 · 1 in this mail, 4 in the edition", "the edition holds the 3 cut papers too"
    assert "1 in this mail, 4 in the edition · 1 topic" in text and "1 in this mail, 4 in the edition · 1 topic" in html
    assert re.search(r'href="https://news.example.org/editions/EDITIONTOKEN"[^>]*>View in your browser</a>', html)
    assert "View in your browser: https://news.example.org/editions/EDITIONTOKEN\n" in text
    assert re.search(r'<a href="https://news.example.org/editions/EDITIONTOKEN#fine-tuning"[^>]*>…and 3 more in Fine-tuning</a>', html)
    assert "…and 3 more in Fine-tuning:\n  https://news.example.org/editions/EDITIONTOKEN#fine-tuning\n" in text
    for part in (html, text):
        assert "https://arxiv.org/abs/2411.00666" in part
        assert "https://news.example.org/unsubscribe/UNSUBTOKEN" in part
        assert "12 upvotes" in part
    assert '<script>alert("x")</script> LoRA & <b>bold</b> claims' in text, "the text part shows the title as it is"


def test_matched_keywords_are_marked_in_both_parts() -> None:
    paper = Paper(id="1", title="LoRA for all", abstract="We tune with LoRA adapters.", links={"abstract": "https://arxiv.org/abs/1"})
    _, html, text = render(digest(paper, Marks(title=[(0, 4)], abstract=[(13, 17)])))
    assert re.search(r"<mark[^>]*>LoRA</mark> for all", html) and re.search(r"with <mark[^>]*>LoRA</mark> adapters", html)
    assert "*LoRA* for all" in text and "with *LoRA* adapters" in text


def test_each_distinct_digest_is_rendered_once() -> None:
    renderer = Renderer("https://news.example.org")
    assert renderer.render(digest()) is renderer.render(digest())


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Short.", 50, "Short."),
        ("First sentence here. Second sentence is long and goes on.", 36, "First sentence here."),
        ("Tiny. Then a much longer second sentence that goes on.", 36, "Tiny. Then a much longer second…"),
        ("one two three four five six", 15, "one two three…"),
    ],
)
def test_snippets_end_at_a_sentence_or_word(text: str, limit: int, expected: str) -> None:
    assert snippet(text, limit) == expected


def test_templates_can_be_overridden_by_name(tmp_path: Path) -> None:
    (tmp_path / "digest.txt").write_text("CUSTOM {{ digest.count }} for {{ reader.name }}\n", encoding="utf-8")
    _, html, text = render(digest(), tmp_path)
    assert text == 'CUSTOM 1 for Ada "<The Great>"\n'
    assert "Fine-tuning" in html, "the bundled HTML template is still used"


def test_a_broken_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text("line one\n{% if %}\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"digest\.html:2: "):
        render(digest(), tmp_path)


# --------------------------------------------------------------------------- real digests from the fixtures

CONF = config.parse(
    """\
settings:
  max_papers_per_topic: 400
sources:
  - {name: hf, type: hf_daily}
  - {name: arxiv, type: arxiv_rss, categories: [cs]}
topics:
  trending:
    title: Trending on Hugging Face
    sources: [hf]
  learning:
    title: Learning
    any: [learning, "language model*"]
  physics:
    title: Physics
    any: [quantum, galax*, "dark matter"]
subscribers:
  - email: ada@example.org
    name: Ada
    topics: [trending, learning, physics]
""",
    "subs.yaml",
)


@cache
def fixture_papers() -> tuple[Paper, ...]:
    """Hugging Face's daily papers and the full arXiv RSS capture, parsed as the pipeline would."""
    hf = parse(
        Source(name="hf", type="hf_daily"),
        (FIXTURES / "hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json").read_bytes(),
        "https://example.org/hf",
    )
    arxiv = parse(
        Source(name="arxiv", type="arxiv_rss", announce_types=("new", "cross")),
        (FIXTURES / "arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml").read_bytes(),
        "https://example.org/rss",
    )
    return tuple(hf.papers + arxiv.papers)


def real_digest(cap: int) -> Digest:
    """Ada's digest from the fixtures, each topic capped at `cap` papers."""
    matcher = Matcher(all_topics(CONF))
    papers = list(fixture_papers())
    result = compose(CONF, CONF.subscribers[0], matcher, papers, match_all(matcher, papers), set(), date(2026, 11, 25))
    assert result is not None
    sections = tuple(Section(s.key, s.title, s.description, s.entries[:cap], tuple(e.paper.id for e in s.entries[cap:]) + s.cut) for s in result.sections)
    return Digest(result.day, sections)


def urls(part: str) -> set[str]:
    """Every page linked absolutely, outside the HTML head, without trailing punctuation (nor #fragment: a card's
    Follow, More and Fewer links open one page at three places, the text part's one link opens it at the top)."""
    return {u.partition("#")[0].rstrip("./") for u in re.findall(r"https?://[^\s\"'<>]+", part.split("<body", 1)[-1])}


def test_a_real_digest_makes_a_multipart_mail_whose_parts_agree() -> None:
    renderer = Renderer(BASE)
    d = real_digest(5)
    rendered = renderer.render(d)
    html, text = renderer.personalise(rendered, READER)
    headers = Headers(Address("Ada", addr_spec="ada@example.org"), rendered.subject, f"{BASE}/unsubscribe/UNSUBTOKEN", "Paper digest <digest.example.org>")
    msg = email.message_from_bytes(
        build_message(Address("Digest", addr_spec="digest@example.org"), headers, text, html).as_bytes(), policy=email.policy.default
    )
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"], "plain text first, HTML last (preferred)"
    plain, rich = (p.get_content() for p in msg.iter_parts())
    assert urls(plain) == urls(rich)
    assert re.search(r'<a href="#learning"', rich), "table-of-contents links stay in the mail"
    for paper in d.papers:
        assert paper.links["abstract"] in plain and paper.links["abstract"] in rich
    assert len(d.sections) == 3 and "Trending on Hugging Face (5)" in plain
    for section in d.sections:
        assert f"…and {section.more} more in {section.title}:\n  {BASE}/editions/EDITIONTOKEN#{section.anchor}\n" in plain
        assert re.search(f'<a href="{BASE}/editions/EDITIONTOKEN#{section.anchor}"[^>]*>…and {section.more} more in {re.escape(section.title)}</a>.', rich)
    assert re.search(r'<td class="toc"', rich), "several topics get a table of contents"
    assert 'role="presentation"' in rich and "max-width:600px" in rich.replace(" ", "")
    assert re.search(r'<table[^>]*class="container" width="600"', rich), "Outlook, which ignores max-width, gets 600 px"
    assert "<!--[if mso]>" in rich
    assert "▲ " in rich and "upvotes" in rich and "arXiv" in rich and "Hugging Face" in rich


def test_paper_cards_rendered_for_one_digest_are_reused_in_the_next_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A card is rendered and inlined once per send; a digest made of reused cards is the same mail, byte for
    byte, as one rendered from scratch (cards are styled without knowing their neighbours)."""
    whole, smaller = real_digest(5), real_digest(3)
    shared = Renderer(BASE)
    shared.render(whole)
    calls: list[str] = []
    for name in ("paper.html", "paper.txt"):
        template = shared.template(name)

        def counting(*args: object, _render: Any = template.render, _name: str = name, **kwargs: object) -> str:
            calls.append(_name)
            return str(_render(*args, **kwargs))

        monkeypatch.setattr(template, "render", counting)
    reused = shared.render(smaller)
    assert calls == [], "every card of the smaller digest came from the first one"
    fresh_renderer = Renderer(BASE)
    fresh = fresh_renderer.render(smaller)
    assert (shared.personalise(reused, READER), reused.subject) == (fresh_renderer.personalise(fresh, READER), fresh.subject)
    assert "<!--nl-" not in reused.html, "no card marker is left in the mail"
    cards = re.findall(r'<td class="paper break" style="([^"]*)"', reused.html)
    assert len(cards) == smaller.count and len(set(cards)) == 1 and "padding" in cards[0], "reused cards keep their inlined style"


def test_inlining_remembers_the_stylesheet_but_gives_what_premailer_gives() -> None:
    from premailer import Premailer

    page = '<html><head><style>p { color: red !important } .x a { color: blue } @media (max-width: 600px) { p { margin: 0 } }</style></head><body><p class="x"><a href="/a">a</a></p></body></html>'
    options = {
        "allow_network": False,
        "strip_important": False,
        "preserve_internal_links": True,
        "disable_basic_attributes": ["width", "height"],
        "disable_validation": True,
    }
    plain = Premailer(page, base_url=BASE + "/", **options).transform()
    assert inline_css(page, BASE) == plain and inline_css(page, BASE) == plain, "the second call, from the remembered rules, is the same"
    assert 'style="color:red !important"' in plain and "@media" in plain and 'href="https://news.example.org/a"' in plain


def test_the_hidden_preheader_sums_up_the_digest() -> None:
    d = real_digest(5)
    rendered = Renderer(BASE).render(d)
    assert d.total > d.count == 15
    assert rendered.preheader == f"15 in this mail, {d.total} in the edition · Trending on Hugging Face, Learning, Physics"
    assert re.search(r'<div class="preheader" style="[^"]*display:\s*none[^"]*">15 in this mail, \d+ in the edition · Trending', rendered.html)


def test_the_preheader_is_hidden_without_the_tricks_spam_filters_score() -> None:
    """SpamAssassin scores tiny fonts and text coloured like its background (FONT_INVIS_MSGID, HTML_FONT_LOW_CONTRAST, #15)."""
    rendered = Renderer(BASE).render(real_digest(5))
    style = re.search(r'<div class="preheader" style="([^"]*)">', rendered.html).group(1)  # type: ignore[union-attr]
    rules = dict(rule.split(":", 1) for rule in re.sub(r"\s", "", style).split(";") if rule)
    assert rules == {"display": "none", "max-height": "0", "max-width": "0", "overflow": "hidden", "mso-hide": "all"}


def test_each_table_of_contents_link_has_a_named_anchor_as_well_as_an_id() -> None:
    """Many mobile clients follow #links only to <a name>, not to an id (#15)."""
    html = Renderer(BASE).render(real_digest(2)).html
    targets = re.findall(r'<a href="#([^"]+)"', html)
    assert len(targets) > 1
    for target in targets:
        assert re.search(rf'<a name="{re.escape(target)}"[^>]*></a>', html), target
        assert f'id="{target}"' in html, target


def test_an_oversized_digest_is_cut_to_fit_and_says_how_many_more() -> None:
    d = real_digest(400)
    renderer = Renderer(BASE)
    full_size = mime_size(renderer._render_once(d).html)
    assert full_size > 2 * MAX_HTML_BYTES, "the fixture digest is far over budget"
    rendered = renderer.render(d)
    reader = replace(READER, edition_token="E" * EDITION_TOKEN_CHARS)  # as long as the budget counts it: the cards' links carry it
    html, _text = renderer.personalise(rendered, reader)
    shown = rendered.digest
    assert sent_size(rendered) <= MAX_HTML_BYTES and mime_size(html) <= MAX_HTML_BYTES + 500
    headers = Headers(Address("Ada", addr_spec="ada@example.org"), rendered.subject, f"{BASE}/u/T", "d <d.example.org>")
    stationery = Stationery(
        Address("D", addr_spec="d@example.org"), rendered.subject, headers.list_id, rendered.text, rendered.html, rendered.placeholders.names
    )
    raw = stationery.letter(headers, rendered.placeholders.values(reader)).data
    html_part = raw.split(b"Content-Type: text/html")[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    # within 0.5%: the mailer's quoted-printable breaks its lines a little apart from binascii's, more so the more long lines (links) there are
    assert abs(len(html_part) - sent_size(rendered)) < len(html_part) / 200, "the budget is measured as the part is sent"
    assert len(html_part) <= MAX_HTML_BYTES
    assert 20 < shown.count < d.count
    assert sorted(shown.covered_ids) == sorted(d.covered_ids), "papers cut to fit still count as delivered"
    for before, after in zip(d.sections, shown.sections, strict=True):
        assert after.more == before.more + len(before.entries) - len(after.entries)
        assert f"…and {after.more} more in {after.title}</a>." in rendered.html
        assert after.entries == before.entries[: len(after.entries)], "the best-ranked papers stay"


def test_shrink_cuts_proportionally_and_keeps_each_topics_best() -> None:
    d = real_digest(400)
    sizes = [len(s.entries) for s in d.sections]
    small = shrink(d, 40)
    assert small.count == 40
    for size, section in zip(sizes, small.sections, strict=True):
        assert len(section.entries) >= 1
        assert abs(len(section.entries) - size * 40 / sum(sizes)) <= 1
    assert shrink(d, d.count) is d


# --------------------------------------------------------------------------- hostile feeds


def edge_case(name: str) -> Paper:
    papers = parse(Source(name="src", type="feed"), (FIXTURES / "edge_cases" / name).read_bytes(), "https://example.org/feed").papers
    return papers[0] if papers else Paper(id="none", title="")


@pytest.mark.parametrize(
    ("fixture", "raw"),
    [
        (
            "feedparser__wellformed_sanitize_entry_title_script.xml",
            "safe<script type=\"text/javascript\">location.href='http:/'+'/example.com/';</script> description",
        ),
        ("feedparser__wellformed_atom10_entry_title_inline_markup.xml", "Example <b>Atom</b>"),
        ("feedparser__encoding_bozo_double-encoded-html.xml", "&lt;b&gt;&amp;acirc;&amp;#128;&amp;brvbar;"),
    ],
)
def test_hostile_fixtures_render_inert(fixture: str, raw: str) -> None:
    parsed = edge_case(fixture)
    for title in (parsed.title or "untitled", raw):  # as the source layer hands it on, and as if it had kept the markup
        paper = Paper(id="x1", title=title, abstract=raw + " and more", authors=(raw,), links={"abstract": "https://example.org/x1"})
        _, html, text = render(digest(paper, Marks(title=[], abstract=[])))
        body = html.split("<body", 1)[1]
        assert not re.search(r"<(script|b|img)\b", body), "no tag from a feed comes alive"
        assert "location.href" not in body or "&lt;script" in body
        assert "&amp;acirc;" not in raw or "&amp;amp;acirc;" in body, "entities are escaped once more, never decoded"
        assert title in text, "the text part shows the text as it is"


# What a feed might put in any field to make the per-reader substitution fill in a reader's secrets: the
# markers of earlier releases, template and mail-merge syntaxes, and the card markers of the renderer itself.
MARKER_BAIT = (
    "__NL_UNSUBSCRIBE_TOKEN__", "__NL_PREFERENCES_TOKEN__", "__NL_HTML_EMAIL__", "__NL_TEXT_EMAIL__",
    "__NL_HTML_NAME__", "__NL_TEXT_NAME__", "{{ reader.email }}", "{{unsubscribe_url}}", "{% raw %}{{ reader.name }}",
    "{reader.email}", "%(email)s", "$email", "${unsubscribe_url}", "*|EMAIL|*", "[[email]]",
    "<!--nl-card:0-->", "<!--nl-new:0-->x<!--nl-end:0-->",
)  # fmt: skip
BAIT = " ".join(MARKER_BAIT)
BAIT_URL = "https://evil.example/t?u=__NL_UNSUBSCRIBE_TOKEN__&p=__NL_PREFERENCES_TOKEN__&e=__NL_HTML_EMAIL__&t=__NL_TEXT_EMAIL__&n=__NL_TEXT_NAME__&x={{unsubscribe_url}}"


def bait_paper(n: int) -> Paper:
    """A paper carrying every marker in every field a feed controls."""
    return Paper(
        id=f"2411.0066{n}",
        title=f"LoRA {BAIT}",
        abstract=f"We study LoRA. {BAIT} " + "More words. " * 5,
        authors=tuple(MARKER_BAIT),
        categories=tuple(MARKER_BAIT),
        links={key: BAIT_URL for key in ("abstract", "pdf", "code", "project", "hf", "doi")},
        published=datetime(2026, 11, 24, tzinfo=UTC),
        score=30,
        keywords=tuple(MARKER_BAIT),
        stars=7,
        arxiv_comment=BAIT,
        primary_category=MARKER_BAIT[0],
        ai_summary=BAIT,
    )


def secrets_in(part: str, reader: Reader) -> Counter[str]:
    """How often each of the reader's values shows in a part, HTML-escaped or not."""
    values = {reader.unsubscribe_token, reader.preferences_token, reader.email, str(escape(reader.name)), reader.name}
    return Counter({value: part.count(value) for value in values})


@pytest.mark.parametrize("via", ["stationery", "personalise"])
def test_feed_text_cannot_make_the_mail_carry_a_readers_tokens_address_or_name(via: str) -> None:
    """Each reader value appears exactly where the templates put it, however many markers the feed tries."""
    renderer = Renderer(BASE)
    benign, hostile = real_digest(3), real_digest(3)
    first = hostile.sections[0]
    entries = (
        Entry(bait_paper(1), ("Physics",), Marks(title=[(0, 4)], abstract=[], values=MARKER_BAIT)),  # a Matched: line of bait
        Entry(bait_paper(2), (), Marks(title=[], abstract=[])),
    )
    hostile = Digest(hostile.day, (Section(first.key, first.title, first.description, entries + first.entries, first.cut), *hostile.sections[1:]))
    reader = Reader("ada@example.org", "Ada Lovelace", "UNSUBxTOKENx42", "PREFxTOKENx42", "EDITIONxTOKENx42")

    def parts(d: Digest) -> tuple[str, str]:
        rendered = renderer.render(d)
        if via == "personalise":
            return renderer.personalise(rendered, reader)
        stationery = Stationery(
            Address("D", addr_spec="d@example.org"), rendered.subject, "d <d.example.org>", rendered.text, rendered.html, rendered.placeholders.names
        )
        headers = Headers(Address(reader.name, addr_spec=reader.email), rendered.subject, f"{BASE}/unsubscribe/{reader.unsubscribe_token}", "d <d.example.org>")
        msg = email.message_from_bytes(stationery.letter(headers, rendered.placeholders.values(reader)).data, policy=email.policy.default)
        return msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    (benign_html, benign_text), (html, text) = parts(benign), parts(hostile)
    assert secrets_in(html, reader) == secrets_in(benign_html, reader), "HTML: only the footer's own links and greeting"
    assert secrets_in(text, reader) == secrets_in(benign_text, reader), "text: only the footer's own links and greeting"
    assert secrets_in(benign_text, reader)[reader.unsubscribe_token] >= 1, "the footer does carry the reader's link"
    for bait in MARKER_BAIT:
        assert bait in text, f"the text part shows {bait!r} as it is, unfilled"
    assert html.count(str(escape(BAIT_URL))) >= 6 and "<!--nl-" not in html, "the bait link is shown as it came, and no card marker is left"


def test_every_renderer_makes_its_own_placeholders_that_no_feed_can_know() -> None:
    one, two = Renderer(BASE).placeholders, Renderer(BASE).placeholders
    assert set(one.names).isdisjoint(two.names) and len(set(one.names)) == 7
    assert all(re.fullmatch(r"nl[0-9a-f]{32}[a-z]{2}", name) for name in one.names), "128 random bits, letters and digits only"


def test_a_reader_name_that_looks_like_a_placeholder_is_not_filled_in_turn() -> None:
    renderer = Renderer(BASE)
    rendered = renderer.render(digest())
    marks = rendered.placeholders
    sly = Reader("eve@example.org", marks.unsubscribe, "UNSUBTOKEN", "PREFTOKEN", "EDITIONTOKEN")
    html, text = renderer.personalise(rendered, sly)
    assert f"for {marks.unsubscribe}" in text and marks.unsubscribe in html, "the name is shown as given, not expanded"


def test_autoescape_applies_to_overridden_html_templates(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text("<p>{{ digest.sections[0].entries[0].paper.title }}</p>", encoding="utf-8")
    _, html, _ = render(digest(), tmp_path)
    assert "&lt;script&gt;" in html and "<script>" not in html
    env = Renderer(BASE).env
    assert all(env.autoescape(name) for name in ("base.html", "digest.html", "digest.html.j2", "custom.htm")), "every HTML name escapes"
    assert not env.autoescape("digest.txt")


def test_a_runtime_template_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.txt").write_text("one\n{{ digest.nonexistent }}\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"digest\.txt:2: "):
        render(digest(), tmp_path)


def test_marks_stay_on_their_words_after_a_paragraph_break_in_the_abstract() -> None:
    abstract = "First paragraph.\n\nSecond one uses  LoRA adapters."
    start = abstract.index("LoRA")
    paper = Paper(id="1", title="T", abstract=abstract, links={"abstract": "https://arxiv.org/abs/1"})
    _, html, text = render(digest(paper, Marks(title=[], abstract=[(start, start + 4)])))
    assert re.search(r"uses\s+<mark[^>]*>LoRA</mark> adapters", html)
    assert "*LoRA* adapters" in text


def test_the_stationery_of_a_rendered_digest_sends_what_personalise_shows() -> None:
    """The pipeline fills placeholders in MIME bytes; `newsletter preview` uses personalise: same result."""
    renderer = Renderer(BASE)
    rendered = renderer.render(real_digest(5))
    assert set(rendered.placeholders.values(READER)) == set(rendered.placeholders.names), "every placeholder has a value"
    stationery = Stationery(
        Address("D", addr_spec="d@example.org"), rendered.subject, "d <d.example.org>", rendered.text, rendered.html, rendered.placeholders.names
    )
    for reader in (READER, Reader("zoe@example.org", 'Zoë "Z" <O\'Neil>, Ph.D.', "u" * 300, "p" * 300, "e" * 300)):
        headers = Headers(Address(reader.name, addr_spec=reader.email), rendered.subject, f"{BASE}/u/T", "d <d.example.org>")
        msg = email.message_from_bytes(stationery.letter(headers, rendered.placeholders.values(reader)).data, policy=email.policy.default)
        html, text = renderer.personalise(rendered, reader)
        for kind, shown in (("html", html), ("plain", text)):
            sent = msg.get_body((kind,)).get_content()  # type: ignore[union-attr]
            assert sent.replace("\r\n", "\n").rstrip("\n") == shown.rstrip("\n"), kind  # CRLF on the wire, one final line end
