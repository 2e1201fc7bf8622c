"""Rendering: feed text is escaped, CSS is inlined, both parts carry the same papers, templates can be overridden."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from newsletter.digest import Digest, Entry, Section
from newsletter.papers import Paper
from newsletter.render import Reader, Renderer, RenderError, snippet
from newsletter.topics import Marks

HOSTILE = Paper(
    id="2411.00666",
    title='<script>alert("x")</script> LoRA & <b>bold</b> claims',
    abstract='We <img src=x onerror="alert(1)"> study LoRA. ' + "More words here. " * 40,
    authors=("Eve <eve@evil>", "Bob"),
    links={"abstract": "https://arxiv.org/abs/2411.00666", "pdf": "javascript:alert(1)"},
    published=datetime(2026, 11, 24, tzinfo=timezone.utc),
    score=12,
)
READER = Reader("ada@example.org", 'Ada "<The Great>"', "UNSUBTOKEN", "PREFTOKEN")


def digest(paper: Paper = HOSTILE, marks: Marks | None = None) -> Digest:
    entry = Entry(paper, ("Agents",), marks or Marks(title=[], abstract=[]))
    return Digest(date(2026, 11, 25), (Section("fine-tuning", "Fine-tuning", "About <tuning>", (entry,), cut=("a", "b", "c")),))


def render(d: Digest, templates: Path | None = None) -> tuple[str, str, str]:
    renderer = Renderer("https://news.example.org", templates)
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
    assert subject == "Paper digest · 25 Nov 2026 · 1 new paper"
    for part in (html, text):
        assert "https://arxiv.org/abs/2411.00666" in part
        assert "https://news.example.org/unsubscribe/UNSUBTOKEN" in part
        assert "and 3 more in Fine-tuning" in part
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
