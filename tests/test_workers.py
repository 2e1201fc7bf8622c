"""Several `newsletter send` processes sharing one edition on PostgreSQL: every reader mailed once, a killed one loses nobody."""

from __future__ import annotations

import os
import signal
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
