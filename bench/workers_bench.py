"""Benchmark of one edition sent by 1 and by 2 `newsletter send` processes sharing a PostgreSQL database: readers
mailed per second, wall time from start-up to the last exit, each run on a fresh database, medians of --runs.

Run: .venv/bin/python bench/workers_bench.py [--readers 2000] [--runs 3] [--connections 2]
Needs Debian's postgresql (/usr/lib/postgresql/15/bin); the server is started in a temporary folder, as the tests do.
Figures to report: msg/s with 2 senders against 1 (the ratio), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support.postgres import PostgresServer
from support.smtpserver import free_port

FEED = ROOT / "samples" / "feeds" / "personal-news-feed__daily_papers_2026-07-31.json"
CONFIG = f"""\
sources:
  - name: hf
    type: hf_daily
    url: {FEED}
topics:
  trending:
    title: Trending on Hugging Face
    sources: [hf]
    min_score: 20
subscribers:
"""


def sink(port: int) -> None:
    """The SMTP server, in a process of its own so it is not what limits the senders: counts each recipient, and on
    every line read from stdin prints the counts so far as JSON and starts again."""
    from aiosmtpd.controller import Controller

    class Counting:
        seen: ClassVar[Counter[str]] = Counter()

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            Counting.seen.update(envelope.rcpt_tos)  # type: ignore[attr-defined]
            return "250 OK"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps(Counting.seen), flush=True)
        Counting.seen = Counter()
    controller.stop()


def edition(folder: Path, url: str, port: int, senders: int, connections: int) -> float:
    """Seconds from starting `senders` processes on a fresh database to the last one's exit."""
    env = {
        **os.environ,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
        "SMTP_CONNECTIONS": str(connections),
        "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
        "NEWSLETTER_SECRET_KEY": "bench-secret",
        "NEWSLETTER_DB": url,
    }
    command = [sys.executable, "-m", "newsletter", "--config", str(folder / "subscribers.yaml"), "send"]
    started = time.perf_counter()
    procs = [subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(senders)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"send failed: {err.decode()}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return
    n = args.readers
    server = PostgresServer()
    port = free_port()
    smtp = subprocess.Popen([sys.executable, __file__, "--sink", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert smtp.stdin is not None and smtp.stdout is not None
    assert smtp.stdout.readline().strip() == "ready"
    try:
        with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp:
            folder = Path(tmp)
            emails = [f"reader{i:05d}@example.org" for i in range(n)]
            (folder / "subscribers.yaml").write_text(CONFIG + "".join(f"  - email: {e}\n    topics: [trending]\n" for e in emails), encoding="utf-8")
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.runs):
                for senders in (1, 2):  # alternated, so both see the same load
                    times[senders].append(edition(folder, server.database(), port, senders, args.connections))
                    smtp.stdin.write("\n")
                    smtp.stdin.flush()
                    arrivals = Counter(json.loads(smtp.stdout.readline()))
                    if arrivals != Counter(emails):
                        raise SystemExit(f"{senders} senders: {sum(arrivals.values())} messages for {len(arrivals)} of {n} readers")
    finally:
        smtp.stdin.close()
        smtp.wait()
        server.stop()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"readers: {n}, SMTP connections per sender: {args.connections}, runs: {args.runs} (each reader mailed exactly once in every run)")
    print(f"1 sender:  {one:6.2f} s  {n / one:6.0f} msg/s  (runs: {', '.join(f'{t:.2f}' for t in times[1])})")
    print(f"2 senders: {two:6.2f} s  {n / two:6.0f} msg/s  (runs: {', '.join(f'{t:.2f}' for t in times[2])})")
    print(f"2 senders / 1: {one / two:.2f}x the throughput; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
