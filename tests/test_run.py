"""`newsletter run` as a real process: a scheduled digest arrives, SIGTERM stops it, a restart catches up once, a YAML edit adds a reader.

The daemon's clock is started a few seconds before a slot with `--clock` (it then runs at normal speed) and polls
every half second with `--tick`, so the schedule is exercised without waiting for wall-clock minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer, Reply
from support.smtpserver import SMTPServer

from newsletter.cli import cli
from newsletter.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures"

CONFIG = """\
settings:
  allow_private_network: true
sources:
  - name: cs
    type: arxiv_rss
    url: {url}
topics:
  everything:
    title: Everything from arXiv
    sources: [cs]
subscribers:
  - email: ada@example.org
    topics: [everything]
    send_at: "07:30"
    timezone: Europe/London
"""

BOB = """\
  - email: bob@example.org
    topics: [everything]
    send_at: "07:32"
    timezone: Europe/London
"""


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start(tmp_path: Path, env: dict[str, str], clock: str, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "newsletter", "--config", str(tmp_path / "subscribers.yaml"), "run", "--tick", "0.5", "--clock", clock]
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM: the daemon's own handler stops it (it says so) and it exits 0; the wait is only a hang guard."""
    before = len(log.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    since = log.read_text()[before:]
    assert "WARNING SIGTERM: stopping after the message in flight\n" in since, "its handler stopped it"
    assert since.rstrip().endswith("INFO newsletter run: stopped"), "and it finished what it had in hand first"


@pytest.mark.slow
def test_daemon_sends_on_schedule_stops_cleanly_catches_up_once_and_reloads_subscribers(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with LocalHTTPServer() as feeds, SMTPServer() as smtp:
        feeds.route("/cs.xml", Reply(body=(FIXTURES / "arxiv_rss/distill__arxiv_cs_ai.xml").read_bytes(), headers={"Content-Type": "application/rss+xml"}))
        config = tmp_path / "subscribers.yaml"
        config.write_text(CONFIG.format(url=feeds.url("/cs.xml")), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "NEWSLETTER_"))}
        env |= smtp.env() | {
            "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
            "NEWSLETTER_SECRET_KEY": "test",
            "NEWSLETTER_DB": str(tmp_path / "state.db"),
        }

        # Wednesday 07:29:57 in London: Ada's 07:30 digest goes out three seconds later.
        daemon = start(tmp_path, env, "2026-11-25T07:29:57Z", log)
        try:
            wait_for(lambda: len(smtp.messages) == 1, 20, "the scheduled digest")
        finally:
            stop(daemon, log)
        assert smtp.sink.to("ada@example.org")
        with Store(tmp_path / "state.db") as store:
            assert [(r.edition, r.status) for r in store.deliveries()] == [("slot-2026-11-25T07:30Z", "sent")]

        # Down for three days while new papers appeared; restarted on Saturday at 07:31:57.
        feeds.route("/cs.xml", Reply(body=(FIXTURES / "arxiv_rss/distill__arxiv_cs_cl.xml").read_bytes(), headers={"Content-Type": "application/rss+xml"}))
        daemon = start(tmp_path, env, "2026-11-28T07:31:57Z", log)
        try:
            wait_for(lambda: len(smtp.messages) == 2, 20, "the catch-up digest")
            config.write_text("subscribers: [oops\n", encoding="utf-8")  # an invalid edit is refused...
            wait_for(lambda: "keeping the last good config" in log.read_text(), 10, "the invalid edit to be reported")
            config.write_text(CONFIG.format(url=feeds.url("/cs.xml")) + BOB, encoding="utf-8")  # ...a valid one is taken
            wait_for(lambda: bool(smtp.sink.to("bob@example.org")), 15, "the new subscriber's digest")
            time.sleep(1.5)  # further ticks must not send anything more
        finally:
            stop(daemon, log)

    assert len(smtp.sink.to("ada@example.org")) == 2, "three missed days give one catch-up, not a burst"
    assert len(smtp.sink.to("bob@example.org")) == 1
    with Store(tmp_path / "state.db") as store:
        editions = {(r.subscriber, r.edition) for r in store.deliveries()}
    assert ("ada@example.org", "slot-2026-11-28T07:30Z") in editions and ("bob@example.org", "slot-2026-11-28T07:32Z") in editions
    text = log.read_text()
    assert "subscribers.yaml:2:1: invalid YAML" in text, "the refused edit is logged with file and line"
    assert "send slot-2026-11-25T07:30Z: 1 due, 1 digest, 1 sent, 0 deferred, 0 failed" in text
    assert "fetch: 1 source, " in text and "SIGTERM" in text
    status = CliRunner().invoke(cli, ["--config", str(tmp_path / "subscribers.yaml"), "status"], env=env, catch_exceptions=False)
    assert status.exit_code == 0, status.output
    assert "bob@example.org [daily]: " in status.output and "last slot 2026-11-28 07:32 UTC: sent" in status.output
    assert "Daemon (`newsletter run`): last fetch run " in status.output and "; last send run 2026-" in status.output and "\n  cs: " in status.output
