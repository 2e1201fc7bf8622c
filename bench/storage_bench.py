"""Benchmark of the state database over a year of daily sends: its size without and with `prune`, the size the
old per-paper `sent` table would have added, and how long prune takes.

Each simulated day stores --papers papers (the bundled arXiv and Hugging Face captures, ids made distinct per
day, real titles and abstracts), four popularity snapshots of the Hugging Face ones and one HTTP validator per
day, then mails --readers readers over 200 topic selections of the render bench's twelve topics: each
selection's edition holds every paper of the day its topics take (caps of 8 shown per topic, the rest cut), stored
once as a layout, and each reader's delivery goes pending → sending → sent through the store's own methods (one
transaction per day, as a batched send would). The old representation kept a `sent` row per reader and covered
paper: its size is measured on one day's rows in the old table and multiplied by the year's count (it is not
built: tens of millions of rows). At the end a copy is pruned as the daemon would (NEWSLETTER_KEEP_EDITIONS_DAYS
and NEWSLETTER_KEEP_PAPERS_DAYS at their defaults, or as given), and pruned again a day later (the daily cost).

Run: .venv/bin/python bench/storage_bench.py [--readers 10000] [--days 365] [--papers 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from render_bench import TOPICS, load_papers, selections

from newsletter import config
from newsletter.model.digest import Layout, Shelf
from newsletter.model.paper import Paper
from newsletter.model.topics import Matcher
from newsletter.storage.pruning import Keep
from newsletter.storage.store import Store

START = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
SELECTIONS = 200
CAP = 8


def matcher() -> Matcher:
    topics = "\n".join(f"  {name}:\n    title: {title}\n    {rule}" for name, (title, rule) in TOPICS.items())
    conf = config.parse(
        f"sources:\n  - {{name: hf, type: hf_daily}}\n  - {{name: arxiv, type: arxiv_rss, categories: [cs]}}\ntopics:\n{topics}\n", "bench.yaml"
    )
    return Matcher(list(conf.topics.values()))


def day_layout(day: datetime, chosen: tuple[str, ...], papers: list[Paper], topics: dict[str, tuple[str, ...]]) -> Layout:
    """A selection's edition of one day: each paper under the first of the selection's topics that takes it."""
    shelves: dict[str, list[str]] = {name: [] for name in chosen}
    for paper in papers:
        first = next((t for t in topics[paper.id.split("-", 1)[1]] if t in shelves), None)
        if first:
            shelves[first].append(paper.id)
    return Layout(day.date(), tuple(Shelf(t, TOPICS[t][0], tuple(ids[:CAP]), tuple(ids[CAP:])) for t, ids in shelves.items() if ids))


def size(path: Path) -> tuple[int, int]:
    """(bytes in use, file bytes) of a database and its WAL."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page, count, free = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
    finally:
        db.close()
    return page * (count - free), path.stat().st_size


def old_sent_bytes_per_row(folder: Path, readers: int, layouts: list[Layout], when: datetime) -> float:
    """The old `sent` table's bytes per row (its primary-key index included), measured on one day of rows."""
    path = folder / "old-sent.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE sent (subscriber TEXT NOT NULL, paper_id TEXT NOT NULL, edition TEXT NOT NULL, sent_at TEXT NOT NULL, PRIMARY KEY (subscriber, paper_id))"
    )
    rows = [(f"reader{r}@example.org", pid, when.date().isoformat(), when.isoformat()) for r in range(readers) for pid in layouts[r % len(layouts)].ids]
    db.executemany("INSERT INTO sent VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    used, _ = size(path)
    return used / max(1, len(rows))


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--papers", type=int, default=300, help="papers stored per day")
    parser.add_argument("--keep-editions-days", type=int, default=90)
    parser.add_argument("--keep-papers-days", type=int, default=365)
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; {args.readers:,} readers, {args.days} days, {args.papers} papers a day"
    )

    pool = load_papers()
    m = matcher()
    topics = {p.id: tuple(m.topics_for(p)) for p in pool}
    chosen = selections(SELECTIONS)
    folder = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    path = folder / "state.db"
    old_rows = 0
    old_per_row = 0.0
    started = time.monotonic()
    with Store(path) as store:
        for d in range(args.days):
            day = START + timedelta(days=d)
            offset = (d * args.papers) % len(pool)
            base = (pool + pool)[offset : offset + args.papers]
            papers = [dataclasses.replace(p, id=f"d{d}-{p.id}") for p in base]
            store.add_papers(papers, day)
            hf = [p for p in papers if p.score is not None]
            for hour in (0, 6, 12, 18):
                store.record_popularity([dataclasses.replace(p, score=(p.score or 0) + hour) for p in hf], day + timedelta(hours=hour), 24)
            store.save_validators(f"https://huggingface.co/api/daily_papers?date={day.date()}", '"etag"', None, day)
            layouts = [day_layout(day, sel, papers, topics) for sel in chosen]
            edition = day.date().isoformat()
            sent_at = day + timedelta(hours=1)
            with store.transaction():
                for r in range(args.readers):
                    who = f"reader{r}@example.org"
                    if store.plan_delivery(edition, who, layouts[r % SELECTIONS], day) and store.claim(edition, who, sent_at):
                        store.mark_sent(edition, who, f"<{edition}.{r}@example.org>", "250 2.0.0 Ok", sent_at)
            old_rows += sum(len(layouts[r % SELECTIONS].ids) for r in range(args.readers))
            if d == 0:
                old_per_row = old_sent_bytes_per_row(folder, args.readers, layouts, sent_at)
            if d % 30 == 29 or d == args.days - 1:
                used, _ = size(path)
                print(f"  day {d + 1:3d}: {mb(used)} in use, {time.monotonic() - started:.0f} s", flush=True)
    simulated = time.monotonic() - started

    used, file = size(path)
    old = old_rows * old_per_row
    print(f"after {args.days} days without prune: {mb(used)} in use ({mb(file)} file), {used / args.readers / 1e3:.1f} KB per reader")
    print(
        f"the old per-paper `sent` table would have added {old_rows:,} rows ≈ {mb(old)} ({old_per_row:.0f} B a row): "
        f"{mb(used + old)} in all, {(used + old) / args.readers / 1e3:.1f} KB per reader"
    )

    pruned_path = folder / "pruned.db"
    shutil.copy(path, pruned_path)
    end = START + timedelta(days=args.days)
    for label, now in (("first prune (the whole backlog)", end), ("daily prune (one day more)", end + timedelta(days=1))):
        keep = Keep(
            deliveries=now - timedelta(days=args.keep_editions_days),
            papers=now - timedelta(days=args.keep_papers_days),
            candidates=now - timedelta(days=7),
            snapshots=now - timedelta(hours=24),
            http_cache=now - timedelta(days=7),
            urls=frozenset(),
        )
        with Store(pruned_path) as store:
            t = time.monotonic()
            result = store.prune(keep, now=now)
            took = time.monotonic() - t
        print(f"{label}: {took:.2f} s; removed " + ", ".join(f"{n:,} {kind.replace('_', ' ')}" for kind, n in result.items()))
    used_pruned, file_pruned = size(pruned_path)
    print(
        f"with prune (editions {args.keep_editions_days} days, paper bodies {args.keep_papers_days} days): {mb(used_pruned)} in use "
        f"({mb(file_pruned)} file until VACUUM; SQLite reuses the free pages), {used_pruned / args.readers / 1e3:.1f} KB per reader"
    )
    print(f"simulation {simulated:.0f} s; files in {folder} (removed)")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
