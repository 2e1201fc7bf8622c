"""Benchmark of a whole `newsletter send` to N readers against a plain smtplib loop pushing the same number of
ready-made messages over one connection, both to one aiosmtpd sink running in its own process.

Run: .venv/bin/python bench/send_bench.py [--readers 10000] [--connections 4]
Target: the whole send (start-up, fetch, planning, rendering, ledger, SMTP) within 1.3x of the loop's time.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def sink(port: int, sample: Path) -> None:
    """The SMTP server: accepts everything, keeps the first message as a sample, prints the count when stdin closes."""
    from aiosmtpd.controller import Controller

    class Counter:
        count = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            if Counter.count == 0:
                sample.write_bytes(envelope.original_content)  # type: ignore[attr-defined]
            Counter.count += 1
            return "250 OK"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()
    print(Counter.count, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client(folder: Path) -> None:
    """What `newsletter send` does, phase by phase (config, fetch, send), printing each phase's seconds."""
    from newsletter import config as config_mod
    from newsletter import environment, pipeline
    from newsletter.mail.pool import transport
    from newsletter.storage.store import Store

    started = time.perf_counter()
    env = environment.load()
    config = config_mod.load(folder / "subscribers.yaml")
    loaded = time.perf_counter()
    with Store(env.db) as store:
        pipeline.fetch(config, env, store)
        fetched = time.perf_counter()
        report = pipeline.send(config, env, store, transport(env.smtp, env.outbox, env.pool, env.dkim))
    sent = time.perf_counter()
    if report.count("sent") != len(config.subscribers):
        raise SystemExit(f"only {report.count('sent')} of {len(config.subscribers)} sent: {report.outcomes[:3]}")
    print(f"{loaded - started} {fetched - loaded} {sent - fetched}")


def whole_send(folder: Path, port: int, connections: int) -> tuple[float, float, int, list[float]]:
    """The send in a fresh interpreter, as a user runs it: wall and CPU seconds from start-up to exit,
    peak RSS in KiB, and the seconds spent loading the config, fetching and sending."""
    env = {
        **os.environ,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
        "SMTP_CONNECTIONS": str(connections),
        "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
        "NEWSLETTER_SECRET_KEY": "bench-secret",
        "NEWSLETTER_DB": str(folder / "state.db"),
    }
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--client", str(folder)], cwd=folder, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"send failed:\n{output}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, [float(x) for x in output.split()]


def smtplib_loop(port: int, messages: list[tuple[str, bytes]]) -> tuple[float, float]:
    """The floor: one connection, one sendmail per ready-made message; wall and CPU seconds."""
    started, cpu = time.perf_counter(), time.process_time()
    conn = smtplib.SMTP("127.0.0.1", port)
    for recipient, data in messages:
        conn.sendmail("digest@example.org", [recipient], data)
    conn.quit()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink, args.sample)
        return
    if args.client:
        client(args.client)
        return

    with tempfile.TemporaryDirectory(prefix="send-bench-") as tmp:
        folder = Path(tmp)
        emails = [f"reader{i:05d}@example.org" for i in range(args.readers)]
        (folder / "subscribers.yaml").write_text(CONFIG + "".join(f"  - email: {e}\n    topics: [trending]\n" for e in emails), encoding="utf-8")
        port, sample = free_port(), folder / "sample.eml"
        server = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(port), "--sample", str(sample)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert server.stdin is not None and server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        try:
            send_s, send_cpu, peak_kib, (config_s, fetch_s, deliver_s) = whole_send(folder, port, args.connections)
            data = sample.read_bytes()
            messages = [(e, data.replace(emails[0].encode(), e.encode())) for e in emails]
            loop_s, loop_cpu = smtplib_loop(port, messages)
        finally:
            server.stdin.close()
            received = int(server.stdout.read().strip() or 0)
            server.wait()
    n = args.readers
    print(f"readers: {n}, message size: {len(data) / 1024:.1f} KiB, SMTP connections: {args.connections}")
    print(f"whole send:      {send_s:6.2f} s  {n / send_s:7.0f} msg/s  client CPU {send_cpu:6.2f} s  peak RSS {peak_kib / 1024:.0f} MiB")
    print(f"  of which: config load {config_s:.2f} s, fetch {fetch_s:.2f} s, pipeline.send {deliver_s:.2f} s ({n / deliver_s:.0f} msg/s)")
    print(f"smtplib loop:    {loop_s:6.2f} s  {n / loop_s:7.0f} msg/s  client CPU {loop_cpu:6.2f} s  (ready-made messages, one connection)")
    print(f"ratio whole send / loop: {send_s / loop_s:.2f}x (target <= 1.3x); pipeline.send / loop: {deliver_s / loop_s:.2f}x")
    print(f"server received {received} of {2 * n}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
