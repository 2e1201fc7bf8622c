"""The digest in a real browser: headless Chromium at a desktop mail pane (600 px) and a phone (375 px).

Screenshots go to test-output/browser/ (gitignored) for a person to look at; the test fails when the
page scrolls sideways, which is what makes a mail unreadable on a phone.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from datetime import date
from pathlib import Path

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
    match_all,
)
from newsletter.model.paper import Paper
from newsletter.model.topics import Marks, Matcher

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output" / "browser"
FEEDS = ROOT / "samples" / "feeds"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars", "--mute-audio"]
LAYOUT = """JSON.stringify({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  containerWidth: document.querySelector(".container").getBoundingClientRect().width,
  height: document.documentElement.scrollHeight})"""


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fds 3 and 4).

    The CLI's --window-size cannot go below 500 px wide, so a phone is emulated with
    Emulation.setDeviceMetricsOverride, as DevTools' device mode does.
    """

    def __init__(self, chromium: str, profile: Path) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        hi_in, hi_out = os.dup(to_browser), os.dup(from_browser)  # above 4, so dup2 onto 3 and 4 cannot clobber them

        def wire() -> None:
            os.dup2(hi_in, 3)
            os.dup2(hi_out, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4, hi_in, hi_out),
            preexec_fn=wire,
        )
        for fd in (to_browser, from_browser, hi_in, hi_out):
            os.close(fd)
        self._buffer = b""
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        """Send one command and wait for its answer, skipping events."""
        self._id += 1
        message: dict[str, object] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def page(self, method: str, **params: object) -> dict:
        return self.call(method, self.session, **params)

    def layout(self, url: str, width: int, mobile: bool) -> dict[str, float]:
        """Load the page at a viewport width and return what the page measures of itself."""
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=800, deviceScaleFactor=1, mobile=mobile)
        self.page("Page.navigate", url=url)
        for _ in range(250):
            state = self.page("Runtime.evaluate", expression="document.readyState", returnByValue=True)["result"]["value"]
            if state == "complete":
                break
            time.sleep(0.02)
        return dict(json.loads(self.page("Runtime.evaluate", expression=LAYOUT, returnByValue=True)["result"]["value"]))

    def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> None:
        """The page (its first `height` px) at that width, as PNG."""
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        os.close(self._write)
        os.close(self._read)
        self.proc.terminate()
        self.proc.wait(timeout=10)


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


def test_digest_fits_a_phone_and_a_desktop_pane(chromium: str, tmp_path: Path) -> None:
    renderer = Renderer("https://digest.example.org")
    html, _ = renderer.personalise(renderer.render(sample_digest()), Reader("ada@example.org", "Ada", "TOKEN", "TOKEN"))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page = OUTPUT / "digest.html"
    page.write_text(html, encoding="utf-8")

    browser = Browser(chromium, tmp_path / "profile")
    try:
        seen = {}
        for width, mobile in ((600, False), (375, True)):
            seen[width] = browser.layout(page.as_uri(), width, mobile)
            browser.screenshot(OUTPUT / f"digest-{width}.png", width, min(int(seen[width]["height"]), 8000), mobile)
    finally:
        browser.close()
    print(f"screenshots: {OUTPUT}/digest-600.png {OUTPUT}/digest-375.png; layout: {seen}")

    assert all((OUTPUT / f"digest-{w}.png").stat().st_size > 10_000 for w in seen)
    assert seen[375]["innerWidth"] == 375 and seen[600]["innerWidth"] == 600
    assert seen[375]["scrollWidth"] <= 375, f"horizontal scroll at 375 px: {seen[375]}"
    assert seen[600]["scrollWidth"] <= 600, f"horizontal scroll at 600 px: {seen[600]}"
    assert seen[600]["containerWidth"] == 600 and seen[375]["containerWidth"] == 375, "600 px at most, fluid below"
