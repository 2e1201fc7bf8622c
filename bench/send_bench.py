"""Benchmark of a whole `newsletter send` against the raw smtplib push of the very messages it sent, with DKIM off
and on, into aiosmtpd and into Postfix's C `smtp-sink`, over the same number of connections.

The config is a realistic one: 12 keyword topics over the bundled arXiv RSS sample (935 papers) and Hugging Face
daily papers (30), `max_papers_per_topic: 6`, and N readers spread over 200 distinct topic selections (a quarter of
them with a personal keyword too). Each whole send runs in a fresh interpreter on a fresh database, as a user runs
it (start-up, config, fetch, planning, rendering, ledger, DKIM, SMTP). The aiosmtpd sink (a process of its own)
writes every message it gets to a capture file, for the send and for the raw push alike; the raw push is that
capture, pushed by `smtplib.SMTP.sendmail` from as many threads as the send has connections, into the same kind of
sink. `smtp-sink` (Debian `postfix`; only that binary runs, on 127.0.0.1) throws messages away. Each of `--runs`
rounds measures every case and its own raw push; medians over the rounds, with the load average. With `--workers N`
the whole send is also measured spread over N processes (`send --workers N`), the same connections shared out
among them, beside the one-process send of the same round.

Run: .venv/bin/python bench/send_bench.py [--readers 1000] [--connections 4] [--runs 3] [--workers 1]
Target (#17): at 10,000 readers, DKIM on, into smtp-sink, the whole send within 1.3x of the raw push.
"""

from __future__ import annotations

import argparse
import os
import random
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEEDS = ROOT / "samples" / "feeds"
SMTP_SINK = Path("/usr/sbin/smtp-sink")
SENDER = "digest@example.org"
SELECTIONS = 200

TOPICS = {
    "llm-agents": ("LLM agents", '[agent*, "tool use", agentic]', 'all: ["/\\\\b(LLM|language model)s?\\\\b/"]'),
    "fine-tuning": ("Fine-tuning & adaptation", "[fine-tuning, LoRA, PEFT, parameter-efficient, adapter*, distillation]", "none: [diffusion]"),
    "continual": ("Continual learning", "[continual learning, catastrophic forgetting, lifelong learning]", ""),
    "proteins": ("Proteins & folding", '[protein folding, protein structure, amyloid*, "category:q-bio.BM"]', ""),
    "exoplanets": ("Exoplanets", '[exoplanet*, "hot Jupiter*", transit photometry, "category:astro-ph.EP"]', ""),
    "diffusion": ("Diffusion models", "[diffusion model*, score-based, denoising]", ""),
    "rl": ("Reinforcement learning", "[reinforcement learning, policy gradient*, reward model*]", ""),
    "graphs": ("Graph learning", "[graph neural network*, GNN*, message passing]", ""),
    "vision": ("Computer vision", "[vision transformer*, ViT, image segmentation, object detection]", ""),
    "speech": ("Speech & audio", '[speech recognition, text-to-speech, "category:eess.AS"]', ""),
    "robotics": ("Robotics", '[robot*, manipulation, "category:cs.RO"]', ""),
    "quantum": ("Quantum", '[qubit*, quantum circuit*, "category:quant-ph"]', ""),
}
PERSONAL = ["retrieval-augmented", "benchmark", "interpretability", "uncertainty", "transformer*", "survey"]


def config(readers: int) -> str:
    """subscribers.yaml: the sources, the 12 topics, and `readers` readers cycling through 200 selections."""
    lines = [
        "settings:",
        "  max_papers_per_topic: 6",
        "sources:",
        "  - name: arxiv",
        "    type: arxiv_rss",
        f"    url: {FEEDS / 'aioarxiv__rss_all_archives_2024-11-28_full.xml'}",
        "  - name: hf",
        "    type: hf_daily",
        f"    url: {FEEDS / 'personal-news-feed__daily_papers_2026-07-31.json'}",
        "topics:",
    ]
    for name, (title, any_, extra) in TOPICS.items():
        lines += [f"  {name}:", f"    title: {title}", f"    any: {any_}"] + ([f"    {extra}"] if extra else [])
    lines.append("subscribers:")
    chosen = selections()
    for i in range(readers):
        topics, keyword = chosen[i % len(chosen)]
        lines += [f"  - email: reader{i:06d}@example.org", f"    topics: [{', '.join(topics)}]"] + ([f"    keywords: [{keyword}]"] if keyword else [])
    return "\n".join(lines) + "\n"


