"""Delivery through the ledger against a real SMTP server: never twice, never lost, whatever the server or a crash does."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.dkimverifiers import DkimKey
from support.smtpserver import RefusingSMTPServer, Sink, SMTPServer, drop_once, free_port, greylisting

from newsletter.cli import cli
from newsletter.mail import pool as pool_module
from newsletter.pipeline.courier import SERVER_DOWN_AFTER
from newsletter.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
FEED = ROOT / "samples" / "feeds" / "personal-news-feed__daily_papers_2026-07-31.json"

CONFIG = f"""\
sources:
  - name: hf
    type: hf_daily
    url: {FEED}
topics:
  trending:
    title: Trending
    sources: [hf]
    min_score: 20
subscribers:
"""


@dataclass
class World:
    """A config of `n` readers, a ledger file and a local SMTP server, driven through the CLI."""

    folder: Path
    server: SMTPServer
    env: dict[str, str]
    emails: list[str]

    @property
    def command(self) -> list[str]:
        """`newsletter send` as its own process, for tests that signal or kill it."""
        return [sys.executable, "-m", "newsletter", "--config", str(self.folder / "subscribers.yaml"), "send"]

    def send(self, **extra: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.folder / "subscribers.yaml"), "send"], env={**self.env, **extra}, catch_exceptions=False)

    def status(self) -> str:
        return CliRunner().invoke(cli, ["--config", str(self.folder / "subscribers.yaml"), "status"], env=self.env, catch_exceptions=False).output

    def arrivals(self) -> Counter[str]:
        return Counter(self.server.sink.recipients())

    def rows(self) -> dict[str, sqlite3.Row]:
        """The latest ledger row per reader."""
        with Store(self.folder / "state.db") as store:
            return {r.subscriber: r for r in store.deliveries()}


def make_world(folder: Path, server: SMTPServer, n: int) -> World:
    emails = [f"reader{i:04d}@example.org" for i in range(n)]
    (folder / "subscribers.yaml").write_text(CONFIG + "".join(f"  - email: {e}\n    topics: [trending]\n" for e in emails), encoding="utf-8")
    env = {
        **server.env(),
        "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
        "NEWSLETTER_SECRET_KEY": "test-secret",
        "NEWSLETTER_DB": str(folder / "state.db"),
        "SMTP_CONNECTIONS": "3",
        "SMTP_RETRY_DELAY": "0.05",
    }
    return World(folder, server, env, emails)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    with SMTPServer() as server:
        yield make_world(tmp_path, server, 12)


def refuse(sink: Sink, who: set[str], reply: str) -> None:
    sink.reply = lambda rcpt: reply if rcpt in who else None


def test_every_reader_gets_one_digest_over_a_pool_of_connections(world: World) -> None:
    result = world.send()
    assert result.exit_code == 0, result.output
    assert world.arrivals() == Counter(world.emails)
    assert {r.status for r in world.rows().values()} == {"sent"}
    assert world.send().exit_code == 0 and world.arrivals() == Counter(world.emails), "a second run sends nothing"


def test_451_readers_are_retried_in_the_run_then_deferred_and_arrive_next_run(world: World) -> None:
    later = {"reader0003@example.org", "reader0007@example.org"}
    refuse(world.server.sink, later, "451 4.7.1 greylisted, try later")
    result = world.send()
    assert result.exit_code == 2
    assert world.arrivals() == Counter(e for e in world.emails if e not in later), "everyone else once"
    rows = world.rows()
    for email in later:
        assert (rows[email].status, rows[email].attempts) == ("deferred", 3), "first try plus two backed-off retries"
        assert rows[email].last_reply.startswith("451 4.7.1")
        assert f"deferred {email}" in result.output
    assert "2 deferred" in world.status()

    world.server.sink.reply = lambda rcpt: None
    assert world.send().exit_code == 0
    assert world.arrivals() == Counter(world.emails)
    assert world.send().exit_code == 0
    assert world.arrivals() == Counter(world.emails)


def test_a_deferred_row_of_someone_who_left_is_closed_not_kept_pending(world: World) -> None:
    gone = "reader0004@example.org"
    refuse(world.server.sink, {gone}, "451 4.7.1 greylisted, try later")
    assert world.send().exit_code == 2 and world.rows()[gone].status == "deferred"
    config = world.folder / "subscribers.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace(f"  - email: {gone}\n    topics: [trending]\n", ""), encoding="utf-8")
    world.server.sink.reply = lambda rcpt: None
    assert world.send().exit_code == 0
    row = world.rows()[gone]
    assert (row.status, row.last_reply) == ("failed", "no longer subscribed")
    assert gone not in world.arrivals() and "deferred" not in world.status().split("\n", 1)[1]  # below the database's path, which names this test


def test_a_451_that_never_ends_fails_after_the_attempt_limit(world: World) -> None:
    refuse(world.server.sink, {"reader0001@example.org"}, "451 4.3.0 busy")
    result = world.send(SMTP_MAX_ATTEMPTS="2")
    assert result.exit_code == 2
    row = world.rows()["reader0001@example.org"]
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.last_reply == "gave up after 2 attempts: 451 4.3.0 busy"


def test_550_fails_one_row_with_the_reply_and_exits_2_while_everyone_else_is_mailed(world: World) -> None:
    refuse(world.server.sink, {"reader0005@example.org"}, "550 5.1.1 no such user")
    result = world.send()
    assert result.exit_code == 2
    assert world.arrivals() == Counter(e for e in world.emails if e != "reader0005@example.org")
    row = world.rows()["reader0005@example.org"]
    assert (row.status, row.attempts, row.last_reply) == ("failed", 1, "550 5.1.1 no such user"), "no retry after a 5xx"
    assert "failed   reader0005@example.org" in result.output
    assert "failed reader0005@example.org" in world.status().replace("  ", " ").replace("  ", " ")


def test_consecutive_hard_refusals_pause_the_reader_and_status_says_so(world: World) -> None:
    bad = "reader0002@example.org"
    refuse(world.server.sink, {bad}, "550 5.1.1 no such user")
    env = {"NEWSLETTER_PAUSE_AFTER_FAILURES": "2"}
    assert world.send(**env).exit_code == 2
    assert "Paused after hard failures (mail refused or bounced): 0" in world.status()
    second = world.send(**env)
    assert second.exit_code == 2, "the papers were never delivered, so the next run tries again"
    assert "subscriber paused after 2 hard refusals in a row" in second.output
    status = world.status()
    assert "Paused after hard failures (mail refused or bounced): 1" in status and f"paused   {bad}" in status and "550 5.1.1" in status
    world.server.sink.reply = lambda rcpt: None
    third = world.send(**env)
    assert third.exit_code == 0 and f"paused   {bad}" in third.output
    assert world.arrivals()[bad] == 0, "a paused reader is not mailed"
    resumed = CliRunner().invoke(cli, ["--config", str(world.folder / "subscribers.yaml"), "status", "--resume", bad], env=world.env)
    assert resumed.exit_code == 0 and "Paused after hard failures (mail refused or bounced): 0" in resumed.output
    assert world.send(**env).exit_code == 0
    assert world.arrivals()[bad] == 1


def test_a_server_that_drops_the_connection_every_k_messages_still_gets_everyone_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SMTPServer(Sink(drop_every=4)) as server:
        world = make_world(tmp_path, server, 30)
        result = world.send()
        assert result.exit_code == 0, result.output
        assert world.arrivals() == Counter(world.emails)
        assert world.send().exit_code == 0 and world.arrivals() == Counter(world.emails)


def test_a_connection_dropped_after_the_final_dot_is_counted_uncertain_sent_once_more_then_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    once = {"reader0003@example.org", "reader0007@example.org"}
    always = "reader0005@example.org"
    with SMTPServer() as server:
        dropped_once = drop_once(once)
        server.sink.drop_after_data = lambda rcpt: rcpt == always or dropped_once(rcpt)
        world = make_world(tmp_path, server, 12)
        result = world.send()
        arrivals = world.arrivals()
        duplicates = sum(n - 1 for n in arrivals.values())
        print(
            f"12 readers, 2 dropped after the dot once, 1 always: {duplicates} duplicates, {sum(r.uncertain for r in world.rows().values())} counted uncertain"
        )
        assert result.exit_code == 2, result.output
        assert arrivals == Counter({e: 2 if e in once | {always} else 1 for e in world.emails}), "the server had each dropped message"
        rows = world.rows()
        for email in once:
            assert (rows[email].status, rows[email].uncertain) == ("sent", 1)
        assert (rows[always].status, rows[always].uncertain) == ("failed", 2)
        assert "not sent again (the reader may have it)" in result.output
        status = world.status()
        assert "3 interrupted earlier and sent again (a reader may have two copies); 1 of them given up after 2" in status
        assert f"failed   {always} ({rows[always].edition}, 2 attempts, uncertain 2 times)" in status
        for email in once:
            assert f"uncertain {email}" in status
        server.sink.drop_after_data = lambda rcpt: False
        again = world.send()
        assert again.exit_code == 0 and "nothing new for anyone" in again.output, "its papers count as offered: no new edition repeats them"
        assert world.arrivals() == arrivals


def test_a_connection_dropped_before_data_is_an_ordinary_retry_not_uncertain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SMTPServer(Sink(drop_every=2)) as server:
        world = make_world(tmp_path, server, 12)
        assert world.send().exit_code == 0
        assert world.arrivals() == Counter(world.emails)
        assert {(r.status, r.uncertain) for r in world.rows().values()} == {("sent", 0)}


def test_a_session_refused_for_good_stops_the_run_without_burning_attempts(world: World) -> None:
    result = world.send(SMTP_SECURITY="starttls")  # the test server offers no STARTTLS: never fall back to plaintext
    assert result.exit_code == 2
    assert "does not offer STARTTLS" in result.output
    assert world.arrivals() == Counter()
    assert all(r.attempts == 0 and r.status in ("pending", "deferred") for r in world.rows().values())
    assert world.send().exit_code == 0
    assert world.arrivals() == Counter(world.emails)


@pytest.mark.timeout(60)  # the hang guard (#15)
def test_a_connection_that_cannot_be_set_up_ends_the_send_with_an_error_not_a_hang(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past a send's first messages, each SMTP connection runs in a process of its own: when none can start (here
    the interpreter is gone), every claimed row is answered with a server error, which counts against no reader."""
    with monkeypatch.context() as patch:
        patch.setattr(pool_module, "RAMP", 0)  # processes from the first message
        patch.setattr("sys.executable", str(world.folder / "no-such-python"))
        result = world.send()
    assert result.exit_code == 2
    assert "cannot set up the connection: cannot start a sending process" in result.output and "no-such-python" in result.output
    assert world.arrivals() == Counter()
    assert all(r.attempts == 0 and r.status in ("pending", "deferred") for r in world.rows().values()), "nothing counted against readers"
    assert world.send().exit_code == 0
    assert world.arrivals() == Counter(world.emails)


