"""Paper cards say why a paper is there and what it is: matched words, arXiv id and categories, the authors'
comments, GitHub stars and Hugging Face's labelled AI summary beside the abstract, in both parts of a real digest."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

from markupsafe import escape

from newsletter import config
from newsletter.ingest.sources import parse
from newsletter.mail.filters import highlight, mark_text, matched_line, matched_words
from newsletter.mail.render import Reader, Renderer
from newsletter.model.config import Source
from newsletter.model.digest import Digest, Entry, Section, all_topics, compose
from newsletter.model.paper import Paper, merge
from newsletter.model.ranking import match_all
from newsletter.model.topics import Marks, Matcher

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "https://news.example.org"
READER = Reader("ada@example.org", "Ada", "UNSUB", "PREF", "EDITION")

# Topics whose words often sit deep in an abstract, or only in the authors or the categories.
CONF = config.parse(
    """\
settings:
  max_papers_per_topic: 12
sources:
  - {name: hf, type: hf_daily}
  - {name: arxiv, type: arxiv_rss, categories: [cs]}
  - {name: api, type: arxiv_api, query: "cat:cs.LG"}
topics:
  agents:
    title: Agents
    any: [agent*, "tool use"]
  benchmarks:
    title: Benchmarks
    any: [benchmark*, leaderboard]
  language:
    title: Computation and language
    any: ["category:cs.CL"]
  people:
    title: People
    any: ["author:Kyunghyun Cho", "author:Yann Le*"]
  physics:
    title: Physics
    any: [galax*, "dark matter", spectroscop*]
subscribers:
  - email: ada@example.org
    topics: [people, language, agents, benchmarks, physics]
""",
    "subs.yaml",
)


@cache
def papers() -> tuple[Paper, ...]:
    """Hugging Face (with ai_summary), the arXiv API (with comments) and the full arXiv RSS capture."""
    found: dict[str, Paper] = {}
    for name, source, path in (
        ("hf", Source(name="hf", type="hf_daily"), "hf_daily_papers/sotawhat__daily_papers_2026-06-12.json"),
        ("hf", Source(name="hf", type="hf_daily"), "hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json"),
        ("api", Source(name="api", type="arxiv_api"), "arxiv_api/personal-news-feed__api_cs_AI_LG_CL_25.xml"),
        ("api", Source(name="api", type="arxiv_api"), "arxiv_api/brevio__api_cat_cs_LG_OR_cs_AI_20.xml"),
        ("arxiv", Source(name="arxiv", type="arxiv_rss", announce_types=("new", "cross")), "arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml"),
    ):
        for paper in parse(source, (FIXTURES / path).read_bytes(), f"https://example.org/{name}").papers:
            found[paper.id] = merge(found[paper.id], paper) if paper.id in found else paper  # as storage does
    return tuple(found.values())


@cache
def rendered() -> tuple[Digest, str, str]:
    matcher = Matcher(all_topics(CONF))
    ps = list(papers())
    digest = compose(CONF, CONF.subscribers[0], matcher, ps, match_all(matcher, ps), set(), date(2026, 11, 25))
    assert digest is not None
    renderer = Renderer(BASE)
    done = renderer.render(digest)
    html, text = renderer.personalise(done, READER)
    return done.digest, html, text  # what was rendered: a digest over Gmail's size is cut


def cards(html: str, text: str, paper: Paper) -> tuple[str, str]:
    """The HTML and text of the one card that links to the paper's abstract."""
    link = paper.links["abstract"]
    (card_html,) = [c for c in html.split('<td class="paper')[1:] if f'href="{link}"' in c]
    (card_text,) = [c for c in text.split("\n* ")[1:] if f"Abstract: {link}\n" in c]
    return card_html.split("</td>", 1)[0], card_text


