"""Benchmark of fetch + parse + normalise + store on the 1,504-item all-archives arXiv RSS feed (2.8 MB),
served from a local HTTP server into a fresh SQLite file: papers/s end to end, per stage, and peak memory.

Run: .venv/bin/python bench/sources_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers (tests/support)

from support.httpserver import LocalHTTPServer

from newsletter import config as config_mod
from newsletter import pipeline
from newsletter.environment import Env
from newsletter.ingest.feeds import read_feed
from newsletter.ingest.fetch import Fetcher, Request
from newsletter.ingest.sources import parse
from newsletter.ingest.tex import readable_tex
from newsletter.storage.store import Store

FEED = "arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml"
CONFIG = """\
settings:
  allow_private_network: true
sources:
  - name: all-archives
    type: arxiv_rss
    url: {url}
    announce_types: [new, cross, replace, replace-cross]   # all 1,504 items
"""


def end_to_end(server: LocalHTTPServer, work: Path) -> tuple[float, int]:
    """One pipeline.fetch of the feed into a fresh database: seconds and papers stored."""
    (work / "subscribers.yaml").write_text(CONFIG.format(url=server.url("/" + FEED)), encoding="utf-8")
    config = config_mod.load(work / "subscribers.yaml")
    db = work / f"bench-{time.monotonic_ns()}.db"
    env = Env(sender="bench@example.org", db=db)
    with Store(db) as store:
        started = time.perf_counter()
        (result,) = pipeline.fetch(config, env, store, policy=pipeline.fetch_policy(config, env, date.today()))
        elapsed = time.perf_counter() - started
    assert result.error is None, result.error
    return elapsed, result.new


def stages(server: LocalHTTPServer, work: Path) -> dict[str, float]:
    """The same work split into its stages, each timed on its own."""
    config = config_mod.load(work / "subscribers.yaml")
    (source,) = config.sources
    env = Env(sender="bench@example.org")

    async def get() -> Any:
        async with Fetcher(pipeline.fetch_policy(config, env, date.today())) as fetcher:
            return await fetcher.get(Request(server.url("/" + FEED)))

    out: dict[str, float] = {}
    started = time.perf_counter()
    response = asyncio.run(get())
    out["fetch (HTTP, 2.8 MB)"] = time.perf_counter() - started
    started = time.perf_counter()
    papers = parse(source, response.body, response.final_url, response.content_type).papers
    out["parse + normalise"] = time.perf_counter() - started
    entries = read_feed(response.body, response.final_url, response.content_type).entries
    texts = [str(e.get(key) or "") for e in entries for key in ("title", "summary")]
    started = time.perf_counter()
    for text in texts:
        readable_tex(text)
    out[f"  of which LaTeX ({sum(map(needs_reading, texts))} of {len(texts)} titles+abstracts)"] = time.perf_counter() - started
    with Store(work / f"stage-{time.monotonic_ns()}.db") as store:
        started = time.perf_counter()
        store.add_papers(papers)
        out["store (new papers)"] = time.perf_counter() - started
        started = time.perf_counter()
        store.add_papers(papers)
        out["store (merge into existing)"] = time.perf_counter() - started
    return out


def needs_reading(text: str) -> bool:
    """Whether readable_tex changes the text (it returns the text itself when there is no LaTeX in it)."""
    return readable_tex(text) is not text


def peak_python_heap(run: Callable[[], object]) -> int:
    """Peak bytes allocated by Python during one run (tracemalloc; slows the run, so timed separately)."""
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with LocalHTTPServer(ROOT / "tests/fixtures") as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [end_to_end(server, work) for _ in range(args.runs)]
        times = [t for t, _ in runs]
        papers = runs[0][1]
        best, median = min(times), statistics.median(times)
        print(f"fetch+parse+normalise+store, {papers} papers, {args.runs} runs (fresh database each):")
        print(f"  best   {best:.3f} s  = {papers / best:,.0f} papers/s")
        print(f"  median {median:.3f} s  = {papers / median:,.0f} papers/s")
        print("stages (one run):")
        for name, seconds in stages(server, work).items():
            print(f"  {name:30} {seconds:.3f} s")
        heap = peak_python_heap(lambda: end_to_end(server, work))
        print(f"peak Python heap during one run (tracemalloc): {heap / 2**20:.1f} MiB")
        print(f"peak resident set of this process (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
