"""The subscription web app driven over HTTP (Starlette's test client), with mail caught by a real SMTP server."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import itsdangerous.timed
import pytest
from click.testing import CliRunner
from filelock import FileLock
from starlette.testclient import TestClient
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer

from newsletter import environment, pipeline
from newsletter.cli import cli
from newsletter.config import edit
from newsletter.config.load import load
from newsletter.environment import Env
from newsletter.mail import tokens
from newsletter.mail.pool import transport
from newsletter.model.paper import Paper
from newsletter.storage.store import Store
from newsletter.subscriptions import service
from newsletter.subscriptions.service import Limits
from newsletter.web.app import create_app

SECRET = "test-secret-key"

CONFIG = """\
# Hand-written header comment: keep me.
settings:
  allow_private_network: true
  send_at: "07:00"   # quoted on purpose

sources:
  - name: hf
    type: hf_daily
    url: {base}/hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json
  - name: cs-ai
    type: arxiv_rss
    categories: [cs.AI]
    url: {base}/arxiv_rss/distill__arxiv_cs_ai.xml

topics:
  agents:
    title: LLM agents
    description: Language models that plan, call tools and act.
    any: [agent*]
  trending:
    title: Trending
    description: The most upvoted papers of the day.
    sources: [hf]
    min_score: 100

subscribers:
  # the founders
  - email: ada@example.org   # Ada's comment
    name: Ada
    topics: [trending, agents]
"""


@dataclass
class Site:
    """Everything one test needs: the app's client, the mail catcher, and the files behind them."""

    client: TestClient
    smtp: SMTPServer
    env: Env
    environ: dict[str, str]
    config_path: Path

    def yaml(self) -> str:
        return self.config_path.read_text(encoding="utf-8")

    def mails_to(self, address: str) -> list[EmailMessage]:
        return self.smtp.sink.to(address)

    def fresh_client(self) -> TestClient:
        """A second visitor: same app, no cookies."""
        return TestClient(self.client.app, base_url=str(self.client.base_url))


def csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


def link(mail: EmailMessage, path: str) -> str:
    """The first http://localhost link to `path` in a mail's text part, as a path for the test client."""
    body = mail.get_body(("plain",))
    assert body is not None
    match = re.search(rf"http://localhost(/{path}/[\w.\-]+)", body.get_content())
    assert match, f"no /{path}/ link in:\n{body.get_content()}"
    return match.group(1)


def make_site(
    tmp_path: Path,
    http_server: LocalHTTPServer,
    smtp: SMTPServer,
    limits: Limits | None = None,
    base_url: str = "http://localhost",
    extra: dict[str, str] | None = None,
) -> Site:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / "subscribers.yaml"
    config_path.write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
    environ = {
        **smtp.env(),
        "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DB": str(tmp_path / "state.db"),
        "NEWSLETTER_BASE_URL": base_url,
        "NEWSLETTER_CONFIG": str(config_path),
        **(extra or {}),
    }
    env = environment.load(environ, dotenv=tmp_path / ".env")
    app = create_app(env, config_path, limits=limits)
    return Site(TestClient(app, base_url=base_url), smtp, env, environ, config_path)


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    with SMTPServer() as smtp:
        yield make_site(tmp_path, http_server, smtp)


def subscribe(site: Site, email: str, topics: list[str], frequency: str = "daily", client: TestClient | None = None):  # type: ignore[no-untyped-def]
    client = client or site.client
    token = csrf(client.get("/").text)
    return client.post("/", data={"csrf": token, "email": email, "topics": topics, "frequency": frequency})


