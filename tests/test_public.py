"""The public pages over HTTP: the front page's listing under the subscribe form, topic pages day by day, topic
feeds, caching, settings.public_pages, and the static export; papers come from real feeds on a local HTTP server."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import feedparser
import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer, Reply
from support.smtpserver import SMTPServer
from test_web import Site, make_site, subscribe

from newsletter import pipeline
from newsletter.cli import cli
from newsletter.config.load import load
from newsletter.model.listing import listed
from newsletter.model.topics import Matcher
from newsletter.storage.store import Store

# A feed written to attack the pages: its text is escaped twice, so markup survives ingest as literal text in the
# title, abstract and author, and its link tries to break out of an attribute.
HOSTILE = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>x</title><link>https://example.org/</link><description>x</description>
<item>
  <title>&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt; Agents that plan</title>
  <link>https://example.org/a?x="&gt;&lt;script&gt;alert(2)&lt;/script&gt;</link>
  <guid isPermaLink="false">hostile-1</guid>
  <description>An agent &amp;lt;img src=x onerror=alert(3)&amp;gt; &amp;lt;a href="javascript:alert(4)"&amp;gt;click&amp;lt;/a&amp;gt; end.</description>
  <author>x@example.org (&amp;lt;b onmouseover=alert(5)&amp;gt;Mallory)</author>
  <pubDate>Sat, 01 Aug 2026 09:00:00 GMT</pubDate>
</item>
</channel></rss>
"""
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    """The app with the papers of two real feeds (Hugging Face daily papers, arXiv cs.AI) and one hostile feed fetched."""
    http_server.route("/hostile.rss", Reply(body=HOSTILE, headers={"Content-Type": "application/rss+xml"}))
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp)
        hostile = f"  - name: hostile\n    type: feed\n    url: {http_server.url('/hostile.rss')}\n\ntopics:\n"
        site.config_path.write_text(site.yaml().replace("\ntopics:\n", "\n" + hostile, 1), encoding="utf-8")
        with Store(site.env.db) as store:
            pipeline.fetch(load(site.config_path), site.env, store)
        yield site


def cards(html: str) -> list[str]:
    """The paper titles on a page, in order, as the card shows them (tags stripped)."""
    return [unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in re.findall(r'<p class="title">(.*?)</p>', html, re.S)]


def hrefs(html: str, pattern: str) -> list[str]:
    return re.findall(rf'href="({pattern})"', html)


def day_of(html: str) -> date:
    match = re.search(r'<h2 class="date">(\d+ \w+ \d{4})', html)
    assert match, "a topic page names its day"
    return datetime.strptime(match.group(1), "%d %b %Y").date()


def day_of_link(href: str) -> date:
    return date.fromisoformat(href.rsplit("/", 1)[1])


def test_the_front_page_lists_the_newest_papers_under_the_subscribe_form(site: Site) -> None:
    page = site.client.get("/")
    assert page.status_code == 200
    html = page.text
    form, first_card = html.index('<form method="post" action="/">'), html.index('class="paper')
    assert form < first_card, "the subscribe form comes first"
    days = re.findall(r'<h2 class="date">([^<]+)</h2>', html)
    assert days == ["1 Aug 2026", "30 Jul 2026"], "newest day first, the latest two days"
    assert any(t.startswith("Qwen-UI-Agent Technical Report") for t in cards(html)) and "Hanzhang Zhou, Panrong Tong, Xu Zhang, Quyu Kong et al." in html, (
        "title and authors"
    )
    assert '<span class="badge">▲ 283 upvotes</span>' in html, "Hugging Face upvotes where known"
    assert '<p class="abstract">GUI <mark>agents</mark> have the potential' in html, "an abstract snippet with the matched words marked"
    assert '<a href="https://arxiv.org/pdf/2607.28227">PDF</a>' in html, "the card's links"
    assert hrefs(html, "/topics/agents/2026-07-30"), "each day's topic links to that day's topic page"
    assert len(re.findall(r'<tr><td class="paper', html.split('<h2 class="date">30 Jul 2026</h2>')[1])) == 5, "five papers of a topic a day on the front page"
    assert '<a href="/topics/agents/2026-07-30">All 10 papers in LLM agents on 30 Jul 2026</a>' in html, "and a link to the rest"
    assert re.search(r'<link rel="alternate" type="application/atom\+xml" title="LLM agents" href="/topics/agents.atom">', html)

    answer = subscribe(site, "reader@example.org", ["agents"])
    assert answer.status_code == 200 and "Check your inbox" in answer.text, "the form works as before"
    assert site.mails_to("reader@example.org"), "and mails a confirmation link"