def test_an_unreachable_server_uses_up_no_attempts_and_the_next_run_delivers(world: World) -> None:
    result = world.send(SMTP_PORT=str(free_port()))
    assert result.exit_code == 2
    assert "cannot connect" in result.output
    assert all(r.attempts == 0 and r.status in ("pending", "deferred") for r in world.rows().values()), "nothing counted against readers"
    assert world.send().exit_code == 0
    assert world.arrivals() == Counter(world.emails)


def test_a_server_refusing_every_session_stops_the_run_after_server_down_after_in_a_row(world: World) -> None:
    world = make_world(world.folder, world.server, 80)  # far more readers than refusals it takes to stop
    with RefusingSMTPServer() as refusing:
        result = world.send(SMTP_PORT=str(refusing.port))
    assert result.exit_code == 2
    assert f"the server kept refusing the session ({SERVER_DOWN_AFTER} times in a row)" in result.output
    assert "421" in result.output
    connections = int(world.env["SMTP_CONNECTIONS"])
    # without the stop every reader would be tried 1 + RETRIES_IN_RUN times: 240 sessions
    assert SERVER_DOWN_AFTER <= refusing.count() <= SERVER_DOWN_AFTER + connections, "no row claimed once the run stopped"
    rows = world.rows()
    assert all(r.attempts == 0 and r.status in ("pending", "deferred") for r in rows.values()), "nothing counted against readers"
    assert result.output.count("sent ") == 0 and world.arrivals() == Counter()
    assert world.send().exit_code == 0, "the rest waits for the next run"
    assert world.arrivals() == Counter(world.emails)