def test_every_card_of_a_real_digest_shows_one_of_its_matched_words_in_both_parts() -> None:
    digest, html, text = rendered()
    entries = [e for s in digest.sections for e in s.entries]
    assert {s.key for s in digest.sections} == {"people", "language", "agents", "benchmarks", "physics"}
    assert sum(1 for e in entries if matched_line(e.paper, e.marks)) >= 5, "the test meets cards that need the Matched: line"
    assert sum(1 for e in entries if e.marks.abstract and e.marks.abstract[0][0] > 420) >= 5, "and cards whose first match is deep"
    for entry in entries:
        words = matched_words(entry.paper, entry.marks)
        assert words, f"{entry.paper.id} was matched by some word"
        card_html, card_text = cards(html, text, entry.paper)
        plain_html = re.sub(r"<[^>]+>", "", card_html)
        assert any(str(escape(w)) in plain_html for w in words), f"{entry.paper.id}: none of {words} in its HTML card"
        assert any(w in " ".join(card_text.split()) for w in words), f"{entry.paper.id}: none of {words} in its text card"


def test_author_and_category_matches_are_named_on_the_card() -> None:
    digest, html, text = rendered()
    people = next(s for s in digest.sections if s.key == "people")
    entry = people.entries[0]
    assert "Kyunghyun Cho" in entry.marks.values
    card_html, card_text = cards(html, text, entry.paper)
    assert re.search(r'<p class="why"[^>]*>Matched: .*<mark[^>]*>Kyunghyun Cho</mark>', card_html)
    assert re.search(r"Matched: .*Kyunghyun Cho", " ".join(card_text.split()))
    language = next(s for s in digest.sections if s.key == "language")
    card_html, card_text = cards(html, text, language.entries[0].paper)
    assert "cs.CL" in language.entries[0].marks.values and re.search(r"Matched: .*cs\.CL", " ".join(card_text.split()))


def test_cards_show_arxiv_id_primary_category_cross_lists_and_comments() -> None:
    digest, html, text = rendered()
    by_id = {e.paper.id: e.paper for s in digest.sections for e in s.entries}
    commented = [p for p in by_id.values() if p.arxiv_comment]
    assert commented, "the arXiv API fixtures carry <arxiv:comment>"
    for paper in commented:
        card_html, card_text = cards(html, text, paper)
        assert f"arXiv:{paper.id}" in card_html and f"arXiv:{paper.id}" in card_text
        assert f"Comments: {escape(paper.arxiv_comment)}"[:60] in card_html
        assert f"Comments: {paper.arxiv_comment}"[:40] in " ".join(card_text.split())
    crossed = [p for p in by_id.values() if p.primary_category and len(p.categories) > 1]
    assert crossed, "some shown papers are cross-listed"
    for paper in crossed:  # the primary first (arXiv RSS and the API both say which), then the cross-lists
        card_html, card_text = cards(html, text, paper)
        label = f"{paper.primary_category}, also " + ", ".join(c for c in paper.categories if c != paper.primary_category)
        assert label in card_html and label in " ".join(card_text.split())


def test_the_ai_summary_is_a_labelled_tldr_beside_the_abstract_never_instead() -> None:
    digest, html, text = rendered()
    summarised = [e for s in digest.sections for e in s.entries if e.paper.ai_summary]
    assert summarised, "the 2026-06-12 Hugging Face capture has ai_summary"
    for entry in summarised:
        paper = entry.paper
        card_html, card_text = cards(html, text, paper)
        assert re.search(r"<strong[^>]*>TL;DR</strong> \(AI summary by Hugging Face\): " + re.escape(str(escape(paper.ai_summary))[:50]), card_html)
        assert f"TL;DR (AI summary by Hugging Face): {paper.ai_summary}"[:70] in " ".join(card_text.split())
        (shown,) = re.findall(r'<p class="abstract"[^>]*>(.*?)</p>', card_html, re.S)
        shown = " ".join(re.sub(r"<[^>]+>", "", shown).strip("…").split())
        assert len(shown) > 100 and shown in " ".join(paper.abstract.split()), "the authors' abstract is there, not the summary"
        assert " ".join(mark_text(paper.abstract, entry.marks.abstract, 420).split()[:8]) in " ".join(card_text.split())


