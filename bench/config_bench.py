"""Benchmark of subscribers.yaml at scale: 100,000 readers listed in the file, every command that reads it.

The file is generated like a real list grown by hand and by the app: the repository's sample settings, sources
and topics, then readers in groups of 500 under a comment, 60% with a name, one to three topics, one in five with
personal keywords (a /regex/ among them), some weekly, some in another time zone with their own send time, a few
paused with a comment. The sources are empty local feeds, so every `send` finds nothing new. Measured, each as its own
process as a user runs it:

- `newsletter check`, cold (no validated config cached: the file was just edited) and warm (cached by another
  process, as the daemon or the web app leave it);
- a `send` with nothing new and `status` (warm), after a day of history: a real arXiv listing stored yesterday and
  every reader mailed their digest of it then (one delivery each), so the send has candidates to match and every
  reader's deliveries to read, and finds each owed nothing, as the day's second send does;
- `newsletter serve`: seconds from its start to its first answer, then the subscribe page (GET /) and a
  confirmation (GET the link's page, POST its form: the reader appended to the file) p95 over --requests each;
- `newsletter run --dry-run`: seconds from an edit of the file (a reader appended, saved by rename as editors
  do) to the daemon's "reloaded" line, its two-second poll included;
- peak RSS of each process.

Medians of --runs runs; the load average is printed, and the baseline is the same commands on
`--baseline-readers` readers (10,000 by default) in the same run, so the growth shows apart from the machine.

Run: .venv/bin/python bench/config_bench.py [--readers 100000] [--runs 3] [--requests 20]
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from newsletter import config as config_mod
from newsletter.ingest.sources import parse
from newsletter.model.config import Source
from newsletter.model.signup import Choice
from newsletter.pipeline.planning import Planner
from newsletter.storage.store import Store
from newsletter.subscriptions.optin import add_pending, confirm_token

ROOT = Path(__file__).resolve().parent.parent
LISTING = ROOT / "tests" / "fixtures" / "arxiv_rss" / "aioarxiv__rss_all_archives_2024-11-28_full.xml"  # a real day of arXiv, all archives
SECRET = "bench-secret-bench-secret-bench-secret"
ZONES = ("Europe/London", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
KEYWORDS = ("retrieval-augmented", "diffusion", "graph neural*", "speech recognition", '"/\\\\bRLHF\\\\b/"', "protein design", "causal inference")
TOPICS = ("hf-top", "llm-agents", "fine-tuning", "continual-learning", "protein-folding", "exoplanets")
EMPTY_FEED = '<?xml version="1.0"?><rss version="2.0"><channel><title>empty</title><link>http://localhost/</link><description>-</description></channel></rss>\n'


def config_text(readers: int, seed: int = 1) -> str:
    """The sample's settings and topics, its sources pointed at an empty feed, and `readers` readers."""
    rng = random.Random(seed)
    sample = (ROOT / "subscribers.yaml").read_text(encoding="utf-8")
    settings, rest = sample.split("\nsources:", 1)
    topics = "\ntopics:" + rest.split("\ntopics:", 1)[1].split("\nsubscribers:", 1)[0]
    sources = "\nsources:\n  - name: hf-trending\n    type: feed\n    url: empty.xml\n  - name: arxiv-all\n    type: feed\n    url: empty.xml\n"
    out = [settings, sources, topics, "\nsubscribers:\n"]
    for i in range(readers):
        if i % 500 == 0:
            out.append(f"\n  # group {i // 500}: readers who signed up at lab {i // 500}\n")
        out.append(f"  - email: reader{i}@lab{i % 977}.example.org\n")
        if rng.random() < 0.6:
            out.append(f"    name: Reader {i}\n")
        out.append(f"    topics: [{', '.join(rng.sample(TOPICS, rng.randint(1, 3)))}]\n")
        if rng.random() < 0.2:
            out.append(f"    keywords: [{', '.join(rng.sample(KEYWORDS, rng.randint(1, 2)))}]\n")
        if rng.random() < 0.15:
            out.append("    frequency: weekly\n    day: friday\n")
        if rng.random() < 0.2:
            out.append(f'    timezone: {rng.choice(ZONES)}\n    send_at: "0{rng.randint(6, 9)}:30"\n')
        if rng.random() < 0.02:
            out.append("    paused: true   # on leave\n")
    return "".join(out)


def make_site(folder: Path, readers: int) -> dict[str, str]:
    """A folder with the file, an empty feed and an outbox; the environment the commands run in."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.xml").write_text(EMPTY_FEED, encoding="utf-8")
    (folder / "subscribers.yaml").write_text(config_text(readers), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}
    env |= {
        "NEWSLETTER_CONFIG": str(folder / "subscribers.yaml"),
        "NEWSLETTER_DB": str(folder / "newsletter.db"),
        "NEWSLETTER_OUTBOX": str(folder / "outbox"),
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_BASE_URL": "http://127.0.0.1",
        "NEWSLETTER_CONFIRMATIONS_PER_HOUR": "100000",
        "XDG_CACHE_HOME": str(folder / "cache"),
    }
    return env


def seed_history(env: dict[str, str]) -> int:
    """Yesterday's papers (a real arXiv listing) stored, and every active reader mailed their digest of them then; how many were."""
    yesterday = datetime.now(UTC) - timedelta(days=1)
    config = config_mod.load(Path(env["NEWSLETTER_CONFIG"]))
    papers = parse(Source("arxiv-all", "arxiv_rss"), LISTING.read_bytes(), "https://rss.arxiv.org/rss/").papers
    mailed = 0
    with Store(Path(env["NEWSLETTER_DB"])) as store:
        store.add_papers(papers, yesterday)
        planner = Planner(config, store, yesterday)
        with store.transaction():
            for subscriber in config.subscribers:
                digest = None if subscriber.paused else planner.next_digest(subscriber)
                if digest is not None:
                    store.plan_delivery("seed", subscriber.email, digest.layout, yesterday)
                    store.claim("seed", subscriber.email, yesterday)
                    store.mark_sent("seed", subscriber.email, f"<seed.{mailed}@bench>", "250 ok", yesterday)
                    mailed += 1
    return mailed


