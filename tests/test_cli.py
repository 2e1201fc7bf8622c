"""The `newsletter` command as an operator meets it, each as its own process: who `send` mails, what a source that is not
a feed does to the exit code, what `check` says, where the files live, rehearsing the daemon, a broken NEWSLETTER_DB (#21)."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.httpserver import LocalHTTPServer, Reply

from newsletter.model.config import WEEKDAYS

ROOT = Path(__file__).resolve().parent.parent
FEED = ROOT / "samples" / "feeds" / "personal-news-feed__daily_papers_2026-07-31.json"

CONFIG = f"""\
sources:
  - name: hf
    type: hf_daily
    url: {FEED}
topics:
  speech:
    title: Trending
    sources: [hf]
    min_score: 20
subscribers:
"""


def reader(address: str, **fields: str) -> str:
    return f"  - email: {address}\n    topics: [speech]\n" + "".join(f"    {k}: {v}\n" for k, v in fields.items())


def newsletter(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One `newsletter` command in its own process, with no SMTP or NEWSLETTER_ setting but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "NEWSLETTER_"))}
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=cwd, env=clean | (env or {}), capture_output=True, text=True, timeout=timeout)


def recipients(outbox: Path) -> list[str]:
    found = []
    for path in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.append(msg["To"].addresses[0].addr_spec)
    return sorted(found)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


# send: each reader's frequency and day


def test_send_mails_only_the_readers_due_today_and_each_once_a_day(tmp_path: Path) -> None:
    today = WEEKDAYS[datetime.now(UTC).weekday()]
    other = WEEKDAYS[(datetime.now(UTC).weekday() + 3) % 7]
    (tmp_path / "subscribers.yaml").write_text(
        CONFIG
        + reader("daily@example.org", timezone="UTC")
        + reader("today@example.org", frequency="weekly", day=today, timezone="UTC")
        + reader("other@example.org", frequency="weekly", day=other, timezone="UTC"),
        encoding="utf-8",
    )
    first = newsletter("send", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert recipients(tmp_path / "outbox") == ["daily@example.org", "today@example.org"], f"a weekly reader on another day ({other}) waits"
    assert "1 subscriber not due today" in first.stdout

    again = newsletter("send", cwd=tmp_path)
    assert again.returncode == 0 and "3 subscribers not due today" in again.stdout, "one digest a local day, however often cron runs"
    forced = newsletter("send", "--to", "other@example.org", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert recipients(tmp_path / "outbox") == ["daily@example.org", "other@example.org", "today@example.org"], "--to sends one reader anyway"
    status = newsletter("status", cwd=tmp_path)
    assert "daily@example.org [daily]: " in status.stdout and "last slot " in status.stdout, "send records today's slot as the daemon does"


# sources that answer with something that is not a feed


def test_a_body_that_is_not_a_feed_fails_its_source_an_empty_feed_warns_and_fetch_and_send_exit_3(tmp_path: Path) -> None:
    empty_channel = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet journal</title><link>https://example.org/</link></channel></rss>'
    login = b"<!DOCTYPE html><html><head><title>Sign in - Library proxy</title></head><body><form><input name=user></form></body></html>"
    with LocalHTTPServer() as server:
        server.route("/empty", Reply(body=b"", headers={"Content-Type": "application/xml"}))
        server.route("/login", Reply(body=login, headers={"Content-Type": "application/xml"}))
        server.route("/quiet", Reply(body=empty_channel, headers={"Content-Type": "application/rss+xml"}))
        config = CONFIG.replace("sources:\n", "settings:\n  allow_private_network: true\nsources:\n") + reader("ada@example.org")
        config = config.replace(
            "topics:\n",
            "".join(f"  - name: {name}\n    type: feed\n    url: {server.url('/' + name)}\n" for name in ("empty", "login", "quiet")) + "topics:\n",
        )
        (tmp_path / "subscribers.yaml").write_text(config, encoding="utf-8")

        fetched = newsletter("fetch", cwd=tmp_path)
        assert fetched.returncode == 3, fetched.stdout + fetched.stderr
        assert "empty: FAILED — not a feed: the response was empty (0 bytes) (served as application/xml)" in fetched.stdout
        assert "login: FAILED — not a feed: an HTML page titled 'Sign in - Library proxy' (served as application/xml)" in fetched.stdout
        assert "quiet: 0 papers, 0 new — warning: the feed listed no entries at all" in fetched.stdout, "an empty feed is a warning, not a failure"
        assert "hf: 30 papers, 30 new" in fetched.stdout
        assert "2 of 4 sources failed (exit code 3)" in fetched.stderr

        health = newsletter("sources", cwd=tmp_path).stdout
        assert "empty (feed): FAILING (1 in a row)" in health and "login (feed): FAILING (1 in a row)" in health
        assert "quiet (feed): ok" in health and "    warning at the last fetch: the feed listed no entries at all" in health

        sent = newsletter("send", cwd=tmp_path)
        assert sent.returncode == 3, "the rest were fetched and sent; some sources failed"
        assert recipients(tmp_path / "outbox") == ["ada@example.org"]


# check


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "subscribers.yaml").write_text(text, encoding="utf-8")
    return newsletter("check", cwd=tmp_path)


def test_check_refuses_a_lone_string_where_a_list_is_meant_and_warns_on_a_comma_inside_a_keyword(tmp_path: Path) -> None:
    good = CONFIG.replace("    min_score: 20\n", "    min_score: 20\n    any: [speech, ASR]\n") + reader("ada@example.org")
    assert check(tmp_path, good).returncode == 0

    scalar = check(tmp_path, good.replace("any: [speech, ASR]", "any: speech, ASR"))
    assert scalar.returncode == 1
    assert "subscribers.yaml:10:5: topics.speech.any: expected a list, got the text 'speech, ASR': write any: [speech, ASR]" in scalar.stderr

    comma = check(tmp_path, good.replace("any: [speech, ASR]", 'any: ["speech, ASR", "/a{1,3}/"]'))
    assert comma.returncode == 0, "a warning does not fail the check"
    (warning,) = [line for line in comma.stderr.splitlines() if "warning" in line]
    assert warning.startswith("subscribers.yaml:10:11: topics.speech.any[0]: warning: the keyword 'speech, ASR' holds a comma")
    assert warning.endswith("for separate keywords write [speech, ASR]"), "a /regex/ with a comma is not warned about"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("    min_score: 20\n", "    min_score: 20\n\tany: [x]\n"), "subscribers.yaml:10:1: invalid YAML: a tab character; YAML indents with spaces only"),
        (
            ("    min_score: 20\n", "    min_score: 20\n    any: [*adapter]\n"),
            'subscribers.yaml:10:11: invalid YAML: *adapter reads as a YAML alias (a reference to an &adapter anchor); to mean the text, quote it: "*adapter"',
        ),
        (
            ("timezone: UTC", "timezone: America/Los_Angles"),
            "subscribers.yaml:13:5: subscribers[0].timezone: unknown timezone 'America/Los_Angles' (did you mean 'America/Los_Angeles'?)",
        ),
        (
            ("timezone: UTC\n", "timezone: UTC\n" + reader("Ada@Example.org")),
            "subscribers.yaml:14:5: subscribers[1].email: duplicate subscriber 'Ada@Example.org' (first at line 11)",
        ),
    ],
)
def test_check_says_what_to_do_in_plain_words(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    good = CONFIG + reader("ada@example.org", timezone="UTC")
    assert edit[0] in good
    result = check(tmp_path, good.replace(*edit))
    assert result.returncode == 1
    assert result.stderr.startswith(expected), result.stderr


def test_an_empty_file_is_an_error_and_an_ok_says_where_mail_and_state_go(tmp_path: Path) -> None:
    empty = check(tmp_path, "# nothing yet\n")
    assert empty.returncode == 1 and empty.stderr.startswith("subscribers.yaml:1:1: the file is empty")
    ok = check(tmp_path, CONFIG + reader("ada@example.org"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == (
        f"subscribers.yaml: ok — 1 source, 1 topic, 1 subscriber; state in {tmp_path / 'newsletter.db'}; "
        f"mail goes to .eml files in {tmp_path / 'outbox'} (SMTP_HOST unset)"
    )


def test_subscribe_suggests_the_topic_meant(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    result = newsletter("subscribe", "bob@example.org", "--topics", "speach", "--confirmed", cwd=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result) == "error: unknown topic 'speach' (did you mean 'speech'?)"


# where the files are


def test_a_config_in_another_folder_brings_its_env_database_and_outbox(tmp_path: Path) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    (site / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    (site / ".env").write_text("NEWSLETTER_DB=state/digest.db\n", encoding="utf-8")
    config = str(site / "subscribers.yaml")

    sent = newsletter("send", "--config", config, cwd=elsewhere)
    assert sent.returncode == 0, sent.stderr
    assert (site / "state" / "digest.db").is_file() and recipients(site / "outbox") == ["ada@example.org"]
    assert list(elsewhere.iterdir()) == [], "nothing lands in the working directory"

    status = newsletter("status", "--config", config, cwd=elsewhere)
    assert status.stdout.startswith(f"State database: {site / 'state' / 'digest.db'}\nDeliveries: 1 sent")
    fresh = newsletter("status", cwd=elsewhere, env={"NEWSLETTER_CONFIG": config, "NEWSLETTER_DB": "other.db"})
    assert fresh.stdout.startswith(f"State database: {site / 'other.db'} (did not exist: created now, empty"), "and says so when it is new"


def test_global_options_work_after_the_subcommand_too(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    folder = tmp_path / "cwd"
    folder.mkdir()
    result = newsletter("send", "--config", str(tmp_path / "subscribers.yaml"), "--dry-run", "-v", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "dry-run  ada@example.org: " in result.stdout and "DEBUG " in result.stderr
    assert newsletter("topics", "try", "--config", str(tmp_path / "subscribers.yaml"), cwd=folder).returncode == 0


# a broken NEWSLETTER_DB


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "under a file"])
def test_a_state_database_that_cannot_be_used_is_one_line_and_exit_6(tmp_path: Path, kind: str) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    (tmp_path / "state").mkdir()
    db = "state" if kind == "folder" else "subscribers.yaml/state.db"
    for command in (["send"], ["status"], ["run"], ["serve"], ["subscribe", "bob@example.org", "--confirmed"]):
        result = newsletter(*command, cwd=tmp_path, env={"NEWSLETTER_DB": db, "NEWSLETTER_SECRET_KEY": "k"}, timeout=30)
        assert result.returncode == 6, (command, result.stderr)
        line = one_line_error(result)
        assert line.startswith(f"error: the state database {tmp_path / db} ")
        assert ("is a folder, not a file" if kind == "folder" else "cannot be created") in line
    assert "bob@example.org" not in (tmp_path / "subscribers.yaml").read_text(encoding="utf-8"), "nothing half done"
    checked = newsletter("check", cwd=tmp_path, env={"NEWSLETTER_DB": db})
    assert checked.returncode == 1 and one_line_error(checked).startswith(f"error: NEWSLETTER_DB={tmp_path / db} ")


def test_a_postgresql_url_is_a_server_to_reach_not_a_file_name(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    url = f"postgresql://ada:s3cret@/newsletter?host={tmp_path / 'no-server'}"
    for command in (["send"], ["status"]):
        result = newsletter(*command, cwd=tmp_path, env={"NEWSLETTER_DB": url, "NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_DB_TIMEOUT": "1"}, timeout=30)
        assert result.returncode == 6, (command, result.stderr)
        line = one_line_error(result)
        assert line.startswith(f"error: the state database postgresql://ada@/newsletter?host={tmp_path / 'no-server'} failed: ") and "s3cret" not in line
    assert not [p for p in tmp_path.rglob("*") if "postgresql" in p.name or p.suffix == ".db"], "no file made of the URL"


# rehearsing the daemon


@pytest.mark.slow
def test_run_rehearses_with_dry_run_and_refuses_a_clock_on_a_database_with_real_sends(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(
        CONFIG + reader("ada@example.org", send_at='"07:30"', timezone="UTC") + reader("bob@example.org", send_at='"07:31"', timezone="UTC"),
        encoding="utf-8",
    )
    assert newsletter("send", "--to", "ada@example.org", cwd=tmp_path).returncode == 0
    db = tmp_path / "newsletter.db"

    def ledger() -> tuple[list[tuple[str, str]], list[str]]:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT edition, subscriber FROM deliveries ORDER BY subscriber").fetchall()
            return rows, [r[0] for r in conn.execute("SELECT subscriber FROM schedule")]

    before = ledger()
    clock = f"{datetime.now(UTC):%Y-%m-%d}T07:30:57Z"
    refused = newsletter("run", "--clock", clock, cwd=tmp_path)
    assert refused.returncode == 1 and "--dry-run" in one_line_error(refused), "a clock would send real mail and use up real slots"

    log = tmp_path / "run.log"
    args = [sys.executable, "-m", "newsletter", "run", "--tick", "0.1", "--clock", clock, "--dry-run"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "NEWSLETTER_"))}
    with log.open("w") as err:
        daemon = subprocess.Popen(args, cwd=tmp_path, env=clean, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 30
            while "rehearsal send slot-" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)  # more ticks: none may repeat the rehearsed slot
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
    text = log.read_text()
    assert "bob@example.org would get " in text and text.count("would get") == 1, text
    assert "maximum number of running instances" not in text, "skipped ticks are not logged"
    assert ledger() == before, "nothing sent or recorded: the real slots are untouched"
    assert recipients(tmp_path / "outbox") == ["ada@example.org"]