def test_the_outbox_goes_through_the_same_ledger(world: World) -> None:
    env = {k: "" for k in ("SMTP_HOST", "SMTP_PORT", "SMTP_SECURITY")} | {"NEWSLETTER_OUTBOX": str(world.folder / "out")}
    assert world.send(**env).exit_code == 0
    assert len(list((world.folder / "out").glob("*.eml"))) == 12
    assert {r.status for r in world.rows().values()} == {"sent"}
    assert world.send(**env).exit_code == 0
    assert len(list((world.folder / "out").glob("*.eml"))) == 12


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nobody_and_duplicates_only_uncertain_rows(tmp_path: Path) -> None:
    with SMTPServer() as server:
        world = make_world(tmp_path, server, 500)
        env = {**os.environ, **world.env, "SMTP_CONNECTIONS": "4"}
        command = world.command
        rng = random.Random(6)
        kills = [("seconds", rng.uniform(0.05, 0.6))] + [("arrivals", n) for n in sorted(rng.sample(range(10, 490), 4))]
        killed_running = 0
        for kind, moment in kills:
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started = time.monotonic()
            while proc.poll() is None and (time.monotonic() - started < moment if kind == "seconds" else server.sink.count() < moment):
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed_running += 1
            proc.wait()
        assert killed_running >= 4, "the kills hit running sends"
        with Store(tmp_path / "state.db") as store:
            in_flight = [r.subscriber for r in store.deliveries(["sending"])]
        status = CliRunner().invoke(cli, ["--config", str(tmp_path / "subscribers.yaml"), "status"], env=world.env).output
        assert sorted(line.split()[1] for line in status.splitlines() if line.startswith("  sending  ")) == sorted(in_flight), (
            "status names every uncertain row"
        )
        assert f"Uncertain: {len(in_flight)} left in `sending` now" in status
        final = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stdout + final.stderr
        again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "nothing new for anyone" in again.stdout

        arrivals = world.arrivals()
        with Store(tmp_path / "state.db") as store:
            rows = store.deliveries()
        uncertain = sum(r.uncertain for r in rows)
        losses = [e for e in world.emails if arrivals[e] == 0]
        duplicates = sum(n - 1 for n in arrivals.values() if n > 1)
        print(f"500 readers, {len(kills)} kills: {sum(arrivals.values())} messages, {len(losses)} lost, {duplicates} duplicates, {uncertain} uncertain rows")
        assert losses == []
        assert set(arrivals) == set(world.emails)
        assert duplicates <= uncertain
        resent = sum(1 for r in rows if r.uncertain)
        assert f"0 left in `sending` now (the server may have them; the next run sends each once more); {resent} interrupted earlier" in world.status()
        assert {r.status for r in rows} == {"sent"} and len({r.subscriber for r in rows}) == 500


