"""Several senders sharing one edition: `newsletter send` processes on PostgreSQL, and one send spread over worker
processes (`--workers N`) on an SQLite file or PostgreSQL: every reader mailed once, a killed one loses nobody."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from support.postgres import PostgresServer
from support.smtpserver import SMTPServer
from test_delivery import World, make_world

READERS = 200


def _world(tmp_path: Path, server: SMTPServer, postgres_server: PostgresServer) -> tuple[World, dict[str, str]]:
    world = make_world(tmp_path, server, READERS)
    world.env["NEWSLETTER_DB"] = postgres_server.database()
    world.env["SMTP_CONNECTIONS"] = "2"
    return world, {**os.environ, **world.env}


def _start(world: World, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(world.command, cwd=world.folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _senders(url: str) -> Counter[int]:
    """How many rows each sender's connection took."""
    with psycopg.connect(url) as conn:
        return Counter(row[0] for row in conn.execute("SELECT claimed_by FROM deliveries WHERE status = 'sent'"))


@pytest.mark.timeout(400)  # three processes of `newsletter send` on a loaded machine
def test_two_senders_share_one_edition_and_mail_every_reader_once(tmp_path: Path, postgres_server: PostgresServer) -> None:
    with SMTPServer() as server:
        world, env = _world(tmp_path, server, postgres_server)
        workers = [_start(world, env) for _ in range(2)]
        for proc in workers:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err.decode()
        assert world.arrivals() == Counter(world.emails), "every reader exactly once"
        shares = _senders(world.env["NEWSLETTER_DB"])
        assert len(shares) == 2 and min(shares.values()) >= READERS // 10, f"both senders took rows: {shares}"


@pytest.mark.timeout(400)
def test_a_sender_killed_mid_edition_loses_nobody_and_repeats_only_its_rows_in_flight(tmp_path: Path, postgres_server: PostgresServer) -> None:
    with SMTPServer() as server:
        world, env = _world(tmp_path, server, postgres_server)
        victim, survivor = _start(world, env), _start(world, env)
        deadline = time.monotonic() + 120
        while server.sink.count() < READERS // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        _, err = survivor.communicate(timeout=240)
        assert survivor.returncode == 0, err.decode()
        with psycopg.connect(world.env["NEWSLETTER_DB"]) as conn:
            in_flight = {row[0] for row in conn.execute("SELECT subscriber FROM deliveries WHERE status = 'sending'")}
        assert len(in_flight) <= 2, "at most one row per SMTP connection of the killed sender was in its hands"
        final = subprocess.run(world.command, cwd=world.folder, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        arrivals = world.arrivals()
        assert [e for e in world.emails if arrivals[e] == 0] == [], "nobody lost"
        assert {e for e, n in arrivals.items() if n > 1} <= in_flight, "duplicates only among the killed sender's rows in flight"


# `newsletter send --workers N`: one send, its rows spread over worker processes, on an SQLite file and on PostgreSQL


def _spread_world(tmp_path: Path, server: SMTPServer, database: Path | str) -> tuple[World, dict[str, str]]:
    world = make_world(tmp_path, server, READERS)
    world.env["NEWSLETTER_DB"] = str(database)
    world.env["SMTP_CONNECTIONS"] = "2"
    return world, {**os.environ, **world.env}


def _claims(world: World) -> Counter[int]:
    """How many sent rows each worker took."""
    url = world.env["NEWSLETTER_DB"]
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            return Counter(row[0] for row in conn.execute("SELECT claimed_by FROM deliveries WHERE status = 'sent'"))
    with sqlite3.connect(url) as db:
        return Counter(row[0] for row in db.execute("SELECT claimed_by FROM deliveries WHERE status = 'sent'"))


def _statuses(world: World) -> dict[str, str]:
    url = world.env["NEWSLETTER_DB"]
    query = "SELECT subscriber, status FROM deliveries"
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            return {row[0]: row[1] for row in conn.execute(query)}
    with sqlite3.connect(url) as db:
        return {row[0]: row[1] for row in db.execute(query)}


def _workers_of(parent: subprocess.Popen[bytes], deadline: float) -> list[int]:
    """The spawned worker processes of a send (not multiprocessing's resource tracker)."""
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        found = [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
        if len(found) == 2:
            return found
        time.sleep(0.01)
    raise AssertionError("the send did not start its two workers")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_workers_mail_every_reader_exactly_once_and_both_take_rows(tmp_path: Path, database: Path | str) -> None:
    with SMTPServer() as server:
        world, env = _spread_world(tmp_path, server, database)
        result = subprocess.run([*world.command, "--workers", "2"], cwd=world.folder, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Digests: {READERS} sent" in result.stdout, "the report sums both workers"
        assert world.arrivals() == Counter(world.emails), "every reader exactly once"
        shares = _claims(world)
        assert len(shares) == 2 and min(shares.values()) >= READERS // 10, f"both workers took rows: {shares}"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_worker_killed_mid_edition_loses_nobody_and_repeats_only_its_rows_in_flight(tmp_path: Path, database: Path | str) -> None:
    with SMTPServer() as server:
        world, env = _spread_world(tmp_path, server, database)
        parent = subprocess.Popen([*world.command, "--workers", "2"], cwd=world.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        victim = _workers_of(parent, deadline)[0]
        while server.sink.count() < READERS // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        out, err = parent.communicate(timeout=240)
        assert parent.returncode == 0, out.decode() + err.decode()
        assert "ended with exit code -9" in err.decode(), "the worker was killed while it still had rows"
        statuses = _statuses(world)
        in_flight = {who for who, status in statuses.items() if status == "sending"}
        assert len(in_flight) <= 2, "at most one row per SMTP connection of the killed worker was in its hands"
        assert {who for who, status in statuses.items() if status != "sent"} == in_flight, "the others finished the rest of the edition"
        final = subprocess.run(world.command, cwd=world.folder, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        arrivals = world.arrivals()
        assert [e for e in world.emails if arrivals[e] == 0] == [], "nobody lost"
        assert {e for e, n in arrivals.items() if n > 1} <= in_flight, "duplicates only among the killed worker's rows in flight"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_stops_every_worker_after_its_messages_in_flight(tmp_path: Path) -> None:
    with SMTPServer() as server:
        world, env = _spread_world(tmp_path, server, tmp_path / "state.db")
        parent = subprocess.Popen([*world.command, "--workers", "2"], cwd=world.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        _workers_of(parent, deadline)
        while server.sink.count() < READERS // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=240)
        assert parent.returncode == 5, out.decode() + err.decode()
        statuses = _statuses(world)
        assert "sending" not in statuses.values(), "every message in flight was answered and recorded"
        sent = {who for who, status in statuses.items() if status == "sent"}
        assert Counter(world.arrivals()) == Counter(sent), "what was recorded sent is exactly what arrived"
        final = subprocess.run([*world.command, "--workers", "2"], cwd=world.folder, env=env, capture_output=True, text=True, timeout=240)
        assert final.returncode == 0, final.stdout + final.stderr
        assert world.arrivals() == Counter(world.emails), "the next send mailed the rest, nobody twice"
