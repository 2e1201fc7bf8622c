"""The whole cycle through real parts: feeds over local HTTP, SQLite, and a local SMTP server."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from httpserver import LocalHTTPServer
from smtpserver import SMTPServer

from newsletter import config as config_mod
from newsletter import environment, pipeline
from newsletter.cli import cli
from newsletter.mailer import transport
from newsletter.store import Store

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
        env = {**smtp.env(), "NEWSLETTER_FROM": "Paper Digest <digest@example.org>", "NEWSLETTER_SECRET_KEY": "test-secret", "NEWSLETTER_DB": str(tmp_path / "state.db")}
        yield smtp, env


def run(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def test_send_delivers_one_multipart_digest_per_subscriber_and_never_twice(setup) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    result = run(["send"], env)
    assert result.exit_code == 0, result.output
    assert "broken: FAILED" in result.output, "a broken source is named and the run goes on"
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp.messages) == ["ada@example.org", "bob@example.org"]

    ada = next(m for m in smtp.messages if "ada@" in m["To"])
    assert re.fullmatch(r"Paper digest · \d+ \w+ \d{4} · \d+ new papers", ada["Subject"])
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
    assert again.exit_code == 0
    assert "nothing new for anyone" in again.output
    assert len(smtp.messages) == 2


def test_dry_run_sends_and_records_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    smtp, env = setup
    result = run(["send", "--dry-run"], env)
    assert result.exit_code == 0, result.output
    assert result.output.count("  dry-run  ") == 2
    assert smtp.messages == []
    assert run(["send", "--to", "bob@example.org"], env).exit_code == 0
    assert [m["To"].addresses[0].addr_spec for m in smtp.messages] == ["bob@example.org"]


def test_outbox_is_used_when_no_smtp_host(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, env = setup
    env = {k: v for k, v in env.items() if not k.startswith("SMTP_")} | {"NEWSLETTER_OUTBOX": str(tmp_path / "out")}
    result = run(["send"], env)
    assert result.exit_code == 0, result.output
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
    smtp.sink.reply = lambda rcpt: "451 4.3.0 try later" if rcpt.startswith("bob@") else None
    assert run(["send"], env).exit_code == 2
    smtp.sink.reply = lambda rcpt: None
    assert run(["send"], env).exit_code == 0
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp.messages) == ["ada@example.org", "bob@example.org"]
    assert run(["send"], env).exit_code == 0
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
    smtp, env = setup
    settings = environment.load(env, dotenv=tmp_path / "none")
    conf = config_mod.load(tmp_path / "subscribers.yaml")
    seen: list[pipeline.Outcome] = []
    with Store(settings.db) as store:
        pipeline.fetch(conf, settings, store)
        report = pipeline.send(conf, settings, store, transport(settings), on_outcome=seen.append)
    assert seen == report.outcomes and [o.status for o in seen] == ["sent", "sent"]
