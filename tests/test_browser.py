"""The digest in a real browser: headless Chromium at a desktop mail pane (600 px) and a phone (375 px).

Screenshots go to test-output/browser/ (gitignored) for a person to look at; the test fails when the
page scrolls sideways, which is what makes a mail unreadable on a phone.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from support.browser import SHOTS, chromium_browser

from newsletter import config
from newsletter.ingest.sources import parse
from newsletter.mail.render import Reader, Renderer
from newsletter.model.config import Source
from newsletter.model.digest import (
    Digest,
    Entry,
    Section,
    all_topics,
    compose,
)
from newsletter.model.paper import Paper
from newsletter.model.ranking import match_all
from newsletter.model.topics import Marks, Matcher

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = SHOTS
FEEDS = ROOT / "samples" / "feeds"
LAYOUT = """() => ({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  containerWidth: document.querySelector(".container").getBoundingClientRect().width,
  height: document.documentElement.scrollHeight})"""


def layout_and_screenshot(browser: Browser, url: str, width: int, mobile: bool, shot: Path) -> dict[str, float]:
    """Load the page at a viewport width (a phone emulated as DevTools' device mode does), return what the page
    measures of itself, and save its first `height` px (at most 8000) as PNG."""
    context = browser.new_context(viewport={"width": width, "height": 800}, device_scale_factor=1, is_mobile=mobile)
    try:
        page = context.new_page()
        page.goto(url, wait_until="load")
        seen = dict(page.evaluate(LAYOUT))
        page.set_viewport_size({"width": width, "height": min(int(seen["height"]), 8000)})
        page.screenshot(path=str(shot))
        return seen
    finally:
        context.close()


def sample_digest() -> Digest:
    """A digest from the bundled feeds, plus one paper with an unbreakable title and a URL-sized word."""
    conf = config.parse(
        """\
settings: {max_papers_per_topic: 4}
sources:
  - {name: hf, type: hf_daily}
  - {name: arxiv, type: arxiv_rss, categories: [cs]}
topics:
  trending: {title: Trending on Hugging Face, sources: [hf], min_score: 20}
  agents: {title: LLM agents, any: [agent*, agentic]}
  tuning: {title: Fine-tuning & adaptation, any: [fine-tuning, LoRA, distillation]}
subscribers:
  - {email: ada@example.org, name: Ada, topics: [trending, agents, tuning]}
""",
        "browser.yaml",
    )
    hf = parse(Source(name="hf", type="hf_daily"), (FEEDS / "personal-news-feed__daily_papers_2026-07-31.json").read_bytes(), "https://example.org/hf")
    arxiv = parse(
        Source(name="arxiv", type="arxiv_rss", announce_types=("new", "cross")),
        (FEEDS / "aioarxiv__rss_all_archives_2024-11-28_full.xml").read_bytes(),
        "https://example.org/rss",
    )
    papers = hf.papers + arxiv.papers
    matcher = Matcher(all_topics(conf))
    digest = compose(conf, conf.subscribers[0], matcher, papers, match_all(matcher, papers), set(), date(2026, 11, 25))
    assert digest is not None
    wide = Paper(
        id="wide",
        title="Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + " as a benchmark",
        abstract="See https://example.org/" + "very-long-path/" * 12 + " for " + "supercalifragilistic" * 6 + ".",
        authors=("A. Person-With-A-Remarkably-Long-Double-Barrelled-Surname-Indeed",),
        links={"abstract": "https://example.org/" + "x" * 200},
    )
    last = digest.sections[-1]
    sections = digest.sections[:-1] + (Section(last.key, last.title, last.description, last.entries + (Entry(wide, (), Marks([], [])),), last.cut),)
    return Digest(digest.day, sections)


def test_digest_fits_a_phone_and_a_desktop_pane(chromium: str) -> None:
    renderer = Renderer("https://digest.example.org")
    html, _ = renderer.personalise(renderer.render(sample_digest()), Reader("ada@example.org", "Ada", "TOKEN", "TOKEN", "TOKEN"))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page = OUTPUT / "digest.html"
    page.write_text(html, encoding="utf-8")

    seen = {}
    with chromium_browser(chromium) as browser:
        for width, mobile in ((600, False), (375, True)):
            seen[width] = layout_and_screenshot(browser, page.as_uri(), width, mobile, OUTPUT / f"digest-{width}.png")
    print(f"screenshots: {OUTPUT}/digest-600.png {OUTPUT}/digest-375.png; layout: {seen}")

    assert all((OUTPUT / f"digest-{w}.png").stat().st_size > 10_000 for w in seen)
    assert seen[375]["innerWidth"] == 375 and seen[600]["innerWidth"] == 600
    assert seen[375]["scrollWidth"] <= 375, f"horizontal scroll at 375 px: {seen[375]}"
    assert seen[600]["scrollWidth"] <= 600, f"horizontal scroll at 600 px: {seen[600]}"
    assert seen[600]["containerWidth"] == 600 and seen[375]["containerWidth"] == 375, "600 px at most, fluid below"
