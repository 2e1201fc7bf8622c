"""A person in headless Chromium: fill the form, submit, follow the mailed link, confirm; screenshots go to test-output/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.browser import SHOTS, chromium_browser, serving
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer, free_port
from test_editions import CONFIG as CAPPED
from test_web import Site, make_site

from newsletter.cli import cli
from newsletter.config.load import load

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def server(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[tuple[str, SMTPServer, Path, Site]]:
    """The real app under uvicorn on a free loopback port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, base_url=base)
        with serving(site.client.app, port):
            yield base, smtp, site.config_path, site


def test_subscribe_confirm_in_a_phone_sized_browser(chromium: str, server: tuple[str, SMTPServer, Path, Site]) -> None:
    base, smtp, config_path, _ = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("[0-9]-*.png"):  # this test's own screenshots only: test_browser.py's stay
        old.unlink()
    with chromium_browser(chromium) as browser:
        page = browser.new_page(viewport=PHONE, java_script_enabled=False)
        page.goto(base + "/")
        page.fill("#email", "grace@example.org")
        page.check("input[name=topics][value=agents]")
        page.check("input[name=frequency][value=weekdays]")
        page.screenshot(path=str(SHOTS / "1-subscribe.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "no sideways scrolling on a phone"
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Check your inbox"
        page.screenshot(path=str(SHOTS / "2-check-inbox.png"), full_page=True)

        (mail,) = smtp.sink.to("grace@example.org")
        url = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", mail.get_content())
        assert url is not None
        page.goto(url.group(0))
        assert page.locator("h1").inner_text() == "Confirm your subscription"
        assert load(config_path).subscriber("grace@example.org") is None
        page.screenshot(path=str(SHOTS / "3-confirm.png"), full_page=True)
        page.click("text=Confirm subscription")
        assert page.locator("h1").inner_text() == "You are subscribed"
        page.screenshot(path=str(SHOTS / "4-subscribed.png"), full_page=True)
        subscriber = load(config_path).subscriber("grace@example.org")
        assert subscriber is not None and subscriber.topics == ("agents",) and subscriber.frequency == "weekdays"

        page.click("text=Change your preferences")
        assert page.locator("h1").inner_text() == "Your preferences"
        page.fill("#keywords", "tool use")
        page.click("button[type=submit]")
        assert "Saved" in page.inner_text("main")
        page.screenshot(path=str(SHOTS / "5-preferences.png"), full_page=True)
        assert load(config_path).subscriber("grace@example.org").keywords == ("tool use",)  # type: ignore[union-attr]

        page.click("text=Unsubscribe instead")
        assert page.locator("h1").inner_text() == "Unsubscribe"
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "You are unsubscribed"
        page.screenshot(path=str(SHOTS / "6-unsubscribed.png"), full_page=True)
        assert load(config_path).subscriber("grace@example.org") is None


def test_an_edition_page_reads_on_a_phone_and_a_desktop_and_a_cut_topics_link_lands_on_its_section(
    chromium: str, server: tuple[str, SMTPServer, Path, Site], http_server: LocalHTTPServer
) -> None:
    base, smtp, config_path, site = server
    config_path.write_text(CAPPED.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
    result = CliRunner().invoke(cli, ["send", "--to", "ada@example.org"], env=site.environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (mail,) = smtp.sink.to("ada@example.org")
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    view = re.search(r"View in your browser: (\S+)", text)
    more = re.search(r"more in LLM agents:\s+(\S+)#([\w-]+)", text)
    assert view and more and view.group(1).startswith(f"{base}/editions/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_browser(chromium) as browser:
        for name, viewport in (("375", {"width": 375, "height": 812}), ("1280", {"width": 1280, "height": 900})):
            page = browser.new_page(viewport=viewport, java_script_enabled=False)
            page.goto(view.group(1))
            assert page.locator("h1").inner_text().startswith("Your paper digest")
            page.screenshot(path=str(SHOTS / f"edition-{name}.png"), full_page=True)
            page.screenshot(path=str(SHOTS / f"edition-{name}-top.png"))
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], "no sideways scrolling"
            page.goto(f"{more.group(1)}#{more.group(2)}")
            top = page.evaluate(f"document.getElementById('{more.group(2)}').getBoundingClientRect().top")
            assert 0 <= top < 50, "the link lands on the topic's section"
            shelf = page.locator(f"#{more.group(2)}")
            assert shelf.locator(".cut-start").inner_text() == f"Not in your mail: {shelf.locator('.paper').count() - 3} more", "after the 3 it showed"
            page.close()


def test_the_sign_up_form_preselects_the_browsers_time_zone_and_keeps_the_default_without_javascript(
    chromium: str, server: tuple[str, SMTPServer, Path, Site]
) -> None:
    base, smtp, config_path, _ = server
    with chromium_browser(chromium) as browser:
        for zone, script, expected in (("America/Los_Angeles", True, "America/Los_Angeles"), ("Asia/Tokyo", False, "UTC")):
            page = browser.new_page(viewport=PHONE, timezone_id=zone, java_script_enabled=script)
            page.goto(base + "/")
            assert page.input_value("#timezone") == expected, (zone, script)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the time fields fit a phone"
            page.close()
        page = browser.new_page(viewport=PHONE, timezone_id="America/Los_Angeles")
        page.goto(base + "/")
        page.fill("#email", "cal@example.org")
        page.check("input[name=topics][value=agents]")
        page.fill("#send_at", "06:30")
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Check your inbox"
        (mail,) = smtp.sink.to("cal@example.org")
        url = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", mail.get_content())
        assert url is not None
        page.goto(url.group(0))
        page.click("text=Confirm subscription")
        me = load(config_path).subscriber("cal@example.org")
        assert me is not None and me.timezone == "America/Los_Angeles" and me.send_at.strftime("%H:%M") == "06:30"
