"""A mail's links followed over real HTTP against `newsletter serve` in a process of its own, as a reader's mail
program would: the digests of a real send (the .eml files of the outbox) and of `newsletter preview`, over real
feeds fetched from a local server. From the mail alone, every paper the ledger recorded for a reader is found."""

from __future__ import annotations

import html
import re
import sqlite3
from collections.abc import Iterator
from email import message_from_binary_file, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.appserver import ServedApp
from support.httpserver import LocalHTTPServer

from newsletter.cli import cli
from newsletter.mail.filters import paper_links
from newsletter.storage.store import Store

SECRET = "a-test-secret-that-is-long-enough-0123456789"

# Real feeds: a full day of arXiv (1,504 entries) and a Hugging Face daily page. Ada's three topics are capped at 4
# papers each; Cat reads everything, which the 100 KB mail budget cuts; Bob takes 2 papers in all.
CONFIG = """\
settings:
  allow_private_network: true
  max_papers_per_topic: 4

sources:
  - name: hf
    type: hf_daily
    url: {base}/hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json
  - name: arxiv
    type: arxiv_rss
    categories: [cs.LG]
    url: {base}/arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml

topics:
  agents:
    title: LLM agents
    any: [agent*]
  models:
    title: Language models
    any: [language model*, LLM*]
  vision:
    title: Vision
    any: [image*, vision, visual]
  everything:
    title: Everything
    max_papers: 5000

subscribers:
  - email: ada@example.org
    name: Ada
    topics: [agents, models, vision]
  - email: cat@example.org
    topics: [everything]
  - email: bob@example.org
    topics: [agents, models]
    max_papers: 2
"""


class Anchors(HTMLParser):
    """Every link of an HTML document, with its text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._open: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open.append((dict(attrs).get("href") or "", []))

    def handle_data(self, data: str) -> None:
        for _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            href, text = self._open.pop()
            self.links.append((href, " ".join("".join(text).split())))


def anchors(document: str) -> list[tuple[str, str]]:
    parser = Anchors()
    parser.feed(document)
    return parser.links


@pytest.fixture
def environ(tmp_path: Path, http_server: LocalHTTPServer) -> dict[str, str]:
    """An installation mailing into ./outbox (no SMTP server), over the real feeds above."""
    config = tmp_path / "subscribers.yaml"
    config.write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
    return {
        "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_DB": str(tmp_path / "state.db"),
        "NEWSLETTER_CONFIG": str(config),
        "NEWSLETTER_OUTBOX": str(tmp_path / "outbox"),
        "SMTP_HOST": "",
    }


@pytest.fixture
def app(environ: dict[str, str]) -> Iterator[ServedApp]:
    with ServedApp(environ) as served:
        environ["NEWSLETTER_BASE_URL"] = served.url  # the commands below make links to it
        yield served


def run(environ: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def html_part(mail: EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def outbox(environ: dict[str, str]) -> dict[str, EmailMessage]:
    """The digests written to the outbox, by recipient."""
    mails = {}
    for path in sorted(Path(environ["NEWSLETTER_OUTBOX"]).glob("*.eml")):
        with path.open("rb") as f:
            mail = message_from_binary_file(f, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        mails[str(mail["To"]).rpartition("<")[2].rstrip(">")] = mail
    return mails


def reachable(app: ServedApp, mail_html: str) -> tuple[set[str], dict[str, int]]:
    """Every link a reader can reach from the mail: its own, and those of the pages its "View in your browser" and
    "…and N more" links open (each must open); with each "…and N more" link's N, by the section it lands on."""
    links = anchors(mail_html)
    hrefs = {href for href, _ in links}
    more: dict[str, int] = {}
    pages = [href for href, text in links if text == "View in your browser"]
    assert len(pages) == 1, "the header links the edition's page"
    for href, text in links:
        if cut := re.match(r"…and (\d+) more in ", text):
            more[href.partition("#")[2]] = int(cut.group(1))
            pages.append(href)
    for href in pages:
        page = app.get(href.partition("#")[0])
        assert page.status_code == 200, f"{href} opens ({page.status_code})"
        anchor = href.partition("#")[2]
        assert not anchor or f'id="{anchor}"' in page.text, f"{href} lands on its section"
        hrefs |= {h for h, _ in anchors(page.text)}
    return hrefs, more


