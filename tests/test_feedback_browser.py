"""A reader in headless Chromium at phone size: the mail's card links, the page they open, its button, and undoing it
on the preferences page; screenshots go to test-output/browser/ (feedback-*.png)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import SHOTS, chromium_browser, serving
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer, free_port
from test_editions import digests, parts, send
from test_feedback import CONFIG
from test_web import Site, make_site

from newsletter.config.load import load

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    port = free_port()
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, base_url=f"http://127.0.0.1:{port}")
        site.config_path.write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
        with serving(site.client.app, port):
            yield site


def test_fewer_like_this_from_the_mail_to_the_preferences_page_and_back_at_phone_size(chromium: str, site: Site) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    send(site)
    (mail,) = digests(site, "ada@example.org")
    _, html = parts(mail)
    original = site.yaml()
    with chromium_browser(chromium) as browser:
        page = browser.new_page(viewport=PHONE, java_script_enabled=False)
        page.set_content(html)
        card = page.locator("td.paper").first
        links = card.locator("p.tune a")
        assert links.all_inner_texts() == ["Follow author", "More like this", "Fewer like this"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "no sideways scrolling on a phone"
        size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('p.tune')).fontSize)")
        assert size < page.evaluate("parseFloat(getComputedStyle(document.querySelector('p.abstract')).fontSize)"), "smaller than the text"
        card.screenshot(path=str(SHOTS / "feedback-1-card.png"))

        page.goto(links.nth(2).get_attribute("href") or "")
        assert page.locator("h1").inner_text() == "Tune your digest" and page.url.endswith("#fewer")
        assert load(site.config_path).subscriber("ada@example.org").exclude == ()  # type: ignore[union-attr]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(SHOTS / "feedback-2-page.png"), full_page=False)
        fewer = page.locator("form#fewer")
        term = fewer.locator("input[name=rule]").nth(1)
        rule = term.get_attribute("value") or ""
        term.check()
        fewer.locator("button[type=submit]").click()
        assert page.locator("h1").inner_text() == "Done" and "stay out of your digest" in page.inner_text("main")
        assert load(site.config_path).subscriber("ada@example.org").exclude == (rule,)  # type: ignore[union-attr]
        page.screenshot(path=str(SHOTS / "feedback-3-done.png"), full_page=True)

        page.click("text=See or undo your rules")
        assert page.locator("h1").inner_text() == "Your preferences"
        rules = page.locator("#rules")
        assert rule in rules.inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        rules.screenshot(path=str(SHOTS / "feedback-4-rules.png"))
        rules.locator(f"button[aria-label='Remove {rule}']").click()
        assert "Removed." in page.inner_text("#rules") and rule not in page.locator("#rules ul").all_inner_texts()
        assert re.sub(" +", " ", site.yaml()) == re.sub(" +", " ", original), "undone: the file as it was"
