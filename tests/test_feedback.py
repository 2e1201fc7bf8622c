"""Follow / More like this / Fewer like this, driven over HTTP from real digests: real feeds fetched from a local
server, mailed through a real SMTP server by `newsletter send`, each card's links followed as received."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer
from test_editions import digests, layouts, parts, path, send, snapshot
from test_web import Site, csrf, make_site

from newsletter.cli import cli
from newsletter.config.load import load
from newsletter.model.feedback import author_keyword, distinctive_terms
from newsletter.model.paper import Paper
from newsletter.model.topics import keyword_error
from newsletter.storage.store import Store
from newsletter.web import feedback

CONFIG = """\
# the operator's notes stay where they are
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
    any: [agent*]
  models:
    title: Language models
    any: [language model*, LLM*]

subscribers:
  # Ada reads agents only
  - email: ada@example.org
    name: Ada
    topics: [agents]   # chosen at sign-up
  # Bob reads both
  - email: bob@example.org
    topics: [agents, models]
"""


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp)
        site.config_path.write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
        yield site


def card_links(mail: EmailMessage) -> dict[str, dict[str, str]]:
    """Per paper id of the mail: its Follow / More / Fewer links in the HTML part and its one link in the text part."""
    text, html = parts(mail)
    out: dict[str, dict[str, str]] = {}
    for url, action in re.findall(r'<a href="(http://localhost/feedback/[^"#]+)#(follow|more|fewer)"', html):
        url = url.replace("&amp;", "&")
        out.setdefault(parse_qs(urlsplit(url).query)["paper"][0], {})[action] = url
    for url in re.findall(r"like this: (http://localhost/feedback/\S+)", text):
        out.setdefault(parse_qs(urlsplit(url).query)["paper"][0], {})["text"] = url
    return out


def entry(yaml: str, email: str) -> str:
    """One subscriber's entry as written, comment lines above it included."""
    match = re.search(rf"(  # [^\n]*\n)?  - email: {re.escape(email)}\n(    [^\n]*\n)*", yaml)
    assert match, email
    return match.group(0)


def act(site: Site, link: str, action: str, **fields: str | list[str]) -> tuple[int, str]:
    """Open a card's link as a reader does and press the button of one of its forms."""
    page = site.client.get(path(link))
    assert page.status_code == 200, page.text
    form = re.search(rf'<form method="post" action="([^"]+)" class="tune" id="{action}">', page.text)
    assert form, page.text
    answer = site.client.post(form.group(1).replace("&amp;", "&"), data={"csrf": csrf(page.text), **fields})
    return answer.status_code, answer.text


def spaced(text: str) -> str:
    """Text with runs of spaces as one."""
    return re.sub(" +", " ", text)


def add_paper(site: Site, paper_id: str, title: str, authors: tuple[str, ...], abstract: str = "") -> None:
    with Store(site.env.db) as store:
        store.add_papers([Paper(id=paper_id, title=title, abstract=abstract, authors=authors, sources=("cs-ai",), published=datetime.now(UTC))])


def test_every_card_links_follow_more_and_fewer_in_both_parts_and_opening_them_changes_nothing(site: Site) -> None:
    send(site)
    (mail,) = digests(site, "ada@example.org")
    links = card_links(mail)
    (layout,) = layouts(site, "ada@example.org")
    shown = [pid for s in layout.sections for pid in s.shown]
    assert sorted(links) == sorted(shown), "each card shown carries the links"
    assert all(set(v) == {"follow", "more", "fewer", "text"} for v in links.values()), "three in the HTML, one in the text"
    assert all(len({v["follow"], v["more"], v["fewer"], v["text"]}) == 1 for v in links.values()), "one page, opened at three places"

    before = snapshot(site)
    for urls in links.values():
        page = site.client.get(path(urls["text"]))
        assert page.status_code == 200, page.text
        assert all(f'id="{a}"' in page.text for a in ("follow", "more", "fewer")), "the three forms"
        assert "ada@example.org" in page.text and "<script" not in page.text.lower()
        assert site.client.head(path(urls["text"])).status_code == 200
    assert snapshot(site) == before, "opening the links (as mail scanners do) changes nothing"

    pid, urls = next(iter(links.items()))
    forged = path(urls["text"]).replace(f"paper={pid}", "paper=2411.99999")
    assert site.client.get(forged).status_code == 400, "a paper not in the reader's edition"
    answer = site.client.post(path(urls["follow"]).replace("?", "/follow?"), data={"rule": "author:Anyone"})
    assert answer.status_code == 403, "no CSRF token: refused"
    assert snapshot(site) == before


