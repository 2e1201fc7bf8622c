"""Benchmark of one edition sent by 1 and by 2 `newsletter send` processes sharing a PostgreSQL database: readers
mailed per second, wall time from start-up to the last exit, each run on a fresh database, medians of --runs.

Run: .venv/bin/python bench/workers_bench.py [--readers 2000] [--runs 3] [--connections 2]
Needs Debian's postgresql (/usr/lib/postgresql/15/bin); the server is started in a temporary folder, as the tests do.
Figures to report: msg/s with 2 senders against 1 (the ratio), measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support.postgres import PostgresServer
from support.smtpserver import Sink, SMTPServer

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
    args = parser.parse_args()
    n = args.readers
    server = PostgresServer()
    try:
        with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp, SMTPServer(Sink()) as smtp:
            folder = Path(tmp)
            emails = [f"reader{i:05d}@example.org" for i in range(n)]
            (folder / "subscribers.yaml").write_text(CONFIG + "".join(f"  - email: {e}\n    topics: [trending]\n" for e in emails), encoding="utf-8")
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.runs):
                for senders in (1, 2):  # alternated, so both see the same load
                    smtp.sink.messages.clear()
                    times[senders].append(edition(folder, server.database(), smtp.port, senders, args.connections))
                    arrivals = Counter(smtp.sink.recipients())
                    if arrivals != Counter(emails):
                        raise SystemExit(f"{senders} senders: {sum(arrivals.values())} messages for {len(arrivals)} of {n} readers")
    finally:
        server.stop()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"readers: {n}, SMTP connections per sender: {args.connections}, runs: {args.runs} (each reader mailed exactly once in every run)")
    print(f"1 sender:  {one:6.2f} s  {n / one:6.0f} msg/s  (runs: {', '.join(f'{t:.2f}' for t in times[1])})")
    print(f"2 senders: {two:6.2f} s  {n / two:6.0f} msg/s  (runs: {', '.join(f'{t:.2f}' for t in times[2])})")
    print(f"2 senders / 1: {one / two:.2f}x the throughput; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
