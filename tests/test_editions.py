"""Each edition's page and the reader's private feed, driven over HTTP: real feeds fetched from a local server,
digests sent through a real SMTP server by `newsletter send`, links followed from the mails as received."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import feedparser
import pytest
from click.testing import CliRunner
from markupsafe import escape
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer
from test_web import SECRET, Site, make_site

from newsletter import pipeline
from newsletter.cli import cli
from newsletter.config.load import load
from newsletter.mail import tokens
from newsletter.mail.filters import paper_links
from newsletter.model.digest import Layout
from newsletter.model.paper import Paper
from newsletter.storage.store import Store

# Two topics capped at 3 papers each over the real arXiv cs.AI feed and a Hugging Face daily page, so the
# mail shows a few and the edition holds many more.
CONFIG = """\
settings:
  allow_private_network: true
  max_papers_per_topic: 3

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
  models:
    title: Language models
    any: [language model*, LLM*]

subscribers:
  - email: ada@example.org
    name: Ada
    topics: [agents, models]
  - email: bob@example.org
    topics: [agents]
"""


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp)
        site.config_path.write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
        yield site


def send(site: Site, *options: str) -> str:
    """`newsletter send` as an operator runs it; its output."""
    result = CliRunner().invoke(cli, ["send", *options], env=site.environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def digests(site: Site, address: str) -> list[EmailMessage]:
    return [m for m in site.mails_to(address) if str(m["Subject"]).startswith("Paper digest")]


def parts(mail: EmailMessage) -> tuple[str, str]:
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content()


def path(url: str) -> str:
    assert url.startswith("http://localhost/"), url
    return url.removeprefix("http://localhost")


def layouts(site: Site, address: str) -> list[Layout]:
    with Store(site.env.db) as store:
        return [row.layout for row in store.deliveries() if row.subscriber == address and row.layout is not None]


def section(page: str, anchor: str) -> str:
    """The HTML of one topic's section on an edition page."""
    match = re.search(rf'<section class="edition-topic" id="{re.escape(anchor)}">(.*?)</section>', page, re.S)
    assert match, f"no section #{anchor}"
    return match.group(1)


def snapshot(site: Site) -> tuple[list[str], str]:
    """Everything a request could change: every row of the database, and subscribers.yaml."""
    db = sqlite3.connect(site.env.db)
    try:
        return list(db.iterdump()), site.yaml()
    finally:
        db.close()


def test_every_paper_of_a_capped_edition_is_on_its_page_and_each_cut_topics_link_lands_on_its_section(site: Site) -> None:
    output = send(site)
    (mail,) = digests(site, "ada@example.org")
    text, html = parts(mail)
    (layout,) = layouts(site, "ada@example.org")
    assert layout.total > layout.shown == 6, "both topics capped at 3; the edition holds every matching paper"

    view = re.search(r"View in your browser: (\S+)", text)
    assert view and f'href="{escape(view.group(1))}"' in html, "both parts link the same page"
    page = site.client.get(path(view.group(1)))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    with Store(site.env.db) as store:
        papers = store.papers_by_id(layout.ids)
    assert len(papers) == layout.total
    for paper in papers:
        assert str(escape(paper_links(paper)[0][1])) in page.text, f"{paper.id} is on the page"
    assert page.text.count('<td class="paper') == layout.total, "each paper once"
    assert "<script" not in page.text.lower(), "no JavaScript"

    cuts = re.findall(r'<a href="(http://localhost/editions/[^"#]+)#([\w-]+)"[^>]*>…and (\d+) more in ([^<]+)</a>', html)
    assert len(cuts) == 2, "each cut topic links to its section"
    for url, anchor, more, title in cuts:
        assert f"…and {more} more in {title}:\n  {url}#{anchor}\n" in text, "the text part gives the same link"
        shelf = next(s for s in layout.sections if s.anchor == anchor)
        assert (shelf.title, len(shelf.cut)) == (title, int(more))
        landed = site.client.get(path(url))
        shown = section(landed.text, anchor)
        assert shown.count('<td class="paper') == len(shelf.ids), "the section holds the shown and the cut papers, in the mail's order"
        positions = [shown.index(str(escape(paper_links(p)[0][1]))) for p in (store_paper(site, pid) for pid in shelf.ids)]
        assert positions == sorted(positions)

    phrase = f"6 in this mail, {layout.total} in the edition"
    assert mail["Subject"].endswith(f"· {phrase}"), mail["Subject"]
    assert f"{phrase} · 2 topics" in text and f"{phrase} · 2 topics" in html, "the header says the same"
    assert f"sent     ada@example.org: {phrase}" in output, output
    status = CliRunner().invoke(cli, ["status"], env=site.environ, catch_exceptions=False).output
    assert re.search(rf"sent     ada@example.org at [^\n]+: {phrase}\n", status), status


