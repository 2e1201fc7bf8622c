"""The sign-up form's time zone and send time, the preferences form after an error or a pause, and the styled 404,
driven over HTTP like tests/test_web.py (#21)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer
from test_web import SECRET, Site, csrf, link, make_site

from newsletter.config.load import load
from newsletter.mail import tokens
from newsletter.model.zones import COMMON


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    with SMTPServer() as smtp:
        yield make_site(tmp_path, http_server, smtp)


def offered(html: str) -> list[str]:
    select = re.search(r'<select id="timezone"[^>]*>(.*?)</select>', html, re.S)
    assert select, "the form offers a time zone"
    return re.findall(r'<option value="([^"]+)"', select.group(1))


def selected_zone(html: str) -> str:
    found = re.search(r'<option value="([^"]+)" selected>', html)
    assert found
    return found.group(1)


def sign_up(site: Site, **fields: str) -> str:
    """Subscribe to `agents` with these extra fields and confirm; the entry's lines as written."""
    before = site.yaml()
    token = csrf(site.client.get("/").text)
    answer = site.client.post("/", data={"csrf": token, "email": "cal@example.org", "topics": ["agents"], "frequency": "daily", **fields})
    assert answer.status_code == 200, answer.text
    confirm = link(site.mails_to("cal@example.org")[0], "confirm")
    assert site.client.post(confirm, data={"csrf": csrf(site.client.get(confirm).text)}).status_code == 200
    return site.yaml()[len(before) :]


def test_the_sign_up_form_offers_common_zones_first_without_deprecated_aliases_and_a_script_to_preselect(site: Site) -> None:
    page = site.client.get("/")
    zones = offered(page.text)
    assert zones[: len(COMMON)] == list(COMMON), "the common zones come first"
    assert "Europe/Amsterdam" in zones and "America/Argentina/Buenos_Aires" in zones and len(zones) > 300
    for alias in ("Africa/Timbuktu", "US/Pacific", "Asia/Calcutta", "GB", "Etc/GMT+5"):
        assert alias not in zones, f"{alias} is a deprecated alias"
    assert len(zones) == len(set(zones))
    assert selected_zone(page.text) == "UTC" and "data-from-browser" in page.text, "without JavaScript the installation's default"
    assert 'id="send_at" name="send_at" value="07:00"' in page.text
    script = site.client.get("/zone.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in script.text


def test_a_chosen_zone_and_time_are_written_to_the_entry_quoted_and_defaults_are_left_out(site: Site) -> None:
    assert sign_up(site, timezone="America/Los_Angeles", send_at="06:30") == (
        '  - email: cal@example.org\n    topics: [agents]\n    send_at: "06:30"\n    timezone: America/Los_Angeles\n'
    )
    me = load(site.config_path).subscriber("cal@example.org")
    assert me is not None and me.timezone == "America/Los_Angeles" and me.send_at.strftime("%H:%M") == "06:30"


def test_the_installations_defaults_add_nothing_to_the_entry(site: Site) -> None:
    assert sign_up(site, timezone="UTC", send_at="07:00") == "  - email: cal@example.org\n    topics: [agents]\n"


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"timezone": "Africa/Timbuktu", "send_at": "07:00"}, "Pick a time zone from the list."),
        ({"timezone": "Mars/Olympus", "send_at": "07:00"}, "Pick a time zone from the list."),
        ({"timezone": "Asia/Tokyo", "send_at": "25:00"}, "The send time &#39;25:00&#39; should look like 07:30 (24-hour)."),
    ],
)
def test_a_zone_not_offered_or_a_bad_time_is_refused_server_side_keeping_the_form(site: Site, fields: dict[str, str], said: str) -> None:
    token = csrf(site.client.get("/").text)
    answer = site.client.post("/", data={"csrf": token, "email": "cal@example.org", "topics": ["agents"], "frequency": "daily", **fields})
    assert answer.status_code == 400 and said in answer.text
    assert 'value="cal@example.org"' in answer.text and f'name="send_at" value="{fields["send_at"]}"' in answer.text
    assert "data-from-browser" not in answer.text, "the script leaves what the visitor picked"
    if fields["timezone"] == "Asia/Tokyo":
        assert selected_zone(answer.text) == "Asia/Tokyo"
    assert site.mails_to("cal@example.org") == []


def preferences(site: Site) -> tuple[str, str]:
    url = "/preferences/" + tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org")
    return url, csrf(site.client.get(url).text)


def test_the_preferences_form_keeps_what_was_typed_after_an_error_and_names_the_keyword(site: Site) -> None:
    url, token = preferences(site)
    before = site.yaml()
    typed = {"csrf": token, "topics": ["agents"], "keywords": "tool use, /(a+)+$/", "frequency": "weekly", "day": "friday"}
    answer = site.client.post(url, data={**typed, "send_at": "18:15", "timezone": "Europe/Berlin"})
    assert answer.status_code == 400
    assert "The keyword &#39;/(a+)+$/&#39; cannot be used" in answer.text
    assert 'value="tool use, /(a+)+$/"' in answer.text and 'value="18:15"' in answer.text
    assert re.search(r'value="agents" checked', answer.text) and not re.search(r'value="trending" checked', answer.text)
    assert 'value="weekly" checked' in answer.text and '<option value="friday" selected>' in answer.text
    assert "<option selected>Europe/Berlin</option>" in answer.text
    assert site.yaml() == before


def test_after_pausing_the_page_says_it_is_paused_and_how_to_resume(site: Site) -> None:
    url, token = preferences(site)
    fields = {"csrf": token, "topics": ["agents"], "frequency": "daily", "day": "monday", "send_at": "07:00", "timezone": "UTC"}
    paused = site.client.post(url, data={**fields, "paused": "1"})
    assert paused.status_code == 200
    assert "Your next digest follows these settings" not in paused.text
    assert "Your digest is paused: nothing is sent until you untick “Pause the digest for now” below and save again." in paused.text
    resumed = site.client.post(url, data=fields)
    assert "Saved. Your next digest follows these settings." in resumed.text


def test_unknown_urls_get_the_styled_404_page(site: Site) -> None:
    for path in ("/no/such/page", "/preferences", "/topics/nothing-here"):
        answer = site.client.get(path)
        assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html"), path
        assert '<link rel="stylesheet" href="/style.css">' in answer.text and "There is no page here." in answer.text
        assert '<a href="/">Front page</a>' in answer.text