@pytest.mark.slow
def test_every_paper_recorded_for_a_reader_is_reachable_from_their_mail_alone(app: ServedApp, environ: dict[str, str]) -> None:
    run(environ, "send")
    mails = outbox(environ)
    assert set(mails) == {"ada@example.org", "bob@example.org", "cat@example.org"}
    with Store(Path(environ["NEWSLETTER_DB"])) as store:
        layouts = {row.subscriber: row.layout for row in store.deliveries() if row.layout is not None}
        owed = {email: store.papers_by_id(store.sent_paper_ids(email)) for email in mails}
    assert layouts["ada@example.org"].total > layouts["ada@example.org"].shown == 12, "three topics capped at 4"
    assert layouts["bob@example.org"].shown == 2 < layouts["bob@example.org"].total, "a cap on the whole digest"
    cat = layouts["cat@example.org"]
    assert 5000 > cat.total > cat.shown + 100, "the 100 KB budget cut Cat's one section, far below its cap"
    assert len(html_part(mails["cat@example.org"]).encode()) <= 100_000

    for email, mail in mails.items():
        hrefs, more = reachable(app, html_part(mail))
        assert owed[email], f"{email} was recorded papers"
        missing = [p.id for p in owed[email] if html.unescape(paper_links(p)[0][1]) not in hrefs]
        assert not missing, f"{len(missing)} of the {len(owed[email])} papers recorded for {email} are nowhere its mail leads: {missing[:5]}"
        layout = layouts[email]
        assert more == {s.anchor: len(s.cut) for s in layout.sections if s.cut}, "each cut section's link says how many more"


def snapshot(environ: dict[str, str]) -> list[str]:
    db = sqlite3.connect(environ["NEWSLETTER_DB"])
    try:
        return list(db.iterdump())
    finally:
        db.close()


@pytest.mark.slow
def test_a_previews_links_open_what_it_showed_and_record_nothing(app: ServedApp, environ: dict[str, str], tmp_path: Path) -> None:
    run(environ, "fetch")
    before = snapshot(environ)
    out = tmp_path / "preview.html"
    run(environ, "preview", "ada@example.org", "-o", str(out))
    preview = out.read_text(encoding="utf-8")
    counts = re.search(r"(\d+) in this mail, (\d+) in the edition", preview)
    assert counts, "the preview says how many papers it holds"
    shown, total = int(counts.group(1)), int(counts.group(2))
    assert (shown, total > shown) == (12, True)

    view = next(href for href, text in anchors(preview) if text == "View in your browser")
    page = app.get(view)
    assert page.status_code == 200
    assert "this digest was not sent" in page.text and "<title>Preview of your paper digest" in page.text
    assert page.text.count('<td class="paper') == total, "every paper of the preview, shown and cut"
    cuts = [(href, int(m.group(1))) for href, text in anchors(preview) if (m := re.match(r"…and (\d+) more in ", text))]
    assert len(cuts) == 3, "each of Ada's capped topics"
    for href, more in cuts:
        landed = app.get(href.partition("#")[0])
        anchor = href.partition("#")[2]
        section = re.search(rf'<section class="edition-topic" id="{re.escape(anchor)}">(.*?)</section>', landed.text, re.S)
        assert section and section.group(1).count('<td class="paper') == 4 + more, "the section holds the shown and the cut papers"
    feedback = next(href for href, text in anchors(preview) if text == "More like this")
    assert app.get(html.unescape(feedback)).status_code == 200, "a card's feedback link opens too"

    text = run(environ, "preview", "ada@example.org", "--text")
    link = re.search(r"View in your browser: (\S+)", text)
    assert link and app.get(link.group(1)).status_code == 200, "the text part's link too"
    assert snapshot(environ) == before, "previewing and opening its pages recorded nothing"

    token = view.rpartition("/")[2]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert app.get(view.replace(token, forged)).status_code == 404
    run(environ, "send")  # Ada gets the digest: the preview's page still shows what the preview held
    assert app.get(view).text.count('<td class="paper') == total
