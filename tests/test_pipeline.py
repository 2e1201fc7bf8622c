"""The whole cycle through real parts: feeds over local HTTP, SQLite, and a local SMTP server."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer

from newsletter import config as config_mod
from newsletter import environment, pipeline
from newsletter.cli import cli
from newsletter.mail.pool import transport
from newsletter.pipeline.courier import RETRIES_IN_RUN
from newsletter.storage.store import Store

CONFIG = """\
settings:
  allow_private_network: true
sources:
  - name: hf
    type: hf_daily
    url: {base}/hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json
  - name: cs-ai
    type: arxiv_rss
    categories: [cs.AI]
    url: {base}/arxiv_rss/distill__arxiv_cs_ai.xml
  - name: broken
    type: feed
    url: {base}/does-not-exist.xml
topics:
  agents:
    title: LLM agents
    any: [agent*]
  trending:
    title: Trending
    sources: [hf]
    min_score: 100
subscribers:
  - email: ada@example.org
    name: Ada
    topics: [trending, agents]
  - email: bob@example.org
    topics: [trending]
  - email: cy@example.org
    topics: [agents]
    paused: true
"""


@pytest.fixture
def setup(tmp_path: Path, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "subscribers.yaml").write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
    with SMTPServer() as smtp:
        env = {
            **smtp.env(),
            "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
            "NEWSLETTER_SECRET_KEY": "test-secret",
            "NEWSLETTER_DB": str(tmp_path / "state.db"),
        }
        yield smtp, env


def run(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def test_send_delivers_one_multipart_digest_per_subscriber_and_never_twice(setup) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    result = run(["send"], env)
    assert result.exit_code == 3, result.output  # the broken source fails (3); the rest were fetched and sent
    assert "broken: FAILED" in result.output, "a broken source is named and the run goes on"
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp.messages) == ["ada@example.org", "bob@example.org"]

    ada = next(m for m in smtp.messages if "ada@" in m["To"])
    assert re.fullmatch(r"Paper digest · \d+ \w+ \d{4} · (\d+ new papers|\d+ in this mail, \d+ in the edition)", ada["Subject"])
    for header in ("From", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert ada[header], header
    assert ada.get_content_type() == "multipart/alternative"
    text = ada.get_body(("plain",)).get_content()
    html = ada.get_body(("html",)).get_content()
    arxiv_links = set(re.findall(r"https://arxiv\.org/abs/[\w.]+", text))
    assert arxiv_links and arxiv_links == set(re.findall(r"https://arxiv\.org/abs/[\w.]+", html))
    assert "== LLM agents" in text and "== Trending" in text
    assert ">LLM agents <span" in html and ">Trending <span" in html
    assert "Qwen-UI-*Agent* Technical Report" in text, "283 upvotes, matched words marked"

    again = run(["send"], env)
    assert again.exit_code == 3
    assert "nothing new for anyone" in again.output
    assert len(smtp.messages) == 2


def test_dry_run_sends_and_records_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    result = run(["send", "--dry-run"], env)
    assert result.exit_code == 3, result.output
    assert result.output.count("  dry-run  ") == 2
    assert smtp.messages == []
    assert run(["send", "--to", "bob@example.org"], env).exit_code == 3
    assert [m["To"].addresses[0].addr_spec for m in smtp.messages] == ["bob@example.org"]


def test_outbox_is_used_when_no_smtp_host(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, env = setup
    env = {k: v for k, v in env.items() if not k.startswith("SMTP_")} | {"NEWSLETTER_OUTBOX": str(tmp_path / "out")}
    result = run(["send"], env)
    assert result.exit_code == 3, result.output
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == 2
    assert f"Messages are in {tmp_path / 'out'}" in result.output
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"


def test_a_refused_recipient_fails_alone_and_the_exit_code_says_so(setup) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    smtp.sink.reply = lambda rcpt: "550 5.1.1 no such user" if rcpt.startswith("bob@") else None
    result = run(["send"], env)
    assert result.exit_code == 2
    assert [m["To"].addresses[0].addr_spec for m in smtp.messages] == ["ada@example.org"]
    assert "failed   bob@example.org" in result.output


def test_a_deferred_digest_is_delivered_by_the_next_run(setup) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    env = {**env, "SMTP_RETRY_DELAY": "0.05"}  # the in-run retries back off 0.05 s, then 0.1 s (not the default 5 s, 10 s)
    tries: list[str] = []

    def refuse_bob(rcpt: str) -> str | None:
        tries.append(rcpt)
        return "451 4.3.0 try later" if rcpt.startswith("bob@") else None

    smtp.sink.reply = refuse_bob
    assert run(["send"], env).exit_code == 2
    assert RETRIES_IN_RUN > 0 and tries.count("bob@example.org") == 1 + RETRIES_IN_RUN, "tried, then retried in the run before being deferred"
    smtp.sink.reply = lambda rcpt: None
    assert run(["send"], env).exit_code == 3
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp.messages) == ["ada@example.org", "bob@example.org"]
    assert run(["send"], env).exit_code == 3
    assert len(smtp.messages) == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("topics: [trending, agents]", "topics: [trendy, agents]"), "subscribers[0].topics[0]: unknown topic 'trendy'"),
        (("  - email: bob@example.org\n", "  - name: Bob\n"), "subscribers[1]: missing 'email'"),
        (("    min_score: 100\n", "    min_score: [100\n"), "invalid YAML"),
    ],
)
def test_check_and_send_refuse_a_broken_config(setup, tmp_path: Path, edit: tuple[str, str], message: str) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    path = tmp_path / "subscribers.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(*edit), encoding="utf-8")
    for command in (["check"], ["send"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 1
        assert "subscribers.yaml:" in result.output and message in result.output
    assert smtp.messages == []


def test_each_outcome_is_reported_as_it_happens(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _smtp, env = setup
    settings = environment.load(env, dotenv=tmp_path / "none")
    conf = config_mod.load(tmp_path / "subscribers.yaml")
    seen: list[pipeline.Outcome] = []
    with Store(settings.db) as store:
        pipeline.fetch(conf, settings, store)
        report = pipeline.send(conf, settings, store, transport(settings.smtp, settings.outbox, settings.pool, settings.dkim), on_outcome=seen.append)
    assert seen == report.outcomes and [o.status for o in seen] == ["sent", "sent"]


TWO_TOPICS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Two topics</title><link>https://feed.example/</link><description>d</description>
<item><title>Agents that plan</title><link>https://feed.example/1</link><guid>https://feed.example/1</guid><description>Agents.</description></item>
<item><title>Robots that grasp</title><link>https://feed.example/2</link><guid>https://feed.example/2</guid><description>Robots.</description></item>
</channel></rss>
"""