@pytest.mark.slow
def test_sigkill_in_the_retry_phase_leaves_no_more_rows_uncertain_than_connections(tmp_path: Path) -> None:
    connections = 4
    kills = (40, 140, 240)  # messages accepted in all when each run is killed
    with SMTPServer() as server:
        world = make_world(tmp_path, server, 300)
        env = {**os.environ, **world.env, "SMTP_CONNECTIONS": str(connections), "SMTP_MAX_ATTEMPTS": "10"}
        command = world.command
        left_sending = []
        for kill_at in kills:
            server.sink.reply = greylisting()  # a fresh greylist refuses every first try, so each run mails everyone from its retry phase
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while proc.poll() is None and server.sink.count() < kill_at:
                time.sleep(0.002)
            assert proc.poll() is None, "the kill hits a running send"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            with Store(tmp_path / "state.db") as store:
                left_sending.append(len(store.deliveries(["sending"])))
        server.sink.reply = greylisting()
        final = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stdout + final.stderr

        arrivals = world.arrivals()
        with Store(tmp_path / "state.db") as store:
            rows = store.deliveries()
        uncertain = sum(r.uncertain for r in rows)
        duplicates = sum(n - 1 for n in arrivals.values() if n > 1)
        print(f"300 greylisted readers, kills at {kills} arrivals: {left_sending} rows left in `sending`, {duplicates} duplicates, {uncertain} uncertain")
        assert max(left_sending) <= connections, "every answer that came back is recorded before more rows are claimed"
        assert [e for e in world.emails if arrivals[e] == 0] == [], "nobody lost"
        assert duplicates <= uncertain == sum(left_sending), "only a row left in `sending` can reach a reader twice"
        assert {r.status for r in rows} == {"sent"}