def timed(env: dict[str, str], *args: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `newsletter` command, run in a process of its own."""
    wrapper = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "newsletter", *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0,):
        raise SystemExit(f"newsletter {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, int(done.stdout.strip().splitlines()[-1]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss(pid: int) -> float:
    """A running process's peak resident set so far (MB), from its own VmHWM."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) / 1024 if found else float("nan")


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def serve(env: dict[str, str], folder: Path, requests: int, run: int) -> dict[str, float]:
    """Start `serve`; time its first answer, then the subscribe page and confirmations (p95 of `requests` each)."""
    port = free_port()
    with Store(Path(env["NEWSLETTER_DB"])) as store:
        pendings = [add_pending(store, f"new{run}-{i}@example.net", Choice(("hf-top", "exoplanets"), "daily")) for i in range(requests)]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: dict[str, float] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
                try:
                    if client.get("/").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            out["serve_first_answer_s"] = time.perf_counter() - start
            pages, confirms = [], []
            for pending in pendings:
                t = time.perf_counter()
                assert client.get("/").status_code == 200
                pages.append(time.perf_counter() - t)
                link = f"/confirm/{confirm_token(SECRET, pending)}"
                t = time.perf_counter()
                form = client.get(link)
                token = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert token, form.text[:500]
                done = client.post(link, data={"csrf": token[1]})
                confirms.append(time.perf_counter() - t)
                assert done.status_code == 200 and "You are subscribed" in done.text, done.text[:500]
            out["subscribe_page_p95_s"] = p95(pages)
            out["confirmation_p95_s"] = p95(confirms)
            out["serve_rss_mb"] = peak_rss(proc.pid)
    finally:
        interrupt(proc, 30)
    text = (folder / "subscribers.yaml").read_text(encoding="utf-8")
    assert all(f"- email: {p.email}\n" in text for p in pendings), "every confirmed reader is in the file"
    return out


def interrupt(proc: subprocess.Popen[bytes] | subprocess.Popen[str], seconds: float) -> None:
    """Ctrl-C a command the bench started, as a user stops it; killed if it has not exited within `seconds`."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()


def reload(env: dict[str, str], folder: Path) -> dict[str, float]:
    """Start the daemon (a rehearsal: nothing sent); once it is running, append a reader to the file; seconds to its reload."""
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "run", "--dry-run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or ()], daemon=True).start()

    def wait_for(word: str, limit: float) -> None:
        end = time.perf_counter() + limit
        while time.perf_counter() < end:
            try:
                if word in lines.get(timeout=max(0.01, end - time.perf_counter())):
                    return
            except queue.Empty:
                pass
        raise SystemExit(f"`newsletter run` logged no {word!r} within {limit:.0f} s")

    try:
        wait_for("newsletter run", 300)
        time.sleep(5)  # past its first fetch and tick
        path = folder / "subscribers.yaml"
        text = path.read_text(encoding="utf-8") + "  - email: edited@example.net\n    topics: [hf-top]\n"
        (folder / "subscribers.yaml.tmp").write_text(text, encoding="utf-8")
        start = time.perf_counter()
        os.replace(folder / "subscribers.yaml.tmp", path)
        wait_for("reloaded", 300)
        seconds = time.perf_counter() - start
        rss = peak_rss(proc.pid)
    finally:
        interrupt(proc, 60)
    return {"daemon_reload_s": seconds, "daemon_rss_mb": rss}


def measure(readers: int, runs: int, requests: int) -> dict[str, float]:
    results: dict[str, list[float]] = {}
    for run in range(runs):
        folder = Path(tempfile.mkdtemp(prefix=f"config-bench-{readers}-"))
        try:
            env = make_site(folder, readers)
            figures: dict[str, float] = {}
            figures["check_cold_s"], figures["check_cold_rss_mb"] = timed(env, "check")
            figures["check_warm_s"], figures["check_warm_rss_mb"] = timed(env, "check")
            seed_history(env)
            figures["send_nothing_new_s"], figures["send_rss_mb"] = timed(env, "send")
            figures["status_s"], figures["status_rss_mb"] = timed(env, "status")
            figures |= serve(env, folder, requests, run)
            figures |= reload(env, folder)
            for key, value in figures.items():
                results.setdefault(key, []).append(value)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {key: statistics.median(values) for key, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--baseline-readers", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs", flush=True)
    rows = {n: measure(n, args.runs, args.requests) for n in (args.baseline_readers, args.readers)}
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"medians of {args.runs} runs ({args.requests} requests each for the p95s)")
    print(f"{'':28}" + "".join(f"{n:>14,} readers" for n in rows))
    for key in next(iter(rows.values())):
        print(f"{key:28}" + "".join(f"{row[key]:>22.3f}" for row in rows.values()))


if __name__ == "__main__":
    main()