def test_the_front_page_without_topics_lists_every_stored_paper(site: Site) -> None:
    text = site.yaml()
    site.config_path.write_text(text[: text.index("\ntopics:\n")] + "\ntopics: {}\nsubscribers: []\n", encoding="utf-8")
    with Store(site.env.db) as store:
        stored = [listed(s.paper, s.first_seen, ()) for s in store.papers_seen_since(LONG_AGO)]
    latest = sorted({e.day for e in stored}, reverse=True)[:2]
    html = site.client.get("/").text
    assert re.findall(r'<h2 class="date">([^<]+)</h2>', html) == [f"{d.day} {d:%b %Y}" for d in latest]
    assert len(cards(html)) == sum(e.day in latest for e in stored), "every paper of those days, whatever its topic"
    assert "/topics/" not in html, "no topic pages to link to"


def test_topic_pages_go_day_by_day_and_hold_every_paper_of_the_topic(site: Site) -> None:
    config = load(site.config_path)
    matcher = Matcher(list(config.topics.values()))
    with Store(site.env.db) as store:
        expected = {s.paper.title for s in store.papers_seen_since(LONG_AGO) if "agents" in matcher.topics_for(s.paper)}

    page = site.client.get("/topics/agents")
    assert page.status_code == 200
    seen_days, seen_titles = [day_of(page.text)], set(cards(page.text))
    assert seen_days[0] == date(2026, 8, 1), "the topic page opens on its latest day"
    while older := hrefs(page.text, r"/topics/agents/\d{4}-\d{2}-\d{2}"):
        older_link = [h for h in older if day_of_link(h) < seen_days[-1]]
        if not older_link:
            break
        page = site.client.get(older_link[0])
        assert page.status_code == 200
        seen_days.append(day_of(page.text))
        seen_titles |= set(cards(page.text))
    assert seen_days == sorted(seen_days, reverse=True) and len(seen_days) == len(set(seen_days)) >= 3, "each older link goes one day back"
    assert seen_titles == expected, "every paper the topic takes is on one of its days"

    newer = [h for h in hrefs(page.text, r"/topics/agents/\d{4}-\d{2}-\d{2}") if day_of_link(h) > seen_days[-1]]
    assert newer and day_of_link(newer[0]) == seen_days[-2], "and the newer link comes back"

    assert site.client.get("/topics/no-such-topic").status_code == 404
    assert site.client.get("/topics/no-such-topic.atom").status_code == 404
    assert site.client.get("/topics/agents/2020-01-01").status_code == 404, "a day without papers"
    assert site.client.get("/topics/agents/2026-02-30").status_code == 404, "not a day"
    assert site.client.get("/topics/agents/yesterday").status_code == 404


def test_each_topic_has_an_atom_feed_of_its_newest_papers(site: Site) -> None:
    page = site.client.get("/topics/agents")
    (advertised,) = re.findall(r'<link rel="alternate" type="application/atom\+xml" title="LLM agents" href="([^"]+)">', page.text)
    feed = site.client.get(advertised)
    assert feed.status_code == 200 and feed.headers["content-type"] == "application/atom+xml; charset=utf-8"
    parsed = feedparser.parse(feed.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10" and parsed.feed.title == "LLM agents"
    updated = [e.updated_parsed for e in parsed.entries]
    assert updated == sorted(updated, reverse=True), "newest first"
    assert parsed.entries[0].updated.startswith("2026-08-01"), "the newest paper leads"
    assert len({e.id for e in parsed.entries}) == len(parsed.entries), "every entry has its own id"
    qwen = next(e for e in parsed.entries if e.title.startswith("Qwen-UI-Agent"))
    assert [link.href for link in qwen.links] == ["https://arxiv.org/abs/2607.28227"] and qwen.authors[0].name == "Hanzhang Zhou"
    assert qwen.summary.startswith("GUI agents have the potential")
    assert all(link.href.startswith("https://") for e in parsed.entries for link in e.get("links", [])), "only http(s) links"


def test_public_pages_false_hides_the_listing_but_keeps_the_subscribe_form(site: Site) -> None:
    site.config_path.write_text(site.yaml().replace("settings:\n", "settings:\n  public_pages: false\n", 1), encoding="utf-8")
    front = site.client.get("/")
    assert front.status_code == 200 and '<form method="post" action="/">' in front.text
    assert 'class="paper' not in front.text and "application/atom+xml" not in front.text and "/topics/" not in front.text
    assert front.headers["cache-control"] == "no-store", "the form alone is the page it always was"
    for path in ("/topics/agents", "/topics/agents/2026-07-30", "/topics/agents.atom"):
        assert site.client.get(path).status_code == 404, path
    assert subscribe(site, "reader@example.org", ["agents"]).status_code == 200


def test_public_pages_must_be_true_or_false(site: Site) -> None:
    site.config_path.write_text(site.yaml().replace("settings:\n", "settings:\n  public_pages: nope\n", 1), encoding="utf-8")
    result = CliRunner().invoke(cli, ["check"], env=site.environ)
    assert result.exit_code == 1
    assert re.search(r"subscribers\.yaml:3:\d+: settings\.public_pages: expected true or false, got the text 'nope'", result.output), result.output


def test_public_pages_carry_an_etag_and_answer_304_when_it_matches(site: Site) -> None:
    for path, cache in (("/topics/agents", "public, max-age=300"), ("/topics/agents.atom", "public, max-age=300"), ("/", "private, max-age=60")):
        first = site.client.get(path)
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag) and first.headers["cache-control"] == cache, path
        assert site.client.get(path).headers["etag"] == etag, "the same content, the same tag"
        again = site.client.get(path, headers={"If-None-Match": f'"other", W/{etag}'})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag, path
        assert site.client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert site.client.get("/", headers={"Cookie": ""}).headers.get("vary") == "Cookie", "the front page's form token is this visitor's"
    assert site.client.get("/unsubscribe/not-a-token").headers["cache-control"] == "no-store", "pages behind tokens are never cached"