@pytest.mark.slow
def test_sigterm_stops_a_send_after_the_messages_in_flight_and_the_next_send_finishes_it(tmp_path: Path) -> None:
    """systemd, `timeout` and container stops send SIGTERM: the send records what is in flight and exits 5; nothing is lost or doubled."""
    with SMTPServer() as server:
        world = make_world(tmp_path, server, 300)
        env = {**os.environ, **world.env, "SMTP_CONNECTIONS": "4"}
        command = world.command
        for moment in (40, 140, 240):
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while proc.poll() is None and server.sink.count() < moment:
                time.sleep(0.002)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 5, err
            assert "Stopped by a signal after the messages in flight" in err
            with Store(tmp_path / "state.db") as store:
                assert store.deliveries(["sending"]) == [], "every message in flight was recorded before the exit"
            assert max(world.arrivals().values()) == 1
        final = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stdout + final.stderr
        assert world.arrivals() == Counter(world.emails), "everyone exactly once"
        with Store(tmp_path / "state.db") as store:
            assert sum(r.uncertain for r in store.deliveries()) == 0, "a clean stop leaves nothing uncertain"


@pytest.mark.slow
def test_a_crash_loop_on_one_row_mails_that_reader_at_most_twice(tmp_path: Path) -> None:
    """SIGKILL the moment the reader's message reaches the server, run after run: the row is sent once more, then failed,
    and its papers stay offered, so no new edition mails them a third time; `status` names the row."""
    with SMTPServer() as server:
        world = make_world(tmp_path, server, 1)
        env = {**os.environ, **world.env}
        command = world.command
        codes = []
        for _ in range(4):
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            server.sink.on_data = lambda msg, proc=proc: proc.send_signal(signal.SIGKILL)  # before the server's 250 goes out
            codes.append(proc.wait(timeout=60))
        server.sink.on_data = None
        final = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        arrivals = world.arrivals()
        print(f"1 reader killed on each arrival, 4 runs: exit codes {codes}, then {final.returncode}; {arrivals[world.emails[0]]} copies")
        assert codes[:2] == [-signal.SIGKILL, -signal.SIGKILL], "the first two runs were killed on the reader's arrival"
        assert arrivals[world.emails[0]] <= 2
        assert final.returncode == 0 and "nothing new for anyone" in final.stdout, final.stdout + final.stderr
        [row] = world.rows().values()
        assert (row.status, row.uncertain) == ("failed", 2)
        status = world.status()
        assert f"failed   {world.emails[0]} ({row.edition}, 2 attempts, uncertain 2 times): interrupted while sending 2 times" in status
        assert "1 of them given up after 2" in status