def test_follow_writes_an_author_keyword_to_that_reader_only_and_their_next_paper_comes_without_a_topic(site: Site) -> None:
    send(site)
    (mail,) = digests(site, "ada@example.org")
    links = card_links(mail)
    with Store(site.env.db) as store:
        paper = next(p for p in store.papers_by_id(list(links)) if len(p.authors) > 1)
    before = site.yaml()
    page = site.client.get(path(links[paper.id]["follow"]))
    offered = re.findall(r'name="rule" value="(author:[^"]+)"', page.text)
    assert offered == [f"author:{paper.authors[0]}", f"author:{paper.authors[-1]}"], "the first and the last author"

    status, text = act(site, links[paper.id]["follow"], "follow", rule=offered[-1])
    assert status == 200 and f"You now follow {paper.authors[-1]}" in text
    after = site.yaml()
    assert entry(after, "ada@example.org") == entry(before, "ada@example.org").replace(
        "    topics: [agents]   # chosen at sign-up\n", f"    topics: [agents]   # chosen at sign-up\n    keywords: [{offered[-1]}]\n"
    )
    assert after.replace(entry(after, "ada@example.org"), "") == before.replace(entry(before, "ada@example.org"), ""), "nothing else moves"
    assert "# the operator's notes stay where they are" in after
    ada = load(site.config_path).subscriber("ada@example.org")
    assert ada is not None and ada.keywords == (offered[-1],), "a valid file"

    add_paper(site, "2612.00001", "Soil microbes under drought", (paper.authors[-1], "Someone Else"), "Fungi and bacteria in dry soil.")
    add_paper(site, "2612.00002", "Soil microbes under flood", ("Nobody Followed",), "Fungi and bacteria in wet soil.")
    send(site, "--to", "ada@example.org")  # a second digest today: `send` alone mails each reader once a day
    send(site, "--to", "bob@example.org")
    _, second = digests(site, "ada@example.org")
    text_part, html = parts(second)
    assert "Followed authors" in text_part and "Soil microbes under drought" in text_part, "no topic takes it; following its author does"
    assert "Soil microbes under flood" not in text_part
    assert 'id="followed-authors"' in html
    assert not any("Soil microbes" in parts(m)[0] for m in digests(site, "bob@example.org")), "Bob follows nobody"


def test_fewer_like_this_excludes_a_term_and_a_new_paper_with_it_stays_out_until_the_rule_is_removed(site: Site) -> None:
    send(site)
    (mail,) = digests(site, "ada@example.org")
    links = card_links(mail)
    urls = next(iter(links.values()))
    page = site.client.get(path(urls["fewer"]))
    fewer = re.search(r'<form[^>]*id="fewer">(.*?)</form>', page.text, re.S)
    assert fewer
    offered = re.findall(r'name="rule" value="([^"]+)"', fewer.group(1))
    assert offered[0].lower().startswith("agent"), "the keyword that matched comes first, then the paper's own terms"
    term = next(t for t in offered[1:] if " " not in t and not t.startswith("category:"))
    original = site.yaml()

    status, text = act(site, urls["fewer"], "fewer", rule=term)
    assert status == 200 and "now stay out of your digest" in text
    ada = load(site.config_path).subscriber("ada@example.org")
    assert ada is not None and ada.exclude == (term,) and ada.topics == ("agents",)
    assert entry(site.yaml(), "bob@example.org") == entry(original, "bob@example.org")

    add_paper(site, "2612.00003", f"An agent for {term} at scale", ("X Y",))
    add_paper(site, "2612.00004", "An agent that sorts socks", ("X Y",))
    send(site, "--to", "ada@example.org")
    text_part = parts(digests(site, "ada@example.org")[-1])[0].replace("*", "")  # matched words unmarked
    assert "An agent that sorts socks" in text_part
    assert f"An agent for {term} at scale" not in text_part, "excluded, though the agents topic takes it"
    explained = CliRunner().invoke(cli, ["topics", "explain", "2612.00003", "--for", "ada@example.org"], env=site.environ, catch_exceptions=False)
    assert explained.exit_code == 0, explained.output
    assert "kept out of ada@example.org's digest by exclude" in explained.output and term in explained.output, explained.output

    preferences = path(re.search(r"Manage topics: (\S+)", text_part).group(1))  # type: ignore[union-attr]
    page = site.client.get(preferences)
    assert "Excluded" in page.text and f"<code>{term}</code>" in page.text, "the rule is shown"
    answer = site.client.post(f"{preferences}/rules", data={"csrf": csrf(page.text), "kind": "exclude", "rule": term}, follow_redirects=True)
    assert answer.status_code == 200 and "Removed." in answer.text
    assert site.yaml() == original, "undo gives back the file as it was"