def test_readers_of_one_selection_are_sent_one_after_another_whatever_the_config_order(tmp_path: Path) -> None:
    """So each digest is composed, rendered and handed to the connections while it is in their caches, which keep a
    few hundred: a list with more selections than that, in any order, still renders each once."""
    (tmp_path / "two.xml").write_text(TWO_TOPICS, encoding="utf-8")
    listed = ["a1", "b1", "a2", "b2", "a3"]
    (tmp_path / "subscribers.yaml").write_text(
        f"sources:\n  - name: two\n    type: feed\n    url: {tmp_path / 'two.xml'}\n"
        "topics:\n  agents:\n    any: [agent*]\n  robots:\n    any: [robot*]\nsubscribers:\n"
        + "".join(f"  - email: {r}@example.org\n    topics: [{'agents' if r[0] == 'a' else 'robots'}]\n" for r in listed),
        encoding="utf-8",
    )
    settings = environment.load({"NEWSLETTER_DB": str(tmp_path / "state.db"), "NEWSLETTER_OUTBOX": str(tmp_path / "out")}, dotenv=tmp_path / "none")
    conf = config_mod.load(tmp_path / "subscribers.yaml")
    with Store(settings.db) as store:
        pipeline.fetch(conf, settings, store)
        report = pipeline.send(conf, settings, store, transport(settings.smtp, settings.outbox, settings.pool, settings.dkim))
    assert [o.email.split("@")[0] for o in report.outcomes] == ["a1", "a2", "a3", "b1", "b2"], "the outbox's one lane answers in order"