def store_paper(site: Site, paper_id: str) -> Paper:
    with Store(site.env.db) as store:
        paper = store.paper(paper_id)
    assert paper is not None
    return paper


def test_an_edition_is_stored_once_however_many_readers_get_it_and_its_papers_count_as_delivered(site: Site) -> None:
    config = site.yaml().replace("  - email: bob@example.org\n    topics: [agents]\n", "  - email: bob@example.org\n    topics: [agents, models]\n")
    site.config_path.write_text(config, encoding="utf-8")
    send(site)
    (ada,), (bob,) = layouts(site, "ada@example.org"), layouts(site, "bob@example.org")
    assert ada == bob
    with Store(site.env.db) as store:
        assert store.db.execute("SELECT COUNT(*) FROM layouts").fetchone()[0] == 1
        assert {r[0] for r in store.db.execute("SELECT paper_ids FROM deliveries")} == {"[]"}, "no per-reader list of papers"
        assert store.sent_paper_ids("ada@example.org") >= set(ada.ids), "the cut papers are reachable, so they count as delivered"
    before = len(site.smtp.messages)
    assert "nothing new for anyone" in send(site) and len(site.smtp.messages) == before


def test_a_tampered_foreign_expired_or_revoked_link_gets_the_same_404_and_nothing_changes(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    send(site)
    text, _ = parts(digests(site, "ada@example.org")[0])
    good = path(re.search(r"View in your browser: (\S+)", text).group(1))  # type: ignore[union-attr]
    (ada,) = layouts(site, "ada@example.org")
    token = good.rsplit("/", 1)[1]
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]

    real_time = tokens.time.time
    monkeypatch.setattr(tokens.time, "time", lambda: real_time() - tokens.MAX_AGE[tokens.EDITION].total_seconds() - 86400)
    expired = tokens.sign(SECRET, tokens.EDITION, tokens.edition_value("ada@example.org", ada.key))
    monkeypatch.undo()
    bad = {
        "tampered": flipped,
        "foreign": tokens.sign(SECRET, tokens.EDITION, tokens.edition_value("bob@example.org", ada.key)),  # Bob's signature, Ada's edition
        "other purpose": tokens.sign(SECRET, tokens.PREFERENCES, "ada@example.org"),
        "other secret": tokens.sign("another-secret", tokens.EDITION, tokens.edition_value("ada@example.org", ada.key)),
        "expired": expired,
        "made up": "x" * 40,
    }
    before = snapshot(site)
    assert site.client.get(good).status_code == 200
    answers = {name: site.client.get(f"/editions/{t}") for name, t in bad.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(bad, 404)
    assert len({a.text for a in answers.values()}) == 1, "every refusal looks the same"
    refusal = answers["foreign"].text
    with Store(site.env.db) as store:
        titles = [p.title for p in store.papers_by_id(ada.ids)]
    assert not any(str(escape(t)) in refusal for t in titles) and "ada@" not in refusal and "bob@" not in refusal
    assert site.client.head(good).status_code == 200
    assert snapshot(site) == before, "opening edition pages (as mail scanners do) changes nothing"

    result = CliRunner().invoke(cli, ["--config", str(site.config_path), "subscribers", "--revoke-links", "ada@example.org"], env=site.environ)
    assert result.exit_code == 0, result.output
    assert site.client.get(good).status_code == 404, "revoked with the reader's other links"


def test_the_private_feed_lists_the_readers_editions_and_opens_their_pages(site: Site) -> None:
    send(site)
    with Store(site.env.db) as store:
        store.add_papers(
            [Paper(id="2612.00001", title="An LLM agent that files its own bugs", abstract="Agents.", sources=("cs-ai",), published=datetime.now(UTC))]
        )
    send(site, "--to", "ada@example.org")  # a second digest today: `send` alone mails each reader once a day
    _, second = digests(site, "ada@example.org")
    assert second["Subject"].endswith("· 1 new paper"), "nothing cut: the plain count"
    text, _ = parts(second)
    preferences = path(re.search(r"Manage topics: (\S+)", text).group(1))  # type: ignore[union-attr]
    page = site.client.get(preferences)
    feed_url = re.search(r'<a href="(http://localhost/feeds/[\w-]+\.atom)"', page.text)
    assert page.status_code == 200 and feed_url, "the preferences page shows the feed"

    before = snapshot(site)
    answer = site.client.get(path(feed_url.group(1)))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(answer.content)
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10" and "ada@" not in answer.text, "the feed names no address"
    assert [e.title.split(" · ")[-1] for e in feed.entries] == ["1 new paper", f"6 in this mail, {layouts(site, 'ada@example.org')[0].total} in the edition"]
    for entry in feed.entries:
        opened = site.client.get(path(entry.link))
        assert opened.status_code == 200 and "Your paper digest" in opened.text
    assert "that files its own bugs" in site.client.get(path(feed.entries[0].link)).text
    assert feedparser.parse(site.client.get(path(feed_url.group(1))).content).feed.id == feed.feed.id, "the feed keeps its id"
    assert snapshot(site) == before, "reading the feed changes nothing"

    tampered = feed_url.group(1).replace(".atom", "x.atom")
    assert site.client.get(path(tampered)).status_code == 404
    bob = feedparser.parse(site.client.get(f"/feeds/{tokens.sign(SECRET, tokens.FEED, 'bob@example.org')}.atom").content)
    assert bob.entries and {e.id for e in bob.entries}.isdisjoint(e.id for e in feed.entries), "each reader's feed has only their own editions"


def test_a_row_planned_before_editions_existed_gets_a_page_when_it_is_sent(site: Site) -> None:
    """Rows from before the upgrade keep their own list of papers; sent now, they get the layout they go out as."""
    with Store(site.env.db) as store:
        pipeline.fetch(load(site.config_path), site.env, store)
        ids = [p.paper.id for p in store.papers_seen_since(datetime(2000, 1, 1, tzinfo=UTC))][:40]
        store.db.execute(
            "INSERT INTO deliveries (edition, subscriber, status, paper_ids, created, updated) VALUES ('old', 'ada@example.org', 'pending', ?, ?, ?)",
            (str(ids).replace("'", '"'), datetime.now(UTC).isoformat(), datetime.now(UTC).isoformat()),
        )
    send(site)
    text, _ = parts(digests(site, "ada@example.org")[0])
    (layout,) = layouts(site, "ada@example.org")[:1]
    assert set(layout.ids) <= set(ids)
    view = re.search(r"View in your browser: (\S+)", text)
    assert view and site.client.get(path(view.group(1))).status_code == 200
    with Store(site.env.db) as store:
        assert store.sent_paper_ids("ada@example.org") >= set(ids), "its own list still counts"


def test_a_page_opened_again_shows_the_papers_as_they_stand_now(site: Site) -> None:
    """Pages are built once per edition and kept, until one of its papers changes (upvotes climb during the day)."""
    send(site)
    text, _ = parts(digests(site, "ada@example.org")[0])
    view = path(re.search(r"View in your browser: (\S+)", text).group(1))  # type: ignore[union-attr]
    (layout,) = layouts(site, "ada@example.org")
    first = site.client.get(view).text
    assert site.client.get(view).text == first
    paper = store_paper(site, layout.sections[0].cut[0])
    with Store(site.env.db) as store:
        store.add_papers([Paper(id=paper.id, title=paper.title, score=987654, sources=("hf",))])
    assert "987654 upvotes" not in first and "987654 upvotes" in site.client.get(view).text