def test_a_snippet_opens_at_the_first_match_when_the_opening_has_none() -> None:
    abstract = "We study many things at length. " * 20 + "Then LoRA adapters appear. And more follows here."
    start = abstract.index("LoRA")
    spans = [(start, start + 4)]
    assert mark_text(abstract, spans, 420) == "…Then *LoRA* adapters appear. And more follows here."
    assert "…Then <mark>LoRA</mark> adapters" in str(highlight(abstract, spans, 420))
    assert mark_text("LoRA first. " + abstract, [(0, 4)], 60).startswith("*LoRA* first.")  # the opening shows it: kept


def test_the_matched_line_names_the_words_only_when_the_marks_cannot() -> None:
    paper = Paper(id="1", title="LoRA for all", abstract="Adapters are small. " * 40 + "We also use QLoRA.")
    deep = len(paper.abstract) - 6
    assert matched_line(paper, Marks(title=[(0, 4)], abstract=[])) == [], "the marked title says it"
    assert matched_line(paper, Marks(title=[], abstract=[(deep, deep + 5)])) == [], "the snippet opens at the match"
    assert matched_line(paper, Marks(title=[(0, 4)], abstract=[], values=("cs.CL",))) == ["LoRA", "cs.CL"]
    assert matched_line(paper, Marks(title=[], abstract=[], values=("Ada Lovelace",))) == ["Ada Lovelace"]


def test_card_fields_are_inert_and_never_filled_per_reader() -> None:
    bait = "<script>x</script> {{ reader.email }} *|EMAIL|* <!--nl-card:0-->"
    paper = Paper(
        id="2411.00001",
        title="Bait",
        abstract="An abstract about bait.",
        categories=("cs.CL", bait),
        links={"abstract": "https://arxiv.org/abs/2411.00001"},
        arxiv_comment=bait,
        ai_summary=bait,
        primary_category=bait,
        stars=5,
    )
    entry = Entry(paper, (), Marks(title=[], abstract=[], values=(bait,)))
    digest = Digest(date(2026, 11, 25), (Section("s", "S", "", (entry,)),))
    renderer = Renderer(BASE)
    html, text = renderer.personalise(renderer.render(digest), READER)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<!--nl-" not in html
    assert html.count("ada@example.org") == renderer.personalise(renderer.render(digest), Reader("b@example.org", "B", "U", "P", "E"))[0].count("b@example.org")
    assert " ".join(text.split()).count(bait) >= 3, "the text part shows the comment, summary and matched value as they came"


def test_the_text_part_never_breaks_a_card_figure_or_date_across_lines() -> None:
    """Wherever the meta line wraps, "★ 8 stars", "▲ 12 upvotes" and the date stay on one line (the wrap once left
    "★" at a line's end and "8 stars" on the next); the line breaks only after a " ·"."""
    renderer = Renderer(BASE)
    categories = ("cs.CL", "cs.AI", "cs.LG", "stat.ML", "cs.CV", "math.OC")
    for n, digits in [(n, digits) for n in range(1, 7) for digits in range(1, 8)]:  # the figures cross every column
        upvotes = int("1234567"[:digits])
        paper = Paper(
            id=f"2411.{n:02d}{digits:03d}",  # a card is rendered once per paper
            title="Stars",
            abstract="An abstract.",
            categories=categories[:n],
            published=datetime(2026, 11, 25, 6, tzinfo=UTC),
            score=upvotes,
            stars=8,
        )
        digest = Digest(date(2026, 11, 25), (Section("s", "S", "", (Entry(paper, ("Agents", "Benchmarks"), Marks(title=[], abstract=[])),)),))
        text = renderer.personalise(renderer.render(digest), READER)[1]
        meta = text[text.index("* Stars\n") :].split("\n\n")[0].splitlines()[1:]
        assert len(meta) > 1 and all(line.startswith("  ") and len(line) <= 76 for line in meta), meta
        assert all(line.endswith(" ·") for line in meta[:-1]), meta
        for unit in ("★ 8 stars", f"▲ {upvotes} upvotes", "25 Nov 2026", "also in Agents, Benchmarks", ", ".join(categories[:n])):
            assert sum(unit in line for line in meta) == 1, (unit, meta)