def selections() -> list[tuple[tuple[str, ...], str | None]]:
    """200 distinct selections of 1 to 4 topics, every fourth with a personal keyword; the same every run."""
    rng = random.Random(17)
    pool = [combo for size in (1, 2, 3, 4) for combo in combinations(TOPICS, size)]
    picked = rng.sample(pool, SELECTIONS)
    return [(topics, PERSONAL[i % len(PERSONAL)] if i % 4 == 0 else None) for i, topics in enumerate(picked)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no SMTP server came up on 127.0.0.1:{port}")


def aiosmtpd_sink(port: int, capture: Path) -> None:
    """The aiosmtpd server (in its own process): takes everything and appends it to `capture` as
    "sender<TAB>recipient<TAB>length" lines, each followed by the message's bytes."""
    from aiosmtpd.controller import Controller

    out = capture.open("wb")

    class Keep:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            data: bytes = envelope.original_content  # type: ignore[attr-defined]
            out.write(f"{envelope.mail_from}\t{envelope.rcpt_tos[0]}\t{len(data)}\n".encode())  # type: ignore[attr-defined]
            out.write(data)
            return "250 OK"

    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    sys.stdin.read()  # until the bench closes it
    controller.stop()
    out.close()


@contextmanager
def sink(kind: str, capture: Path) -> Iterator[int]:
    """A fresh SMTP server of `kind` on a free loopback port, for one measurement."""
    port = free_port()
    if kind == "aiosmtpd":
        proc = subprocess.Popen([sys.executable, __file__, "--sink", str(port), "--capture", str(capture)], stdin=subprocess.PIPE)
    else:  # Postfix's smtp-sink: as root it must drop to another user once it has its socket
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        proc = subprocess.Popen([str(SMTP_SINK), *user, f"127.0.0.1:{port}", "256"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_for(port)
        yield port
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        else:
            proc.terminate()
        proc.wait(timeout=60)


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
        report = pipeline.send(config, env, store, transport(env.smtp, env.outbox, env.pool, env.dkim), workers=env.send_workers)
    sent = time.perf_counter()
    if report.count("sent") != len(config.subscribers):
        raise SystemExit(f"only {report.count('sent')} of {len(config.subscribers)} sent: {report.outcomes[:3]}")
    print(f"{loaded - started} {fetched - loaded} {sent - fetched} {_peak_rss_mib()}")


def _peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM: reset at exec, unlike ru_maxrss, which a child keeps from the forked
    parent — here the bench holding every captured message)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Measure:
    """One timed push of all the messages: wall and CPU seconds, and for a whole send its pipeline.send seconds and peak RSS."""

    wall: float
    cpu: float
    deliver: float = 0.0
    rss_mib: float = 0.0
    load: float = 0.0


def whole_send(folder: Path, port: int, connections: int, dkim: Path | None, workers: int = 1) -> Measure:
    """The send in a fresh interpreter on a fresh database, from start-up to exit; with `workers`, its
    `connections` shared out among that many worker processes. Its CPU counts that of every process it waits
    for: its connections' (each in a process of its own) and its workers'."""
    db = folder / "state.db"
    for stale in folder.glob("state.db*"):
        stale.unlink()
    env = {
        **os.environ,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
        "SMTP_CONNECTIONS": str(max(1, connections // workers)),
        "NEWSLETTER_SEND_WORKERS": str(workers),
        "NEWSLETTER_FROM": f"Paper Digest <{SENDER}>",
        "NEWSLETTER_SECRET_KEY": "bench-secret",
        "NEWSLETTER_DB": str(db),
    }
    if dkim is not None:
        env.update(DKIM_SELECTOR="bench", DKIM_DOMAIN="example.org", DKIM_PRIVATE_KEY_PATH=str(dkim))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--client", str(folder)], cwd=folder, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"send failed:\n{output}")
    _, _, deliver, peak = (float(x) for x in output.split())
    return Measure(elapsed, usage.ru_utime + usage.ru_stime, deliver, peak, os.getloadavg()[0])


def captured(capture: Path) -> list[tuple[str, str, bytes]]:
    """The messages the aiosmtpd sink wrote: (sender, recipient, bytes) each."""
    messages = []
    with capture.open("rb") as fh:
        while line := fh.readline():
            sender, recipient, length = line.decode().rstrip("\n").split("\t")
            messages.append((sender, recipient, fh.read(int(length))))
    return messages


def raw_push(port: int, messages: list[tuple[str, str, bytes]], connections: int) -> Measure:
    """The floor: ready-made messages, `connections` threads each with one connection, one sendmail per message."""

    def push(share: list[tuple[str, str, bytes]]) -> None:
        conn = smtplib.SMTP("127.0.0.1", port)
        for sender, recipient, data in share:
            conn.sendmail(sender, [recipient], data)
        conn.quit()

    threads = [threading.Thread(target=push, args=(messages[i::connections],)) for i in range(connections)]
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Measure(time.perf_counter() - started, time.process_time() - cpu, load=os.getloadavg()[0])


def dkim_key(folder: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return path


def signing(messages: list[bytes], key: Path, runs: int) -> tuple[float, float]:
    """CPU ms per message of `Signer.sign` and, as the baseline, of dkimpy's own `dkim.sign` (pure-Python RSA) on
    the same real digests with the same headers signed; medians of `runs`."""
    import dkim

    from newsletter.mail.signing import DkimSettings, Signer, signed_headers

    signer = Signer.from_settings(DkimSettings("bench", "example.org", key))
    assert signer is not None
    pem = key.read_bytes()
    fast, slow = [], []
    for _ in range(runs):
        cpu = time.process_time()
        for data in messages:
            signer.sign(data)
        fast.append((time.process_time() - cpu) / len(messages) * 1000)
        few = messages[:20]
        cpu = time.process_time()
        for data in few:
            dkim.sign(data, b"bench", b"example.org", pem, include_headers=signed_headers(data.partition(b"\r\n\r\n")[0]))
        slow.append((time.process_time() - cpu) / len(few) * 1000)
    return statistics.median(fast), statistics.median(slow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=1000, help="readers (default 1000 for a quick run; #17's target is at 10000)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="also measure the send spread over this many processes (default 1: only one)")
    parser.add_argument("--sinks", default="smtp-sink,aiosmtpd", help="comma-separated: smtp-sink, aiosmtpd")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--capture", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        aiosmtpd_sink(args.sink, args.capture)
        return
    if args.client:
        client(args.client)
        return
    kinds = args.sinks.split(",")
    if "smtp-sink" in kinds and not SMTP_SINK.exists():
        raise SystemExit(f"{SMTP_SINK} is missing: apt-get install postfix (only its smtp-sink binary runs), or --sinks aiosmtpd")

    n, conns = args.readers, args.connections
    teams = sorted({1, args.workers})
    with tempfile.TemporaryDirectory(prefix="send-bench-") as tmp:
        folder = Path(tmp)
        (folder / "subscribers.yaml").write_text(config(n), encoding="utf-8")
        key = dkim_key(folder)
        sends: dict[tuple[str, str, int], list[Measure]] = {}
        raws: dict[tuple[str, str], list[Measure]] = {}
        sizes: dict[str, float] = {}
        for run in range(args.runs):
            for dkim in ("off", "on"):
                capture = folder / f"capture-{dkim}.bin"
                with sink("aiosmtpd", capture) as port:  # the capture run: its messages are the raw push's
                    sends.setdefault(("aiosmtpd", dkim, 1), []).append(whole_send(folder, port, conns, key if dkim == "on" else None))
                messages = captured(capture)
                if len(messages) != n:
                    raise SystemExit(f"the sink captured {len(messages)} of {n} messages")
                if dkim == "off":
                    unsigned = [data for _, _, data in messages[:200]]
                sizes[dkim] = statistics.fmean(len(m[2]) for m in messages) / 1024
                for kind in kinds:
                    for workers in teams:
                        if kind != "aiosmtpd" or workers > 1:
                            with sink(kind, folder / "unused") as port:
                                sends.setdefault((kind, dkim, workers), []).append(whole_send(folder, port, conns, key if dkim == "on" else None, workers))
                    with sink(kind, folder / f"raw-{dkim}.bin") as port:
                        raws.setdefault((kind, dkim), []).append(raw_push(port, messages, conns))
                print(
                    f"run {run + 1}/{args.runs} DKIM {dkim}: "
                    + ", ".join(
                        f"{k} send {' / '.join(f'{sends[k, dkim, w][-1].wall:.1f}' for w in teams)} s (workers {'/'.join(map(str, teams))}) "
                        f"/ raw {raws[k, dkim][-1].wall:.2f} s"
                        for k in kinds
                    ),
                    flush=True,
                )
        fast, slow = signing(unsigned, key, args.runs)

    print(
        f"\nreaders: {n} over {SELECTIONS} selections of {len(TOPICS)} keyword topics, max 6 papers per topic; message size "
        f"{sizes['off']:.1f} KiB (DKIM off) / {sizes['on']:.1f} KiB (on); {conns} SMTP connections; medians of {args.runs} runs"
    )
    print(
        f"{'':28} {'whole send':>11} {'pipeline.send':>14} {'raw push':>9} {'whole/raw':>10} {'send/raw':>9} {'CPU/msg send':>13} {'CPU/msg raw':>12} {'peak RSS':>9}"
    )
    for kind in kinds:
        for dkim, workers in ((d, w) for d in ("off", "on") for w in teams):
            s, r = sends[kind, dkim, workers], raws[kind, dkim]
            ratio = statistics.median(a.wall / b.wall for a, b in zip(s, r, strict=True))
            deliver_ratio = statistics.median(a.deliver / b.wall for a, b in zip(s, r, strict=True))
            print(
                f"{kind + ' DKIM ' + dkim + f', {workers} process' + ('es' if workers > 1 else ''):28} {statistics.median(m.wall for m in s):9.2f} s {statistics.median(m.deliver for m in s):12.2f} s "
                f"{statistics.median(m.wall for m in r):7.2f} s {ratio:9.1f}x {deliver_ratio:8.1f}x "
                f"{statistics.median(m.cpu for m in s) / n * 1000:10.2f} ms {statistics.median(m.cpu for m in r) / n * 1000:9.2f} ms "
                f"{statistics.median(m.rss_mib for m in s):6.0f} MiB"
            )
    print(
        f"DKIM signing, CPU per message ({statistics.fmean(map(len, unsigned)) / 1024:.0f} KiB digests): {fast:.2f} ms (OpenSSL via cryptography) vs {slow:.2f} ms (dkimpy alone)"
    )
    loads = [m.load for ms in (*sends.values(), *raws.values()) for m in ms]
    print(
        f"target: whole send <= 1.3x the raw push (smtp-sink, DKIM on, 10,000 readers); load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