def _send_process(world: World, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(world.command, cwd=world.folder, env={**os.environ, **world.env, **extra}, capture_output=True, text=True, timeout=120)


def test_a_corrupt_state_database_is_one_line_and_exit_6_with_nothing_sent(world: World) -> None:
    (world.folder / "state.db").write_bytes(b"not an SQLite file, whatever it once was\n" * 200)
    result = _send_process(world)
    assert result.returncode == 6, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: the state database {world.folder / 'state.db'} failed: file is not a database")
    assert "restore a backup" in line and line.endswith("nothing was sent")
    assert world.arrivals() == Counter()
    status = CliRunner().invoke(cli, ["--config", str(world.folder / "subscribers.yaml"), "status"], env=world.env)
    assert status.exit_code == 6 and status.output.count("\n") == 1 and "Traceback" not in status.output


def test_a_database_locked_longer_than_the_timeout_mid_send_is_one_line_exit_7_and_the_rerun_sends_the_rest(world: World) -> None:
    """Another process holds BEGIN EXCLUSIVE past NEWSLETTER_DB_TIMEOUT while the sixth reader's message is at the server:
    the send stops with one line naming how many were sent and recorded; the next send delivers the rest, each once."""
    locker: list[sqlite3.Connection] = []
    held_at = world.emails[5]

    def lock_then_refuse(rcpt: str) -> str | None:
        if rcpt == held_at and not locker:
            db = sqlite3.connect(world.folder / "state.db", timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("BEGIN EXCLUSIVE")
            locker.append(db)
            return "451 4.3.0 try again later"  # the server keeps nothing, so the unrecorded answer loses nothing
        return None

    world.server.sink.reply = lock_then_refuse
    started = time.monotonic()
    result = _send_process(world, SMTP_CONNECTIONS="1", NEWSLETTER_DB_TIMEOUT="0.5")
    elapsed = time.monotonic() - started
    try:
        assert result.returncode == 7, result.stdout + result.stderr
        [line] = result.stderr.splitlines()
        assert "database is locked" in line and "held it locked for more than 0.5 s (NEWSLETTER_DB_TIMEOUT)" in line
        assert "5 digests were sent and recorded before it" in line and "the next `newsletter send` goes on from there" in line
        assert world.arrivals() == Counter(world.emails[:5])
        assert elapsed < 30, "the send gave up after its timeout instead of waiting 30 s per answer"
    finally:
        for db in locker:
            db.execute("ROLLBACK")
            db.close()
    world.server.sink.reply = lambda rcpt: None
    rerun = _send_process(world)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert world.arrivals() == Counter(world.emails), "the rest, each once"
    assert {r.status for r in world.rows().values()} == {"sent"}


@pytest.mark.slow
def test_chaos_sigkill_at_random_moments_against_refusing_and_dropping_servers_loses_nobody(tmp_path: Path) -> None:
    """SIGKILL at random moments (one surely in the in-run retry phase) while the server answers 421/451/452 to some
    recipients, 550/554 to a few, and hangs up after the final dot for some: nobody lost, every duplicate counted."""
    connections, n = 4, 300
    rng = random.Random(16)
    with SMTPServer() as server:
        world = make_world(tmp_path, server, n)
        hard = {e: rng.choice(["550 5.1.1 no such user", "554 5.7.1 rejected"]) for e in rng.sample(world.emails, 10)}
        flaky = {
            e: (rng.choice(["421 4.3.2 closing", "451 4.7.1 greylisted", "452 4.2.2 mailbox full"]), rng.randint(1, 2)) for e in rng.sample(world.emails, 75)
        }
        dropped = set(rng.sample([e for e in world.emails if e not in hard], 15))
        refused: Counter[str] = Counter()

        def answer(rcpt: str, everyone: bool = False) -> str | None:
            if rcpt in hard:
                return hard[rcpt]
            reply, times = flaky.get(rcpt, ("451 4.7.1 greylisted", 1) if everyone else (None, 0))
            if reply is not None and refused[rcpt] < times:  # refused the first `times` tries of each run, then accepted
                refused[rcpt] += 1
                return reply
            return None

        server.sink.drop_after_data = drop_once(dropped)
        env = {**os.environ, **world.env, "SMTP_CONNECTIONS": str(connections), "SMTP_MAX_ATTEMPTS": "30"}
        command = world.command
        kills = [("seconds", rng.uniform(0.3, 1.0)), ("retry phase", 60)] + [("arrivals", k) for k in rng.sample(range(20, 200), 3)]
        interruptions = 0
        started_all = time.monotonic()
        for kind, moment in kills:
            refused.clear()  # a fresh greylist each run, so every run has rows in its retry phase
            everyone = kind == "retry phase"  # this run refuses every first try: all its arrivals come from retries
            server.sink.reply = lambda rcpt, everyone=everyone: answer(rcpt, everyone)
            before = server.sink.count()
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started = time.monotonic()
            while proc.poll() is None and (time.monotonic() - started < moment if kind == "seconds" else server.sink.count() - before < moment):
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                interruptions += 1
            proc.wait()
        assert interruptions >= 4, "the kills hit running sends"
        refused.clear()
        server.sink.reply = answer
        final = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode in (0, 2) and not final.stderr, final.stdout + final.stderr  # 2 while hard-refused readers are not yet paused
        elapsed = time.monotonic() - started_all

        arrivals = world.arrivals()
        with Store(tmp_path / "state.db") as store:
            rows = store.deliveries()
        uncertain = {r.subscriber: r for r in rows if r.uncertain}
        duplicates = {e: k - 1 for e, k in arrivals.items() if k > 1}
        drops = sum(1 for e in dropped if arrivals[e])
        print(
            f"{n} readers, {interruptions} SIGKILLs, {drops} dropped after the dot: {sum(arrivals.values())} messages, "
            f"{sum(duplicates.values())} duplicates to {len(duplicates)} readers, {sum(r.uncertain for r in rows)} uncertain counts "
            f"on {len(uncertain)} rows ({sum(1 for r in uncertain.values() if r.status == 'failed')} given up), {elapsed:.1f} s"
        )
        assert [e for e in world.emails if e not in hard and arrivals[e] == 0] == [], "nobody lost"
        assert all(arrivals[e] == 0 for e in hard)
        assert sum(duplicates.values()) <= 2 * connections * interruptions + drops
        assert sum(duplicates.values()) <= sum(r.uncertain for r in rows)
        status = world.status()
        for email, extra in duplicates.items():
            row = uncertain[email]
            assert extra <= row.uncertain, f"{email}: every copy beyond the first is counted"
            assert f"uncertain {email}" in status or f"failed   {email} ({row.edition}, {row.attempts} attempts, uncertain {row.uncertain} times)" in status
        assert f"{len(uncertain)} interrupted earlier and sent again" in status
        assert {r.status for r in rows if r.subscriber not in hard} <= {"sent", "failed"}
        assert all(r.uncertain for r in rows if r.status == "failed" and r.subscriber not in hard), "only hard refusals and given-up rows fail"


def test_with_dkim_set_every_digest_of_a_send_arrives_signed_by_the_pool_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    key = DkimKey.make(tmp_path)
    with SMTPServer(Sink(raw=True)) as server:
        world = make_world(tmp_path, server, 5)
        result = world.send(**key.settings)
    assert result.exit_code == 0, result.output
    received = server.sink.received
    assert len(received) == 5 and all(data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.org;") for data in received)
    assert key.verdicts(*received) == [{"opendkim": True, "mail-dkim": True, "dkimpy": True}] * 5
