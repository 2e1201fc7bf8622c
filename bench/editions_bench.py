"""Benchmark of edition pages: GET /editions/<token> with 50,000 stored papers and 10,000 readers' editions.

The bundled arXiv and Hugging Face captures are one day's papers; enough days of them (each day's ids made
distinct) are stored to make 50,000 papers. 10,000 readers over 200 topic selections each got one edition
of one of the last 7 days (their selection's digest of that day, topics capped at 8, so most of each edition is
cut and on the page only): the ledger holds 10,000 rows and one layout per distinct (selection, day). Each
request is one reader's edition page through the app in process (Starlette's test client: routing, token,
config, SQLite, cards): a first view of an edition builds its page, a repeat view (another reader of the
same edition, as readers sharing topics are) finds it built. The baseline is GET /style.css on the same app in
the same run. p95 per run of --requests requests each, and the median over --runs runs.

Run: .venv/bin/python bench/editions_bench.py [--requests 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from render_bench import TOPICS, load_papers, selections
from starlette.testclient import TestClient

from newsletter import environment
from newsletter.config.load import load
from newsletter.mail import tokens
from newsletter.model.config import Config
from newsletter.model.digest import all_topics, compose
from newsletter.model.paper import Paper
from newsletter.model.ranking import match_all
from newsletter.model.topics import Matcher
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store
from newsletter.web.app import create_app

SECRET = "bench-secret"
PAPERS = 50_000
EDITION_DAYS = 7  # the editions are of the last week (the default horizon_days)
SELECTIONS = 200


def write_config(path: Path, chosen: list[tuple[str, ...]], readers: int) -> None:
    topics = "\n".join(f"  {name}:\n    title: {title}\n    {rule}" for name, (title, rule) in TOPICS.items())
    subs = "\n".join(f"  - email: r{i}@example.org\n    topics: [{', '.join(chosen[i % len(chosen)])}]" for i in range(readers))
    path.write_text(
        "settings:\n  max_papers_per_topic: 8\n"
        "sources:\n  - {name: hf, type: hf_daily}\n  - {name: arxiv, type: arxiv_rss, categories: [cs]}\n"
        f"topics:\n{topics}\nsubscribers:\n{subs}\n",
        encoding="utf-8",
    )


def fill(db: Path, conf: Config, day_papers: list[Paper]) -> dict[str, list[str]]:
    """Store enough days of papers to make PAPERS, and one edition per reader; every reader's edition link, by edition."""
    days_needed = -(-PAPERS // len(day_papers))
    matcher = Matcher(all_topics(conf))
    matches = match_all(matcher, day_papers)
    now = utcnow()
    links: dict[str, list[str]] = {}
    with Store(db) as store:
        days = []
        for d in range(days_needed):
            papers = [replace(p, id=f"{p.id}~{d}") for p in day_papers]
            store.add_papers(papers, now - timedelta(days=d))
            days.append((papers, {f"{pid}~{d}": m for pid, m in matches.items()}))
        with store.transaction():
            for i, subscriber in enumerate(conf.subscribers):
                papers, day_matches = days[i % EDITION_DAYS]
                digest = compose(conf, subscriber, matcher, papers, day_matches, set(), (now - timedelta(days=i % EDITION_DAYS)).date())
                assert digest is not None
                layout = digest.layout
                store.plan_delivery("bench", subscriber.email, layout, now)
                store.claim("bench", subscriber.email)
                store.mark_sent("bench", subscriber.email, f"<{i}@bench>", "250 ok", now)
                links.setdefault(layout.key, []).append(f"/editions/{tokens.sign(SECRET, tokens.EDITION, tokens.edition_value(subscriber.email, layout.key))}")
        layouts = store.db.execute("SELECT COUNT(*), AVG(LENGTH(data)) FROM layouts").fetchone()
        stored = store.db.execute("SELECT COUNT(*) FROM papers").fetchone()[0]
    print(f"{stored} papers stored, {sum(map(len, links.values()))} editions sent, {layouts[0]} distinct layouts (mean {layouts[1]:.0f} bytes)")
    return links


def timed(client: TestClient, paths: list[str]) -> list[float]:
    """Milliseconds per request, each checked to have answered 200."""
    out = []
    for path in paths:
        started = time.perf_counter()
        answer = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed edition requests of one run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path, db = Path(tmp) / "subscribers.yaml", Path(tmp) / "state.db"
        write_config(config_path, selections(SELECTIONS), args.readers)
        conf = load(config_path)
        links = fill(db, conf, load_papers())
        env = environment.load(
            {"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_DB": str(db), "NEWSLETTER_BASE_URL": "http://localhost"}, dotenv=Path(tmp) / ".env"
        )
        client = TestClient(create_app(env, config_path))
        editions = [group for group in links.values() if len(group) >= 2]
        rng = random.Random(13)
        rng.shuffle(editions)
        sizes = [len(client.get(group[0]).content) for group in editions[-20:]]  # warm: config parsed, templates compiled
        print(f"edition page: median {statistics.median(sizes) / 1000:.0f} KB, {statistics.median(len(g) for g in links.values())} readers per edition")
        firsts, repeats, bases = [], [], []
        for run in range(args.runs):
            chosen = editions[run * args.requests : (run + 1) * args.requests]
            assert len(chosen) == args.requests, "too few editions for that many requests"
            if args.profile:
                import cProfile
                import pstats

                with cProfile.Profile() as profile:
                    timed(client, [g[0] for g in chosen])
                pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
            first = timed(client, [g[0] for g in chosen])  # each the first view of its edition (128 pages are kept)
            repeat = timed(client, [g[1] for g in chosen[-100:]])  # another reader of a recently viewed edition
            base = timed(client, ["/style.css"] * args.requests)
            firsts.append(p95(first))
            repeats.append(p95(repeat))
            bases.append(p95(base))
            print(
                f"run {run + 1}: p95 first view {firsts[-1]:.1f} ms (p50 {statistics.median(first):.1f}), repeat view {repeats[-1]:.1f} ms, /style.css {bases[-1]:.1f} ms"
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"median of {args.runs} runs, p95: edition page first view {statistics.median(firsts):.1f} ms, repeat view {statistics.median(repeats):.1f} ms "
        f"(target <= 50 ms); baseline /style.css {statistics.median(bases):.1f} ms"
    )


if __name__ == "__main__":
    main()