def test_new_papers_change_the_etag(site: Site, http_server: LocalHTTPServer) -> None:
    before = site.client.get("/topics/agents.atom").headers["etag"]
    http_server.route("/hostile.rss", Reply(body=HOSTILE.replace(b"hostile-1", b"hostile-2").replace(b"01 Aug", b"02 Aug")))
    with Store(site.env.db) as store:
        pipeline.fetch(load(site.config_path), site.env, store)
    feed = site.client.get("/topics/agents.atom", headers={"If-None-Match": before})
    assert feed.status_code == 200 and feed.headers["etag"] != before
    assert feedparser.parse(feed.content).entries[0].updated.startswith("2026-08-02"), "the new paper is picked up without a restart"


def test_reading_the_public_pages_changes_nothing(site: Site) -> None:
    def state() -> tuple[str, list[tuple[str, list[tuple[object, ...]]]]]:
        db = sqlite3.connect(site.env.db)
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return site.yaml(), [(t, sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)) for t in tables]
        finally:
            db.close()

    before = state()
    for path in ("/", "/topics/agents", "/topics/agents/2026-07-30", "/topics/trending", "/topics/agents.atom", "/topics/trending.atom", "/style.css"):
        assert site.client.get(path).status_code == 200, path
        assert site.client.head(path).status_code == 200, path
    assert state() == before


def test_hostile_feed_text_is_neutralised_on_pages_and_in_feeds(site: Site) -> None:
    for path in ("/", "/topics/agents", "/topics/agents/2026-08-01"):
        html = site.client.get(path).text.replace('<script src="/zone.js"></script>', "")  # the sign-up form's own script, from 'self'
        assert "<script>alert(1)</script> Agents that plan" in cards(html) and "Mallory" in html, f"{path}: the hostile paper is listed"
        assert "&lt;script&gt;alert(1)&lt;/script&gt; <mark>Agents</mark> that plan" in html, f"{path}: markup in a title shows as text"
        assert "&lt;img src=x onerror=alert(3)&gt;" in html and "&lt;b onmouseover=alert&gt;Mallory" in html, path
        for tag in ("<script", "<img", "<b ", '<a href="javascript'):
            assert tag not in html, f"{path}: {tag}"
        assert "example.org/a?x=" not in html, f"{path}: a link that would break out of its attribute is dropped"
    feed = site.client.get("/topics/agents.atom")
    parsed = feedparser.parse(feed.content)
    assert parsed.bozo == 0
    hostile = next(e for e in parsed.entries if "Agents that plan" in e.title)
    assert "<script" not in feed.text and "<img" not in feed.text and "example.org/a?x=" not in feed.text, "markup goes in as escaped text"
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Agents that plan" in feed.text
    assert "links" not in hostile and hostile.content[0].value.startswith("An agent"), "no link that is not plainly http(s); the text is the content"


def test_archive_writes_pages_and_feeds_that_work_from_a_folder(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "public"
    result = CliRunner().invoke(cli, ["archive", "--out", str(out), "--base-url", "https://papers.example.org/digest"], env=site.environ)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"Wrote \d+ pages and 2 feeds to .*public\n", result.output)
    pages = sorted(out.rglob("*.html"))
    assert out / "index.html" in pages and out / "topics/agents/index.html" in pages and out / "topics/agents/2026-07-30/index.html" in pages
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<form" not in html, "no form without the app to take it"
        for href in re.findall(r'<(?:a|link)\s[^>]*href="([^"#]+)"', html):
            if not href.startswith(("https://", "http://")):
                target = (page.parent / href).resolve()
                assert target.is_file(), f"{page.relative_to(out)} links to a missing {href}"
    assert 'href="http://localhost/"' in (out / "index.html").read_text(encoding="utf-8"), "the static front page links to the app's form"
    for feed in out.rglob("*.atom"):
        parsed = feedparser.parse(feed.read_bytes())
        assert parsed.bozo == 0 and parsed.entries, feed
        assert parsed.feed.link == urljoin("https://papers.example.org/digest/", f"topics/{feed.stem}/")