def test_more_like_this_adds_terms_and_joins_a_topic_and_each_can_be_removed_on_the_preferences_page(site: Site) -> None:
    send(site)
    (mail,) = digests(site, "ada@example.org")
    original = site.yaml()
    links = card_links(mail)
    with Store(site.env.db) as store:
        papers = store.papers_by_id(list(links))
    paper = next(p for p in papers if re.search(r"language model|LLM", p.title + " " + p.abstract, re.I))
    page = site.client.get(path(links[paper.id]["more"]))
    more = re.search(r'<form[^>]*id="more">(.*?)</form>', page.text, re.S)
    assert more and 'name="topic" value="models"' in more.group(1), "a topic that takes the paper, to join"
    term = re.findall(r'name="rule" value="([^"]+)"', more.group(1))[0]
    status, text = act(site, links[paper.id]["more"], "more", rule=term, topic="models")
    assert status == 200 and "You joined Language models" in text
    ada = load(site.config_path).subscriber("ada@example.org")
    assert ada is not None and ada.topics == ("agents", "models") and ada.keywords == (term,)

    text_part = parts(mail)[0]
    preferences = path(re.search(r"Manage topics: (\S+)", text_part).group(1))  # type: ignore[union-attr]
    page = site.client.get(preferences)
    answer = site.client.post(f"{preferences}/rules", data={"csrf": csrf(page.text), "kind": "keywords", "rule": term}, follow_redirects=True)
    assert answer.status_code == 200
    answer = site.client.post(f"{preferences}/rules", data={"csrf": csrf(page.text), "kind": "topics", "rule": "models"}, follow_redirects=True)
    assert answer.status_code == 200
    assert spaced(site.yaml()) == spaced(original), "both undone: the entry as it was (a comment after a list that grew and shrank may move)"
    answer = site.client.post(f"{preferences}/rules", data={"csrf": csrf(page.text), "kind": "topics", "rule": "agents"})
    assert answer.status_code == 400 and "last rule" in answer.text, "never a reader who gets nothing"
    assert spaced(site.yaml()) == spaced(original)


def test_links_of_a_reader_who_left_or_of_an_edition_past_its_horizon_say_so_and_change_nothing(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    send(site)
    ada = next(iter(card_links(digests(site, "ada@example.org")[0]).values()))
    bob_mail = digests(site, "bob@example.org")[0]
    bob = next(iter(card_links(bob_mail).values()))

    unsubscribe = path(re.search(r"Unsubscribe: (\S+)", parts(bob_mail)[0]).group(1))  # type: ignore[union-attr]
    page = site.client.get(unsubscribe)
    assert site.client.post(unsubscribe, data={"csrf": csrf(page.text)}).status_code == 200
    before = snapshot(site)
    answer = site.client.get(path(bob["text"]))
    assert answer.status_code == 410 and "You have left" in answer.text
    token = csrf(site.client.get(path(ada["text"])).text)  # a form of Ada's: the same visitor's CSRF token
    assert site.client.post(path(bob["fewer"]).replace("?", "/fewer?"), data={"csrf": token, "rule": "agent*"}).status_code == 410
    assert snapshot(site) == before

    horizon = load(site.config_path).settings.horizon_days
    monkeypatch.setattr(feedback, "utcnow", lambda: datetime.now(UTC) + timedelta(days=horizon + 2))
    answer = site.client.get(path(ada["text"]))
    assert answer.status_code == 410 and "past its horizon" in answer.text
    assert snapshot(site) == before


def test_a_papers_terms_are_its_titles_runs_of_subject_words_and_author_names_become_exact_author_keywords() -> None:
    paper = Paper(id="x", title="Qwen-UI-Agent Technical Report: Toward Next-Generation GUI Agents for C++ Code", categories=("cs.AI", "cs.LG"))
    assert distinctive_terms(paper) == ["Qwen-UI-Agent", "Next-Generation GUI Agents", "C++ Code", "category:cs.AI"]
    assert all(keyword_error(t) is None for t in distinctive_terms(paper))
    assert author_keyword("  Ada   Lovelace ") == "author:Ada Lovelace"
    assert author_keyword("A*B Smith") == 'author:"A*B Smith"', "quoted: no wildcard"
    assert author_keyword("Lovelace, Ada") is None, "a comma would split it on the preferences page"
    assert author_keyword("x" * 80) is None
