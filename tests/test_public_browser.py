"""The public pages in headless Chromium at phone and desktop widths: screenshots go to test-output/, no sideways scroll."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import SHOTS, chromium_browser, serving
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer, free_port
from test_web import make_site

from newsletter import pipeline
from newsletter.config.load import load
from newsletter.storage.store import Store

pytestmark = pytest.mark.browser

WIDTHS = (375, 1280)


@pytest.fixture
def served(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, with the papers of the test feeds fetched."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, base_url=base)
        with Store(site.env.db) as store:
            pipeline.fetch(load(site.config_path), site.env, store)
        with serving(site.client.app, port):
            yield base


@pytest.mark.parametrize("width", WIDTHS)
def test_the_front_page_and_a_topic_page_fit_the_screen(chromium: str, served: str, width: int) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_browser(chromium) as browser:
        page = browser.new_page(viewport={"width": width, "height": 900}, java_script_enabled=False)
        for name, path in (("front", "/"), ("topic", "/topics/agents")):
            response = page.goto(served + path)
            assert response is not None and response.status == 200
            page.screenshot(path=str(SHOTS / f"public-{name}-{width}.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{path} scrolls sideways at {width} px"
            assert page.locator(".paper").count() > 0, f"{path} shows paper cards"
        page.goto(served + "/")
        first_card = page.locator(".paper").first.bounding_box()
        if width >= 1100:
            assert first_card and first_card["y"] < 900 and not page.locator(".jump").is_visible(), "papers beside the form, on the first screen"
        else:
            page.click(".jump a")  # the form fills a phone's first screen: a link jumps past it
            assert page.evaluate("document.getElementById('latest').getBoundingClientRect().top") < 50
        page.goto(served + "/topics/agents")
        page.click("a.older")
        assert page.url.startswith(served + "/topics/agents/2026-07-"), "the day links work without JavaScript"
        assert page.locator("h2.date").inner_text().startswith("29 Jul 2026")
