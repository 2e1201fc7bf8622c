"""Benchmark of the public pages with 50,000 stored papers: the front page and topic pages through the real app
(Starlette's TestClient: routing, middleware, thread pool, SQLite, templates), against /style.css in the same run.

The papers are the bundled real captures (arXiv all-archives RSS, Hugging Face daily papers, bioRxiv, Nature), copied
with new ids and spread over consecutive days until there are 50,000 (about 1,600 a day, as arXiv announces), under
the twelve topics of bench/render_bench.py. Each run asks for every page N times; figures are medians over the runs.

Run: .venv/bin/python bench/pages_bench.py [--papers 50000] [--requests 200] [--runs 5]
Target: front page and topic page p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_bench import TOPICS
from starlette.testclient import TestClient

from newsletter import environment
from newsletter.ingest.sources import parse
from newsletter.model.config import Source
from newsletter.model.paper import Paper
from newsletter.storage.store import Store
from newsletter.web.app import create_app

FEEDS = ROOT / "samples" / "feeds"
LAST_DAY = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def captured() -> list[Paper]:
    """Every paper of the bundled captures, parsed as a fetch would."""
    sources = [
        (Source(name="hf", type="hf_daily"), "personal-news-feed__daily_papers_2026-07-31.json"),
        (Source(name="arxiv", type="arxiv_rss"), "aioarxiv__rss_all_archives_2024-11-28_full.xml"),
        (Source(name="biorxiv", type="feed", url="https://example.org/biorxiv"), "feeds__biorxiv_amyloid_search_atom_generated.xml"),
        (Source(name="nature", type="feed", url="https://example.org/nature"), "translated_rss__nature_current_issue_rss10_rdf.xml"),
    ]
    return [p for source, name in sources for p in parse(source, (FEEDS / name).read_bytes(), "https://example.org/feed").papers]


def fill(store: Store, total: int) -> int:
    """`total` papers: the captures again and again, one copy a day going back from LAST_DAY, each with its own id."""
    base = captured()
    days = 0
    while days * len(base) < total:
        day = LAST_DAY - timedelta(days=days)
        batch = [
            dataclasses.replace(p, id=f"{p.id}-d{days}", published=day - timedelta(minutes=i % 600)) for i, p in enumerate(base[: total - days * len(base)])
        ]
        store.add_papers(batch, now=day + timedelta(hours=1))
        days += 1
    return days


def make_config(folder: Path) -> Path:
    topics = "\n".join(f"  {name}:\n    title: {title}\n    {rule}" for name, (title, rule) in TOPICS.items())
    text = (
        "sources:\n  - {name: hf, type: hf_daily}\n  - {name: arxiv, type: arxiv_rss, categories: [cs]}\n"
        f"topics:\n{topics}\nsubscribers:\n  - email: ada@example.org\n    topics: [agents]\n"
    )
    path = folder / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def timings(client: TestClient, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config_path = make_config(folder)
        env = environment.load(
            {"NEWSLETTER_DB": str(folder / "state.db"), "NEWSLETTER_SECRET_KEY": "bench", "NEWSLETTER_BASE_URL": "https://digest.example.org"},
            dotenv=folder / ".env",
        )
        started = time.perf_counter()
        with Store(env.db) as store:
            days = fill(store, args.papers)
            stored = store.db.execute("SELECT count(*) FROM papers").fetchone()[0]
        print(f"{stored} papers over {days} days stored in {time.perf_counter() - started:.1f} s")
        # with its lifespan, as `newsletter serve` runs it: the listing is built in the background from start-up
        with TestClient(create_app(env, config_path), base_url="https://digest.example.org") as client:
            started = time.perf_counter()
            client.get("/")
            print(f"first request (waits for the listing built at start-up from every stored paper): {1000 * (time.perf_counter() - started):.0f} ms")
            middle = (LAST_DAY - timedelta(days=days // 2)).date().isoformat()
            pages = {
                "/style.css (baseline)": "/style.css",
                "front page": "/",
                "topic page, latest day": "/topics/agents",
                f"topic page, {middle}": f"/topics/retrieval/{middle}",
            }
            for path in pages.values():  # warm: the first view of a page renders its cards; later ones reuse them
                timings(client, path, 3)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in pages}
            for _ in range(args.runs):
                for name, path in pages.items():
                    times = timings(client, path, args.requests)
                    results[name].append((statistics.median(times), p95(times)))
            sizes = {name: len(client.get(path).content) for name, path in pages.items()}
    print(f"{args.runs} runs of {args.requests} requests each; medians over the runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, runs in results.items():
        median = statistics.median(r[0] for r in runs)
        high = statistics.median(r[1] for r in runs)
        print(f"  {name:34} median {1000 * median:6.1f} ms   p95 {1000 * high:6.1f} ms   {sizes[name] // 1024:4d} KB")
    worst = max(statistics.median(r[1] for r in results[name]) for name in pages if "baseline" not in name)
    print(f"worst page p95 {1000 * worst:.1f} ms: target <= 50 ms {'met' if worst <= 0.050 else 'MISSED'}")


if __name__ == "__main__":
    main()