def exported(out: Path) -> dict[str, list[date]]:
    """The days an export wrote a page for, by topic."""
    days: dict[str, list[date]] = {}
    for page in out.glob("topics/*/*/index.html"):
        days.setdefault(page.parent.parent.name, []).append(date.fromisoformat(page.parent.name))
    return {seg: sorted(d, reverse=True) for seg, d in days.items()}


def served(site: Site, seg: str) -> list[date]:
    """The days `serve` answers for a topic, found as a reader finds them: from its page, older link after older link."""
    page, days = site.client.get(f"/topics/{seg}"), []
    while page.status_code == 200 and '<h2 class="date">' in page.text:
        days.append(day_of(page.text))
        older = [h for h in hrefs(page.text, rf"/topics/{seg}/\d{{4}}-\d{{2}}-\d{{2}}") if day_of_link(h) < days[-1]]
        if not older:
            break
        page = site.client.get(older[0])
    return days


def test_archive_again_writes_the_days_serve_answers_and_removes_the_ones_it_no_longer_lists(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "public"
    archive = ["archive", "--out", str(out)]
    assert CliRunner().invoke(cli, archive, env=site.environ).exit_code == 0
    before = exported(out)
    assert len(before["agents"]) >= 3 and before["trending"]
    mine = out / "topics" / "agents" / "notes.txt"
    mine.write_text("the operator's own file", encoding="utf-8")

    # The rules change: agents takes fewer papers (so fewer days), trending becomes "popular": gone are the days agents
    # no longer has and all of trending (its days, its latest page, its feed).
    text = (
        site.yaml()
        .replace("any: [agent*]", "any: [agent*]\n    min_score: 1")
        .replace("  trending:\n", "  popular:\n")
        .replace("[trending, agents]", "[popular, agents]")
    )
    site.config_path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, archive, env=site.environ)
    assert result.exit_code == 0, result.output
    after = exported(out)
    assert set(after) == {"agents", "popular"} and not (out / "topics/trending.atom").exists() and not (out / "topics/trending").exists()
    assert set(after["agents"]) < set(before["agents"]), "days no longer listed are gone"
    assert after == {seg: served(site, seg) for seg in after}, "the export holds exactly the days serve answers, newest first"
    assert result.output.rstrip().endswith(f"removed {sum(map(len, before.values())) - len(after['agents']) + 2} files of days and topics no longer listed")
    assert mine.read_text(encoding="utf-8") == "the operator's own file", "a file no export writes stays"
    for page in out.rglob("*.html"):
        for href in re.findall(r'<(?:a|link)\s[^>]*href="([^"#]+)"', page.read_text(encoding="utf-8")):
            if not href.startswith(("https://", "http://")):
                assert (page.parent / href).resolve().is_file(), f"{page.relative_to(out)} links to a missing {href}"


def test_archive_errors_are_one_line(site: Site, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    for args, message in (
        (["--out", str(blocker)], f"error: {blocker} exists and is not a folder\n"),
        (["--out", str(blocker / "below")], f"error: cannot create {blocker / 'below'}: Not a directory\n"),
        (["--out", str(tmp_path / "x"), "--base-url", "javascript:alert(1)"], "error: --base-url 'javascript:alert(1)' is not an http(s) URL\n"),
    ):
        result = CliRunner().invoke(cli, ["archive", *args], env=site.environ)
        assert (result.exit_code, result.output) == (1, message)
    site.config_path.write_text(site.yaml().replace("settings:\n", "settings:\n  public_pages: false\n", 1), encoding="utf-8")
    result = CliRunner().invoke(cli, ["archive", "--out", str(tmp_path / "x")], env=site.environ)
    assert result.exit_code == 1 and "settings.public_pages is false" in result.output


def test_a_topic_whose_name_is_not_a_plain_path_segment_gets_one(site: Site) -> None:
    text = site.yaml().replace("\n  agents:\n", '\n  "agents/../tools":\n').replace("[trending, agents]", '[trending, "agents/../tools"]')
    site.config_path.write_text(text, encoding="utf-8")
    front = site.client.get("/").text
    (link,) = set(hrefs(front, r"/topics/t-[0-9a-f]{12}"))
    page = site.client.get(link)
    assert page.status_code == 200 and "<h1>LLM agents</h1>" in page.text
    assert site.client.get(link + ".atom").status_code == 200
