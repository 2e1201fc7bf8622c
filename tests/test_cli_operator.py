"""`newsletter status`, `sources` and `subscribers` as an operator reads them, each command in its own process: two kinds of
pause named apart, the daemon's runs and those by hand, one time format, nothing said at zero, and --json for scripts (#21)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from test_cli import CONFIG, newsletter, reader

from newsletter.model.digest import Layout
from newsletter.storage.store import Store

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d [A-Z][A-Za-z0-9+-]*"  # the one format: minutes and the zone's name


def sent_world(tmp_path: Path) -> Path:
    """Three readers (one in UTC, one in California, one who paused themselves) and one manual send."""
    (tmp_path / "subscribers.yaml").write_text(
        CONFIG
        + reader("ada@example.org", timezone="UTC")
        + reader("bob@example.org", timezone="America/Los_Angeles")
        + reader("sofia@example.org", paused="true"),
        encoding="utf-8",
    )
    sent = newsletter("send", "--to", "ada@example.org", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    return tmp_path


def test_status_names_the_two_pauses_apart_labels_the_daemons_runs_and_says_nothing_at_zero(tmp_path: Path) -> None:
    folder = sent_world(tmp_path)
    out = newsletter("status", cwd=folder).stdout
    assert "Uncertain" not in out, "no paragraph about uncertain deliveries when there are none"
    assert re.search(rf"\nLast sends:\n  sent     ada@example.org at {TIME}: ", out), "the last sends under their own heading"
    assert "Paused after hard failures (mail refused or bounced): 0" in out
    assert "Paused by their own choice (paused: true, from the preferences page or the file): sofia@example.org" in out
    assert "  sofia@example.org [daily]: paused by their own choice" in out
    assert "Daemon (`newsletter run`): last fetch run never; last send run never" in out, "the daemon's runs are labelled as its own"
    by_hand = re.search(rf"By hand or cron: last `newsletter fetch` ({TIME}): 30 new papers from 1/1 sources; last `newsletter send` ({TIME}): 1 sent", out)
    assert by_hand, out

    ada = next(line for line in out.splitlines() if line.startswith("  ada@example.org"))
    assert re.fullmatch(rf"  ada@example.org \[daily\]: \d{{4}}-\d\d-\d\d 07:00 UTC; last slot {TIME}: sent", ada), "a UTC reader's time once"
    bob = next(line for line in out.splitlines() if line.startswith("  bob@example.org"))
    assert re.fullmatch(r"  bob@example.org \[daily\]: \d{4}-\d\d-\d\d 07:00 P[SD]T \(\d{4}-\d\d-\d\d 1[45]:00 UTC\)", bob), bob
    stamps = re.findall(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d)?(?: ?[A-Z][A-Za-z0-9+-]*)?", out)
    assert stamps and all(re.fullmatch(TIME, s) for s in stamps), f"one time format throughout: {stamps}"


def test_a_delivery_that_never_reached_the_server_does_not_say_0_attempts_and_paused_readers_are_held(tmp_path: Path) -> None:
    folder = sent_world(tmp_path)
    layout = Layout(date(2026, 11, 30), ())
    with Store(folder / "newsletter.db") as store:
        store.plan_delivery("send-2026-11-30", "bob@example.org", layout)
        store.mark_failed("send-2026-11-30", "bob@example.org", "address refused before sending", hard=True, pause_after=1)
    out = newsletter("status", cwd=folder).stdout
    assert "0 attempts" not in out
    assert "  failed   bob@example.org (send-2026-11-30, never handed to the server): address refused before sending" in out
    assert "Paused after hard failures (mail refused or bounced): 1" in out and "(newsletter status --resume bob@example.org)" in out
    assert re.search(r"  bob@example.org \[daily\]: [^\n]*, held: paused after hard failures", out), "the next send says it is held"


def test_status_json_has_stable_keys_and_the_report_line_goes_to_stderr(tmp_path: Path) -> None:
    folder = sent_world(tmp_path)
    result = newsletter("status", "--json", cwd=folder)
    assert result.returncode == 0 and "State database:" in result.stderr
    found = json.loads(result.stdout)
    assert list(found) == [
        "database",
        "deliveries",
        "uncertain",
        "unfinished",
        "paused_after_failures",
        "paused_by_choice",
        "came_back",
        "next_sends",
        "sources",
        "runs",
    ]
    assert found["deliveries"] == {"pending": 0, "sending": 0, "sent": 1, "deferred": 0, "failed": 0}
    assert found["uncertain"] == {"sending": 0, "resent": 0, "given_up": 0}
    assert found["paused_by_choice"] == ["sofia@example.org"] and found["paused_after_failures"] == []
    ada, bob, sofia = found["next_sends"]
    assert ada["subscriber"] == "ada@example.org" and ada["last_outcome"] == "sent" and ada["paused"] is None
    assert datetime.fromisoformat(bob["next"]).utcoffset() == timedelta(0) and bob["timezone"] == "America/Los_Angeles"
    assert sofia["next"] is None and sofia["paused"] == "by_choice"
    assert found["sources"] == [{"name": "hf", "last_fetch": found["sources"][0]["last_fetch"], "ok": True}]
    assert found["runs"]["daemon_send"] is None and found["runs"]["manual_send"].endswith("1 sent")


def test_sources_marks_an_error_as_old_once_a_later_fetch_succeeded(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    with Store(tmp_path / "newsletter.db") as store:
        store.source_failed("hf", "HTTP 503 from the server", now=datetime(2026, 11, 30, 6, 0, tzinfo=UTC))
    failing = newsletter("sources", cwd=tmp_path).stdout
    assert "hf (hf_daily): FAILING (1 in a row)" in failing and "    last error 2026-11-30 06:00 UTC: HTTP 503 from the server" in failing

    assert newsletter("fetch", cwd=tmp_path).returncode == 0
    recovered = newsletter("sources", cwd=tmp_path).stdout
    assert "hf (hf_daily): ok" in recovered and "last error" not in recovered
    assert re.search(rf"    an old error, recovered since \(fetched fine at {TIME}\): 2026-11-30 06:00 UTC: HTTP 503 from the server", recovered)

    (entry,) = json.loads(newsletter("sources", "--json", cwd=tmp_path).stdout)
    assert entry["state"] == "ok" and entry["last_error_recovered"] is True and entry["papers_seen"] == 30
    assert set(entry) == {
        "name",
        "type",
        "state",
        "consecutive_failures",
        "last_attempt",
        "last_success",
        "papers_seen",
        "last_warning",
        "last_error",
        "last_error_at",
        "last_error_recovered",
    }


def test_status_counts_in_sql_without_reading_the_ledger(tmp_path: Path) -> None:
    """The counts come from GROUP BY: a ledger of many rows lists only the newest unfinished ones."""
    layout = Layout(date(2026, 11, 30), ())
    with Store(tmp_path / "s.db") as store:
        for i in range(60):
            store.plan_delivery(f"send-{i:03}", "ada@example.org", layout)
            store.mark_failed(f"send-{i:03}", "ada@example.org", "550", hard=False, pause_after=3)
        counts = store.delivery_counts()
        newest = store.latest_deliveries(("failed",), 3)
    assert counts.by_status == {"failed": 60} and counts.resent == 0
    assert [d.edition for d in newest] == ["send-059", "send-058", "send-057"]


def test_status_on_a_long_list_counts_the_next_sends_per_slot_and_json_still_names_each_reader(tmp_path: Path) -> None:
    """More readers than status lists one by one: a line per slot (how many, of which frequencies, how many held), the
    readers who paused themselves named up to the limit; `--json` keeps a row per reader."""
    readers = [reader(f"r{i}@example.org", timezone="UTC") for i in range(40)] + [reader(f"t{i}@example.org", timezone="Asia/Tokyo") for i in range(15)]
    readers += [reader(f"p{i}@example.org", paused="true") for i in range(55)]
    (tmp_path / "subscribers.yaml").write_text(CONFIG + "".join(readers), encoding="utf-8")
    with Store(tmp_path / "newsletter.db") as store:
        store.plan_delivery("send-2026-11-30", "r3@example.org", Layout(date(2026, 11, 30), ()))
        store.mark_failed("send-2026-11-30", "r3@example.org", "550 no such user", hard=True, pause_after=1)
    out = newsletter("status", cwd=tmp_path).stdout
    assert "Next sends: 110 readers on 2 slots (`status --json` lists each reader):" in out, out
    slots = re.findall(rf"\n  ({TIME}): (\d+) readers \(([^)]*)\)(.*)", out)
    assert sorted((int(n), kinds, held) for _, n, kinds, held in slots) == [(15, "15 daily", ""), (40, "40 daily", "; 1 held: paused after hard failures")]
    assert "  55 readers paused by their own choice" in out
    assert "r3@example.org" not in out.split("Next sends:")[1], "no line per reader"
    assert "p0@example.org, p1@example.org" in out and "and 5 more (status --json lists each)" in out
    found = json.loads(newsletter("status", "--json", cwd=tmp_path).stdout)
    assert len(found["next_sends"]) == 110


# subscribe's options and the subscribers list


def test_subscribe_takes_a_name_time_zone_send_time_and_keywords_and_subscribers_shows_them(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    added = newsletter(
        "subscribe",
        "bob@example.org",
        "--confirmed",
        "--name",
        "Bob Ross",
        "--timezone",
        "America/Los_Angeles",
        "--send-at",
        "7:15",
        "--keywords",
        "speech recognition, ASR",
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    text = (tmp_path / "subscribers.yaml").read_text(encoding="utf-8")
    assert 'send_at: "07:15"' in text and "timezone: America/Los_Angeles" in text and "name: Bob Ross" in text
    listed = newsletter("subscribers", cwd=tmp_path).stdout
    assert "Bob Ross <bob@example.org>: speech; keywords: speech recognition, ASR; daily at 07:15 America/Los_Angeles" in listed
    assert "\nada@example.org: speech" in "\n" + listed, "a reader without a name is listed by address"
    ada, bob = json.loads(newsletter("subscribers", "--json", cwd=tmp_path).stdout)
    assert bob == {
        "email": "bob@example.org",
        "name": "Bob Ross",
        "topics": ["speech"],
        "keywords": ["speech recognition", "ASR"],
        "frequency": "daily",
        "day": "monday",
        "send_at": "07:15",
        "timezone": "America/Los_Angeles",
        "paused": False,
    }
    assert ada["name"] == "" and ada["timezone"] == "UTC"


def test_subscribe_refuses_a_misspelt_zone_a_bad_time_or_keyword_naming_it_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "subscribers.yaml").write_text(CONFIG + reader("ada@example.org"), encoding="utf-8")
    before = (tmp_path / "subscribers.yaml").read_text(encoding="utf-8")
    for option, value, said in (
        ("--timezone", "America/Los_Angles", "error: unknown timezone 'America/Los_Angles' (did you mean 'America/Los_Angeles'?)"),
        ("--send-at", "25:00", "error: The send time '25:00' should look like 07:30 (24-hour)."),
        ("--keywords", "speech, /a+b/", "error: The keyword '/a+b/' cannot be used:"),
    ):
        refused = newsletter("subscribe", "bob@example.org", "--confirmed", option, value, cwd=tmp_path)
        assert refused.returncode == 1 and refused.stderr.startswith(said), refused.stderr
    assert (tmp_path / "subscribers.yaml").read_text(encoding="utf-8") == before


# the daemon's reloads


@pytest.mark.slow
def test_the_daemon_logs_a_config_warning_once_not_again_at_each_reload(tmp_path: Path) -> None:
    config = tmp_path / "subscribers.yaml"
    text = CONFIG.replace("    min_score: 20\n", '    min_score: 20\n    any: ["speech, ASR"]\n') + reader("ada@example.org", timezone="UTC")
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "run.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "NEWSLETTER_"))}

    def wait_for(needle: str, count: int) -> None:
        deadline = time.monotonic() + 30
        while log.read_text().count(needle) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.read_text().count(needle) >= count, log.read_text()

    with log.open("w") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "run", "--tick", "0.2", "--dry-run"], cwd=tmp_path, env=clean, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            wait_for("newsletter run", 1)
            for n, address in enumerate(("bob@example.org", "cy@example.org"), start=1):
                text += reader(address, timezone="UTC")
                config.write_text(text, encoding="utf-8")  # another edit: the warning's line is the same, its text too
                wait_for("reloaded ", n)
            config.write_text(text.replace('"speech, ASR"', '"speech, ASR", "TTS, voice"'), encoding="utf-8")
            wait_for("reloaded ", 3)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
    logged = log.read_text()
    assert logged.count("the keyword 'speech, ASR' holds a comma") == 1, logged
    assert logged.count("the keyword 'TTS, voice' holds a comma") == 1, "a new warning is logged when the edit brings it"