def test_the_whole_flow_from_subscribe_to_one_click_unsubscribe(site: Site) -> None:
    with Store(site.env.db) as store:
        pipeline.fetch(load(site.config_path), site.env, store)

    page = site.client.get("/")
    assert page.status_code == 200
    assert "Language models that plan, call tools and act." in page.text, "topics are offered with their descriptions"

    answer = subscribe(site, "New.Reader@Example.COM", ["agents"], "weekdays")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    (mail,) = site.mails_to("New.Reader@example.com")
    assert mail["Subject"] == "Confirm your paper digest subscription"
    confirm = link(mail, "confirm")

    before = site.yaml()
    shown = site.client.get(confirm)
    assert shown.status_code == 200 and "Confirm subscription" in shown.text
    assert site.yaml() == before, "opening the link (as mail scanners do) changes nothing"

    done = site.client.post(confirm, data={"csrf": csrf(shown.text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    after = site.yaml()
    assert after.startswith(before), "the person's file is untouched: comments, quotes, order"
    assert after[len(before) :] == "  - email: new.reader@example.com\n    topics: [agents]\n    frequency: weekdays\n"
    assert load(site.config_path).subscriber("new.reader@example.com") is not None

    welcome = site.mails_to("New.Reader@example.com")[-1]
    assert welcome["Subject"] == "Welcome to the paper digest"
    assert "https://arxiv.org/abs/" in welcome.get_body(("plain",)).get_content(), "the welcome shows recent papers for their topics"
    assert site.client.post(confirm, data={"csrf": csrf(shown.text)}).status_code == 400, "a confirmation link works once"

    result = CliRunner().invoke(cli, ["send", "--to", "new.reader@example.com"], env=site.environ, catch_exceptions=False)  # whatever the weekday
    assert result.exit_code == 0, result.output
    digest = next(m for m in site.mails_to("New.Reader@example.com") if m["Subject"].startswith("Paper digest"))
    unsubscribe, preferences = link(digest, "unsubscribe"), link(digest, "preferences")
    assert digest["List-Unsubscribe"] == f"<http://localhost{unsubscribe}>"
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    prefs = site.client.get(preferences)
    assert prefs.status_code == 200 and "new.reader@example.com" in prefs.text
    saved = site.client.post(
        preferences,
        data={
            "csrf": csrf(prefs.text),
            "topics": ["agents", "trending"],
            "keywords": "tool use",
            "frequency": "weekly",
            "day": "friday",
            "send_at": "18:15",
            "timezone": "Europe/Berlin",
        },
    )
    assert saved.status_code == 200 and "Saved" in saved.text
    me = load(site.config_path).subscriber("new.reader@example.com")
    assert me is not None and (me.topics, me.keywords, me.frequency, me.day, me.timezone) == (
        ("agents", "trending"),
        ("tool use",),
        "weekly",
        "friday",
        "Europe/Berlin",
    )
    assert me.send_at.strftime("%H:%M") == "18:15"
    assert site.yaml().startswith(before), "editing preferences leaves everyone else's lines alone"

    gone = site.fresh_client().post(unsubscribe, data={"List-Unsubscribe": "One-Click"})  # RFC 8058: no cookies, no CSRF token
    assert gone.status_code == 200
    assert load(site.config_path).subscriber("new.reader@example.com") is None
    assert site.yaml() == before, "unsubscribing removes exactly what subscribing added"

    with Store(site.env.db) as store:
        store.add_papers(
            [Paper(id="2611.00001", title="A new LLM agent benchmark", abstract="An agent evaluation.", sources=("cs-ai",), published=datetime.now(UTC))]
        )
    sent_before = len(site.smtp.messages)
    result = CliRunner().invoke(cli, ["send"], env=site.environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    recipients = [m["To"].addresses[0].addr_spec for m in site.smtp.messages[sent_before:]]
    assert recipients == ["ada@example.org"], "the next send skips the person who left"


def test_the_first_digest_does_not_repeat_the_papers_of_the_welcome_mail(site: Site) -> None:
    with Store(site.env.db) as store:
        pipeline.fetch(load(site.config_path), site.env, store)
    subscribe(site, "new@example.com", ["agents"])
    confirm = link(site.mails_to("new@example.com")[0], "confirm")
    site.client.post(confirm, data={"csrf": csrf(site.client.get(confirm).text)})
    welcome = site.mails_to("new@example.com")[-1]
    shown = set(re.findall(r"https://arxiv\.org/abs/[\w.]+", welcome.get_body(("plain",)).get_content()))
    assert shown, "the welcome shows papers"

    result = CliRunner().invoke(cli, ["send", "--to", "new@example.com"], env=site.environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    digests = [m for m in site.mails_to("new@example.com") if m["Subject"].startswith("Paper digest")]
    repeated = {u for m in digests for u in re.findall(r"https://arxiv\.org/abs/[\w.]+", m.get_body(("plain",)).get_content())} & shown
    assert repeated == set(), "nothing is mailed twice, the welcome included"


def test_subscribing_an_address_that_is_already_subscribed_looks_the_same(site: Site) -> None:
    known = subscribe(site, "ada@example.org", ["agents"])
    unknown = subscribe(site, "zed@example.org", ["agents"])
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("ada@example.org", "X") == unknown.text.replace("zed@example.org", "X")
    (note,) = site.mails_to("ada@example.org")
    assert note["Subject"] == "You are already subscribed to the paper digest", "the owner is told; nothing changes"
    assert "/preferences/" in note.get_content()
    assert load(site.config_path).subscriber("ada@example.org").topics == ("trending", "agents")  # type: ignore[union-attr]


def test_no_typed_text_reaches_a_mail(site: Site) -> None:
    subscribe(site, "eve@example.org", ["agents", "<b>buy pills</b>", "trending\r\nBcc: x@example.org"], "hourly<script>")
    assert site.mails_to("eve@example.org") == [], "an unknown frequency is refused"
    subscribe(site, "eve@example.org", ["agents", "<b>buy pills</b>"])
    (mail,) = site.mails_to("eve@example.org")
    text = mail.get_content()
    assert "LLM agents" in text and "pills" not in text and "<" not in text


def test_bad_addresses_are_refused_with_the_form_kept(site: Site) -> None:
    answer = subscribe(site, "not an address", ["agents"])
    assert answer.status_code == 400
    assert "does not look like an email address" in answer.text
    assert 'value="not an address"' in answer.text and 'value="agents" checked' in answer.text
    assert site.smtp.messages == []


def test_forms_without_a_matching_csrf_token_are_refused(site: Site) -> None:
    site.client.get("/")
    assert site.client.post("/", data={"email": "a@example.org", "topics": "agents"}).status_code == 403
    assert site.client.post("/", data={"csrf": "forged", "email": "a@example.org", "topics": "agents"}).status_code == 403
    token = csrf(site.client.get("/").text)
    other_site = site.client.post("/", data={"csrf": token, "email": "a@example.org", "topics": "agents"}, headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403
    assert site.smtp.messages == []

    subscribe(site, "b@example.org", ["agents"])
    confirm = link(site.mails_to("b@example.org")[0], "confirm")
    assert site.fresh_client().post(confirm, data={"csrf": "x"}).status_code == 403
    unsubscribe = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org")
    assert site.fresh_client().post(unsubscribe, data={"csrf": "x"}).status_code == 403, "the page's button needs the token"
    assert load(site.config_path).subscriber("ada@example.org") is not None


def test_one_click_unsubscribe_accepts_multipart_and_is_idempotent(site: Site) -> None:
    url = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org")
    client = site.fresh_client()
    assert client.post(url, files={"List-Unsubscribe": (None, "One-Click")}).status_code == 200
    assert load(site.config_path).subscriber("ada@example.org") is None
    assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200, "twice is fine"
    page = client.get(url)
    assert page.status_code == 200 and "is not subscribed" in page.text
    assert "# the founders" in site.yaml() and "# Hand-written header comment" in site.yaml()


def test_the_unsubscribe_page_asks_before_it_acts(site: Site) -> None:
    url = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org")
    page = site.client.get(url)
    assert page.status_code == 200 and "Stop sending the paper digest to <strong>ada@example.org</strong>" in page.text
    assert load(site.config_path).subscriber("ada@example.org") is not None
    done = site.client.post(url, data={"csrf": csrf(page.text)})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert load(site.config_path).subscriber("ada@example.org") is None


@pytest.mark.parametrize(
    "path",
    [
        "/confirm/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org nonce"),  # wrong purpose
        "/unsubscribe/" + tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org"),  # wrong purpose
        "/preferences/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org"),  # wrong purpose
        "/unsubscribe/" + tokens.sign("another-secret", tokens.UNSUBSCRIBE, "ada@example.org"),  # forged
        "/preferences/" + tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org")[:-2] + "xx",  # tampered
        "/confirm/garbage",
    ],
    ids=["confirm-with-unsubscribe-token", "unsubscribe-with-preferences-token", "preferences-with-unsubscribe-token", "forged", "tampered", "garbage"],
)
def test_links_with_bad_tokens_do_nothing(site: Site, path: str) -> None:
    before = site.yaml()
    assert site.client.get(path).status_code == 400
    assert site.fresh_client().post(path, data={"List-Unsubscribe": "One-Click"}).status_code in (400, 403)
    assert site.yaml() == before


def test_confirmation_links_expire_and_only_the_latest_works(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    real_time = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() - 49 * 3600)
    subscribe(site, "old@example.org", ["agents"])
    monkeypatch.undo()
    expired = link(site.mails_to("old@example.org")[0], "confirm")
    assert site.client.get(expired).status_code == 400, "older than 48 hours"

    subscribe(site, "twice@example.org", ["agents"])
    subscribe(site, "twice@example.org", ["trending"])
    first, second = (link(m, "confirm") for m in site.mails_to("twice@example.org"))
    assert site.client.get(first).status_code == 400, "a newer request voids the older link"
    page = site.client.get(second)
    assert page.status_code == 200 and "Trending" in page.text


def test_rate_limits_per_ip_and_per_address(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, limits=Limits(subscribe_per_ip=4, subscribe_per_address=10, mails_per_address=2))
        answers = [subscribe(site, "spam@example.org", ["agents"]).status_code for _ in range(3)]
        assert answers == [200, 200, 200], "the answer never tells whether a mail went out"
        assert len(site.mails_to("spam@example.org")) == 2, "at most two confirmation mails per address per day"
        assert subscribe(site, "other@example.org", ["agents"]).status_code == 200
        blocked = subscribe(site, "third@example.org", ["agents"])
        assert blocked.status_code == 429 and "Too many attempts" in blocked.text
        assert site.mails_to("third@example.org") == []


def test_pages_carry_security_headers(site: Site) -> None:
    page = site.client.get("/")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/zone.js">'], "no inline script: the one file the policy allows ('self')"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_preferences_refuse_what_the_config_would_not_accept(site: Site) -> None:
    url = "/preferences/" + tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org")
    page = site.client.get(url)
    before = site.yaml()
    base = {"csrf": csrf(page.text), "topics": ["agents"], "frequency": "daily", "day": "monday", "send_at": "07:00", "timezone": "UTC"}
    for bad in ({"keywords": "/(a+)+$/"}, {"timezone": "Mars/Olympus"}, {"send_at": "25:00"}, {"topics": [], "keywords": ""}):
        answer = site.client.post(url, data={**base, **bad})
        assert answer.status_code == 400, bad
        assert 'class="error"' in answer.text
    assert site.yaml() == before


def test_serve_requires_a_secret_key(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text("topics:\n  a:\n    any: [x]\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "subscribers.yaml"), "serve"], env={"NEWSLETTER_SECRET_KEY": ""})
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET_KEY is required" in result.output


def test_a_failed_write_keeps_the_link_working_and_a_failed_welcome_keeps_the_subscription(site: Site) -> None:
    subscribe(site, "late@example.org", ["agents"])
    confirm = link(site.mails_to("late@example.org")[0], "confirm")
    page = site.client.get(confirm)
    good = site.yaml()
    site.config_path.write_text(good + "  - this is: [not valid\n", encoding="utf-8")  # someone is mid-edit
    assert site.client.post(confirm, data={"csrf": csrf(page.text)}).status_code == 503
    site.config_path.write_text(good, encoding="utf-8")

    site.smtp.sink.reply = lambda rcpt: "550 5.1.1 mailbox full" if rcpt.startswith("late@") else None
    done = site.client.post(confirm, data={"csrf": csrf(page.text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert load(site.config_path).subscriber("late@example.org") is not None


def test_a_made_up_csrf_cookie_and_field_pair_is_refused(site: Site) -> None:
    attacker = site.fresh_client()
    nonce = "A" * 32
    attacker.cookies.set("newsletter_csrf", nonce)
    for field in (nonce, itsdangerous.Signer("another-secret", salt="newsletter.csrf").sign(nonce).decode()):
        answer = attacker.post("/", data={"csrf": field, "email": "a@example.org", "topics": "agents"})
        assert answer.status_code == 403, "the field must be the server's own signature of the cookie's nonce"
    visitor = site.fresh_client()
    token = csrf(visitor.get("/").text)
    assert attacker.post("/", data={"csrf": token, "email": "a@example.org", "topics": "agents"}).status_code == 403, "another visitor's token"
    assert visitor.post("/", data={"csrf": token, "email": "a@example.org", "topics": "agents"}).status_code == 200
    url = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org")
    assert attacker.post(url, data={"csrf": nonce}).status_code == 403
    assert load(site.config_path).subscriber("ada@example.org") is not None
    assert len(site.smtp.messages) == 1


@pytest.mark.parametrize("path", ["/style.css/", "/confirm/abc/", "/unsubscribe/abc/"])
def test_no_redirect_goes_to_a_host_the_client_named(site: Site, path: str) -> None:
    answer = site.client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert not answer.is_redirect and "location" not in answer.headers
    assert answer.status_code == 404 and "evil.example" not in answer.text


def visitor(site: Site, ip: str) -> TestClient:
    """A client connecting from `ip`."""
    return TestClient(site.client.app, base_url=str(site.client.base_url), client=(ip, 40000))


def test_x_forwarded_for_is_ignored_unless_the_connection_comes_from_a_trusted_proxy(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    limits = Limits(subscribe_per_ip=2, subscribe_per_address=10)
    with SMTPServer() as smtp:
        site = make_site(tmp_path / "a", http_server, smtp, limits=limits)
        proxy = visitor(site, "127.0.0.1")
        answers = [subscribe(site, f"r{i}@example.org", ["agents"], client=_forwarded(proxy, f"203.0.113.{i}")).status_code for i in range(3)]
        assert answers == [200, 200, 429], "by default nobody is trusted, loopback included: one client, one limit"

    with SMTPServer() as smtp:
        site = make_site(tmp_path / "b", http_server, smtp, limits=limits, extra={"NEWSLETTER_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"})
        proxy = visitor(site, "127.0.0.1")
        answers = [subscribe(site, f"r{i}@example.org", ["agents"], client=_forwarded(proxy, f"203.0.113.{i}")).status_code for i in range(3)]
        assert answers == [200, 200, 200], "behind a configured proxy each reader has their own limit"
        spoofed = [
            subscribe(site, f"s{i}@example.org", ["agents"], client=_forwarded(proxy, f"198.51.100.{i}, 10.1.2.3, 203.0.113.99")).status_code for i in range(3)
        ]
        assert spoofed == [200, 200, 429], "what the reader wrote into X-Forwarded-For themselves does not count"
        direct = visitor(site, "192.0.2.1")
        answers = [subscribe(site, f"d{i}@example.org", ["agents"], client=_forwarded(direct, f"203.0.113.{50 + i}")).status_code for i in range(3)]
        assert answers == [200, 200, 429], "an untrusted client cannot name another address"


def _forwarded(client: TestClient, chain: str) -> TestClient:
    client.headers["X-Forwarded-For"] = chain
    return client


def test_a_bad_trusted_proxy_setting_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(environment.EnvError, match="NEWSLETTER_TRUSTED_PROXIES must be IP addresses or networks"):
        environment.load({"NEWSLETTER_TRUSTED_PROXIES": "10.0.0.0/8, proxy.example.org"}, dotenv=tmp_path / ".env")


def test_ipv6_clients_are_limited_per_64(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, limits=Limits(subscribe_per_ip=3, subscribe_per_address=10))
        rotating = [subscribe(site, f"r{i}@example.org", ["agents"], client=visitor(site, f"2001:db8:1:2::{i:x}")).status_code for i in range(1, 15)]
        assert rotating == [200] * 3 + [429] * 11, "a new address in the same /64 is the same client"
        assert subscribe(site, "n@example.org", ["agents"], client=visitor(site, "2001:db8:1:3::1")).status_code == 200, "the next /64 is not"
        assert subscribe(site, "m@example.org", ["agents"], client=visitor(site, "::ffff:192.0.2.1")).status_code == 200


def test_confirmation_mails_have_a_global_cap_per_hour(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, extra={"NEWSLETTER_CONFIRMATIONS_PER_HOUR": "5"})
        answers = [subscribe(site, f"victim{i}@example.org", ["agents"], client=visitor(site, f"198.51.{i}.1")).status_code for i in range(20)]
        assert answers == [200] * 20, "the answer never tells whether a mail went out"
        assert len(site.smtp.messages) == 5, "at most NEWSLETTER_CONFIRMATIONS_PER_HOUR mails, however many clients ask"


def test_an_internationalised_domain_subscribes_end_to_end_as_punycode(site: Site) -> None:
    answer = subscribe(site, "Leser@Bücher.de", ["agents"])
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    (mail,) = site.mails_to("Leser@xn--bcher-kva.de")
    assert mail["To"].addresses[0].addr_spec == "Leser@xn--bcher-kva.de"
    confirm = link(mail, "confirm")
    done = site.client.post(confirm, data={"csrf": csrf(site.client.get(confirm).text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert "  - email: leser@xn--bcher-kva.de\n" in site.yaml()
    assert load(site.config_path).subscriber("leser@bücher.de") is not None, "either spelling finds them"

    again = subscribe(site, "leser@xn--bcher-kva.de", ["agents"])
    assert again.status_code == 200
    assert site.mails_to("leser@xn--bcher-kva.de")[-1]["Subject"] == "You are already subscribed to the paper digest"

    url = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "leser@xn--bcher-kva.de")
    assert site.fresh_client().post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert load(site.config_path).subscriber("leser@xn--bcher-kva.de") is None


def test_a_non_ascii_local_part_is_refused_clearly_and_leaves_nothing_behind(site: Site) -> None:
    answer = subscribe(site, "jörg@example.de", ["agents"])
    assert answer.status_code == 400
    assert "characters beyond ASCII before the @" in answer.text and 'value="jörg@example.de"' in answer.text
    assert site.smtp.messages == []
    with Store(site.env.db) as store:
        assert store.db.execute("SELECT COUNT(*) FROM pending_subscriptions").fetchone()[0] == 0


def test_a_refused_confirmation_mail_leaves_no_pending_row(site: Site) -> None:
    site.smtp.sink.reply = lambda rcpt: "550 5.1.1 no such user"
    assert subscribe(site, "gone@example.org", ["agents"]).status_code == 503
    with Store(site.env.db) as store:
        assert store.db.execute("SELECT COUNT(*) FROM pending_subscriptions").fetchone()[0] == 0


def test_subscribers_yaml_takes_an_internationalised_domain_in_either_spelling(site: Site) -> None:
    text = site.yaml() + "  - email: leser@bücher.de\n    topics: [agents]\n  - email: other@xn--mnchen-3ya.de\n    topics: [agents]\n"
    site.config_path.write_text(text, encoding="utf-8")
    config = load(site.config_path)
    assert [s.email for s in config.subscribers] == ["ada@example.org", "leser@xn--bcher-kva.de", "other@xn--mnchen-3ya.de"]
    result = CliRunner().invoke(cli, ["check"], env=site.environ)
    assert result.exit_code == 0, result.output

    with Store(site.env.db) as store:
        pipeline.fetch(config, site.env, store)
    result = CliRunner().invoke(cli, ["send", "--to", "leser@bücher.de"], env=site.environ)
    assert result.exit_code == 0, result.output
    assert site.mails_to("leser@xn--bcher-kva.de"), "mailed to the punycode form: no UnicodeEncodeError at RCPT"

    url = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "leser@xn--bcher-kva.de")
    assert site.fresh_client().post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert "bücher" not in site.yaml(), "the hand-written Unicode spelling is found and removed"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["jörg@example.de"], "subscribers[1].email: 'jörg@example.de' has characters beyond ASCII before the @"),
        (["a@bü_cher.de"], "subscribers[1].email: invalid email address 'a@bü_cher.de': the domain"),
        (["leser@bücher.de", "Leser@xn--bcher-kva.de"], "subscribers[2].email: duplicate subscriber 'Leser@xn--bcher-kva.de'"),
    ],
)
def test_subscribers_yaml_refuses_what_cannot_be_mailed(site: Site, entries: list[str], message: str) -> None:
    site.config_path.write_text(site.yaml() + "".join(f"  - email: {e}\n    topics: [agents]\n" for e in entries), encoding="utf-8")
    result = CliRunner().invoke(cli, ["check"], env=site.environ)
    assert result.exit_code == 1 and message in result.output, result.output


def test_a_revoked_link_is_refused_and_the_next_ones_work(site: Site) -> None:
    """`newsletter subscribers --revoke-links` (or subscribing again after leaving) voids every link mailed before."""
    config = str(site.config_path)
    old = "/preferences/" + tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org")
    assert site.client.get(old).status_code == 200
    result = CliRunner().invoke(cli, ["--config", config, "subscribers", "--revoke-links", "ada@example.org"], env=site.environ)
    assert result.exit_code == 0 and "open nothing any more (link version 1)" in result.output
    refused = site.client.get(old)
    assert refused.status_code == 400 and "This link does not work" in refused.text
    assert (
        site.fresh_client()
        .post("/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, "ada@example.org"), data={"List-Unsubscribe": "One-Click"})
        .status_code
        == 400
    )
    fresh = "/preferences/" + tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org", 1)
    assert site.client.get(fresh).status_code == 200, "links made at the new version open"
    with Store(site.env.db) as store:
        pipeline.fetch(load(site.config_path), site.env, store)
        report = pipeline.send(load(site.config_path), site.env, store, transport(site.env.smtp, site.env.outbox, site.env.pool, site.env.dkim))
    assert report.count("sent") >= 1
    digest = site.mails_to("ada@example.org")[-1]
    assert site.client.get(link(digest, "preferences")).status_code == 200, "the next digest carries links at the new version"


# subscribers.yaml shared with hand edits (#16 finding 7)


@pytest.mark.slow
@pytest.mark.parametrize("locked", [True, False], ids=["editor-takes-the-lock", "editor-renames-without-lock"])
def test_parallel_confirmations_and_hand_saves_every_tenth_of_a_second_lose_nothing(tmp_path: Path, http_server: LocalHTTPServer, locked: bool) -> None:
    readers = [f"reader{i}@example.com" for i in range(50)]
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, limits=Limits(subscribe_per_ip=1000, mails_per_ip=1000))
        lock = FileLock(str(site.config_path) + ".lock")
        stop = threading.Event()
        notes: list[int] = []

        def editor() -> None:  # `flock subscribers.yaml.lock $EDITOR` saving in place, or an editor's temp file + rename without the lock
            i = 0
            while not stop.is_set():
                with lock if locked else contextlib.nullcontext():
                    text = site.yaml().replace("  # the founders\n", f"  # the founders\n  # hand note {i}\n", 1)
                    if locked:
                        site.config_path.write_text(text, encoding="utf-8")
                    else:
                        tmp = site.config_path.with_name(f".edit{i}.tmp")
                        tmp.write_text(text, encoding="utf-8")
                        os.replace(tmp, site.config_path)
                notes.append(i)
                i += 1
                stop.wait(0.1)

        def flow(email: str) -> tuple[int, bool]:
            client = site.fresh_client()
            assert subscribe(site, email, ["agents"], client=client).status_code == 200
            confirm = link(site.mails_to(email)[0], "confirm")
            page = client.get(confirm)
            assert page.status_code == 200
            done = client.post(confirm, data={"csrf": csrf(page.text)})
            return done.status_code, "You are subscribed" in done.text

        hand = threading.Thread(target=editor)
        hand.start()
        try:
            with ThreadPoolExecutor(max_workers=len(readers)) as pool:
                answers = dict(zip(readers, pool.map(flow, readers), strict=True))
        finally:
            stop.set()
            hand.join()
        keeper = service.keeper(site.config_path, site.env.db)
        assert keeper.wait(keeper.wake(), 60), "the keeper made a pass after the last save"

        text = site.yaml()
        config = load(site.config_path)
        told = [r for r, (_, subscribed) in answers.items() if subscribed]
        lost_readers = [r for r in told if config.subscriber(r) is None]
        lost_notes = [i for i in notes if f"  # hand note {i}\n" not in text]
        print(
            f"\n{'locked' if locked else 'unlocked'} editor: {len(notes)} saves, {len(told)}/{len(readers)} told subscribed, lost readers {lost_readers}, lost notes {lost_notes}"
        )
        assert all(status == 200 for status, _ in answers.values()), {r: a for r, a in answers.items() if a[0] != 200}
        assert told == readers
        assert lost_readers == []
        assert lost_notes == [] and len(notes) > 10
        assert text.startswith("# Hand-written header comment: keep me.\n") and 'send_at: "07:00"   # quoted on purpose' in text


def test_a_confirmation_whose_every_edit_meets_a_hand_save_is_added_by_the_keeper(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edit, "ATTEMPTS", 1)  # the confirmation's own edit gets one try, and a hand save spoils it
    real = edit._append_text
    calls: list[str] = []

    def append_while_someone_saves(*args: Any) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            saved = site.yaml().replace("  # the founders\n", "  # the founders\n  # saved by hand\n")
            tmp = site.config_path.with_name("saved.tmp")
            tmp.write_text(saved, encoding="utf-8")
            os.replace(tmp, site.config_path)
        return real(*args)

    monkeypatch.setattr(edit, "_append_text", append_while_someone_saves)
    assert subscribe(site, "late@example.com", ["agents"]).status_code == 200
    confirm = link(site.mails_to("late@example.com")[0], "confirm")
    done = site.client.post(confirm, data={"csrf": csrf(site.client.get(confirm).text)})

    assert done.status_code == 200 and "You are subscribed" in done.text
    assert calls[0] != calls[-1] and calls[-1].startswith("newsletter-keeper"), "the keeper made the edit the confirmation could not"
    config = load(site.config_path)
    assert config.subscriber("late@example.com") is not None
    assert "  # saved by hand\n" in site.yaml(), "the hand save is kept"


@pytest.mark.slow
def test_ten_concurrent_one_click_unsubscribes_at_two_thousand_readers_all_succeed_and_stop_the_mail(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp)
        many = "".join(f"  - email: reader{i}@example.com\n    topics: [agents]\n" for i in range(2000))
        site.config_path.write_text(site.yaml() + many, encoding="utf-8")
        with Store(site.env.db) as store:
            pipeline.fetch(load(site.config_path), site.env, store)
        assert site.client.get("/").status_code == 200
        stale = load(site.config_path)  # what a daemon that has not reloaded yet still holds
        leaving = [f"reader{i}@example.com" for i in range(0, 2000, 200)]
        staying = "reader1999@example.com"

        def one_click(email: str) -> tuple[int, float]:
            started = time.monotonic()
            url = "/unsubscribe/" + tokens.sign(SECRET, tokens.UNSUBSCRIBE, email)
            answer = site.fresh_client().post(url, data={"List-Unsubscribe": "One-Click"})
            return answer.status_code, time.monotonic() - started

        def visit() -> tuple[int, float]:
            started = time.monotonic()
            return site.fresh_client().get("/").status_code, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=len(leaving) + 5) as pool:
            clicks = [pool.submit(one_click, email) for email in leaving]
            visits = [pool.submit(visit) for _ in range(5)]
            results = [c.result() for c in clicks]
            pages = [v.result() for v in visits]
        print(f"\none-click at 2,000 readers: {sorted(round(t, 2) for _, t in results)} s; GET / meanwhile: {sorted(round(t, 2) for _, t in pages)} s")
        assert [status for status, _ in results] == [200] * len(leaving)
        assert [status for status, _ in pages] == [200] * len(pages)

        chosen = [s for s in stale.subscribers if s.email in (*leaving, staying)]
        assert len(chosen) == len(leaving) + 1
        sent_before = len(site.smtp.messages)
        with Store(site.env.db) as store:
            report = pipeline.send(stale, site.env, store, transport(site.env.smtp, site.env.outbox, site.env.pool, site.env.dkim), subscribers=chosen)
        recipients = [m["To"].addresses[0].addr_spec for m in site.smtp.messages[sent_before:]]
        assert recipients == [staying], "the next send, even on a config read before they left, mails none of them"
        assert report.count("sent") == 1

        keeper = service.keeper(site.config_path, site.env.db)
        assert keeper.wait(keeper.wake(), 60)
        config = load(site.config_path)
        assert [e for e in leaving if config.subscriber(e) is not None] == [], "and their lines left subscribers.yaml"
        assert len(config.subscribers) == 1 + 2000 - len(leaving)