BAIT = "__NL_UNSUBSCRIBE_TOKEN__ __NL_PREFERENCES_TOKEN__ __NL_HTML_EMAIL__ __NL_TEXT_EMAIL__ __NL_TEXT_NAME__ {{ reader.email }} *|EMAIL|*"
BAIT_LINK = "https://evil.example/t?u=__NL_UNSUBSCRIBE_TOKEN__&amp;p=__NL_PREFERENCES_TOKEN__&amp;e=__NL_HTML_EMAIL__&amp;n=__NL_TEXT_EMAIL__"
HOSTILE_FEED = f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>{BAIT}</title><link>https://evil.example/</link>
<description>bait</description>
<item><title>Agents {BAIT}</title><link>{BAIT_LINK}</link><guid>{BAIT_LINK}</guid>
<description>Agents that read {BAIT} and more.</description><dc:creator>{BAIT}</dc:creator><category>{BAIT}</category>
<comments>{BAIT_LINK}</comments></item>
</channel></rss>
"""


def test_a_feed_full_of_placeholder_bait_mails_no_reader_their_own_or_anyone_elses_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hole: fixed markers let a feed link carry each reader's unsubscribe and preferences tokens and address."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bait.xml").write_text(HOSTILE_FEED, encoding="utf-8")
    readers = ["ada@example.org", "bob@example.org"]
    (tmp_path / "subscribers.yaml").write_text(
        "sources:\n  - name: bait\n    type: feed\n    url: bait.xml\ntopics:\n  agents:\n    any: [agent*]\nsubscribers:\n"
        + "".join(f"  - email: {r}\n    name: {r.split('@')[0].title()}\n    topics: [agents]\n" for r in readers),
        encoding="utf-8",
    )
    with SMTPServer() as smtp:
        env = {
            **smtp.env(),
            "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
            "NEWSLETTER_SECRET_KEY": "test-secret",
            "NEWSLETTER_DB": str(tmp_path / "state.db"),
            "NEWSLETTER_BASE_URL": "https://news.example.org",
        }
        result = run(["send"], env)
        assert result.exit_code == 0, result.output
        messages = {m["To"].addresses[0].addr_spec: m for m in smtp.messages}
    assert sorted(messages) == readers
    secrets = {}
    for address, msg in messages.items():
        token = re.fullmatch(r"<https://news\.example\.org/unsubscribe/([\w.-]+)>", msg["List-Unsubscribe"])
        assert token is not None
        html, text = (msg.get_body((kind,)).get_content() for kind in ("html", "plain"))  # type: ignore[union-attr]
        preferences = re.search(r"/preferences/([\w.-]+)", text)
        assert preferences is not None
        secrets[address] = (token[1], preferences[1], html, text)
    for address, (unsubscribe, preferences, html, text) in secrets.items():
        assert "__NL_UNSUBSCRIBE_TOKEN__ __NL_PREFERENCES_TOKEN__ __NL_HTML_EMAIL__" in text, "the bait is shown as it came"
        assert "u=__NL_UNSUBSCRIBE_TOKEN__&amp;p=__NL_PREFERENCES_TOKEN__" in html, "the bait link is left as it came"
        for part in (html, text):
            links = re.findall(r"https?://[^\s\"'<>]+", part)
            assert [u for u in links if unsubscribe in u or preferences in u] == [u for u in links if re.search(r"/(unsubscribe|preferences)/", u)]
            assert not [u for u in links if "evil.example" in u and (unsubscribe in u or preferences in u or address in u)]
            others = [s for other, s in secrets.items() if other != address]
            assert not any(s[0] in part or s[1] in part for s in others), "no other reader's tokens"


def test_a_second_send_on_the_same_database_is_refused_with_one_line_and_exit_4(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One sender per database: a second would take the first one's rows in `sending` for interrupted ones."""
    import fcntl

    smtp, env = setup
    with open(tmp_path / "state.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(cli, ["send"], env=env)
    assert result.exit_code == 4, result.output
    assert result.output.strip().splitlines()[-1] == f"error: another newsletter send is running (lock {tmp_path / 'state.db.lock'})"
    assert "Traceback" not in result.output and smtp.messages == []
    assert run(["send"], env).exit_code == 3 and len(smtp.messages) == 2, "once the lock is free, the send goes ahead"


def test_a_reader_whose_mail_cannot_be_built_fails_alone_and_everyone_else_is_mailed(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`check` refuses such a name in subscribers.yaml; a config that reaches `send` another way still cannot stop the others."""
    import dataclasses

    smtp, env = setup
    settings = environment.load(env, dotenv=tmp_path / "none")
    conf = config_mod.load(tmp_path / "subscribers.yaml")
    eve = dataclasses.replace(conf.subscribers[0], name="Eve\r\nBcc: everyone@example.org")
    conf = dataclasses.replace(conf, subscribers=(eve, *conf.subscribers[1:]))
    with Store(settings.db) as store:
        pipeline.fetch(conf, settings, store)
        report = pipeline.send(conf, settings, store, transport(settings.smtp, settings.outbox, settings.pool, settings.dkim))
        rows = {r.subscriber: r for r in store.deliveries()}
    assert [(o.email, o.status) for o in report.outcomes] == [("ada@example.org", "failed"), ("bob@example.org", "sent")]
    assert rows["ada@example.org"].status == "failed" and "cannot build this reader's mail" in (rows["ada@example.org"].last_reply or "")
    assert [m["To"].addresses[0].addr_spec for m in smtp.messages] == ["bob@example.org"]
    assert all("Bcc" not in str(m) for m in smtp.messages)
