"""Benchmark of a send's main-thread work before SMTP: each reader's digest composed, rendered and made into their
message, grouped by selection (the product's path, `Planner.next_digest`) against composing per reader (`compose`
for each reader, as sends did before), in the same run on the same stored papers.

The config is realistic: 12 keyword topics over the bundled arXiv sample (the whole 28 Nov 2024 listing) and 30
Hugging Face papers, `max_papers_per_topic: 6`, N readers over S selections (one to four topics; a third of them
also with personal keywords, some with a `max_papers` cap or a time zone where it is another day). Each path
starts from a fresh planner, renderer and matcher's caches; medians of --runs runs, load average printed.

Run: .venv/bin/python bench/compose_bench.py [--readers 3000] [--selections 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter import config as config_mod
from newsletter import environment, pipeline
from newsletter.mail.render import Renderer
from newsletter.model.config import Config, Subscriber
from newsletter.model.digest import Digest, compose
from newsletter.pipeline.courier import Letters
from newsletter.pipeline.planning import Planner
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
FEEDS = ROOT / "samples" / "feeds"
TOPICS = {
    "agents": ("LLM agents", "[agent*, tool use, agentic]"),
    "tuning": ("Fine-tuning", "[fine-tuning, LoRA, PEFT, adapter*, distillation]"),
    "continual": ("Continual learning", "[continual learning, catastrophic forgetting]"),
    "retrieval": ("Retrieval", "[retrieval*, RAG]"),
    "vision": ("Vision", "[image*, vision, video]"),
    "rl": ("Reinforcement learning", "[reinforcement learning, reward*, policy]"),
    "graphs": ("Graphs", "[graph*]"),
    "quantum": ("Quantum", "[quantum]"),
    "galaxies": ("Galaxies", "[galax*, dark matter]"),
    "proteins": ("Proteins", "[protein*, amyloid*]"),
    "robots": ("Robotics", "[robot*, manipulation]"),
    "llms": ("Language models", "[large language model*, LLM*, transformer*]"),
}
KEYWORDS = ["diffusion", "benchmark*", "uncertainty", "causal*", "federated", "sparse", "/neural (network|field)s?/", "author:Yann LeCun", "category:cs.CL"]


def make_config(readers: int, selections: int, seed: int = 11) -> str:
    """subscribers.yaml for `readers` readers spread evenly over `selections` distinct selections."""
    rng = random.Random(seed)
    chosen: set[tuple[tuple[str, ...], tuple[str, ...], int | None, str]] = set()
    while len(chosen) < selections:
        topics = tuple(rng.sample(sorted(TOPICS), rng.randint(1, 4)))
        keywords = tuple(rng.sample(KEYWORDS, rng.randint(1, 3))) if rng.random() < 1 / 3 else ()
        cap = 10 if rng.random() < 0.1 else None
        zone = "Pacific/Kiritimati" if rng.random() < 0.05 else "UTC"
        chosen.add((topics, keywords, cap, zone))
    ordered = sorted(chosen, key=repr)
    rng.shuffle(ordered)
    lines = []
    for i in range(readers):
        topics, keywords, cap, zone = ordered[i % selections]
        lines.append(f"  - email: reader{i:06d}@example.org\n    name: Reader {i}\n    topics: [{', '.join(topics)}]\n    timezone: {zone}")
        if keywords:
            lines.append("    keywords: [" + ", ".join(f"'{k}'" for k in keywords) + "]")
        if cap:
            lines.append(f"    max_papers: {cap}")
    topics_yaml = "\n".join(f"  {name}:\n    title: {title}\n    any: {rule}" for name, (title, rule) in TOPICS.items())
    return (
        "settings:\n  max_papers_per_topic: 6\n"
        f"sources:\n  - {{name: hf, type: hf_daily, url: {FEEDS / 'personal-news-feed__daily_papers_2026-07-31.json'}}}\n"
        f"  - {{name: arxiv, type: arxiv_rss, categories: [cs, stat, q-bio, astro-ph, quant-ph], url: {FEEDS / 'aioarxiv__rss_all_archives_2024-11-28_full.xml'}}}\n"
        f"topics:\n{topics_yaml}\nsubscribers:\n" + "\n".join(lines) + "\n"
    )


def per_reader(planner: Planner, subscriber: Subscriber) -> Digest | None:
    """The digest composed for this reader alone, from the planner's shared matches: how sends composed before grouping."""
    sent = planner.store.sent_paper_ids(subscriber.email)
    day = planner.now.astimezone(ZoneInfo(subscriber.timezone)).date()
    return compose(planner.config, subscriber, planner.matcher, planner.papers, planner.matches, sent, day)


def mails(config: Config, store: Store, now: datetime, digest_of: Callable[[Planner, Subscriber], Digest | None]) -> tuple[float, float, int, int]:
    """Seconds composing every reader's digest, seconds for that plus rendering and making each message, messages, bytes."""
    env = environment.load()
    planner = Planner(config, store, now)
    letters = Letters(env, Renderer(env.base_url, env.templates), "bench-secret", {})
    composing = 0.0
    count = size = 0
    started = time.perf_counter()
    for subscriber in config.subscribers:
        t = time.perf_counter()
        digest = digest_of(planner, subscriber)
        composing += time.perf_counter() - t
        if digest is not None:
            draft, stationery = letters.make(subscriber, digest, letters.layout(digest), "bench")
            count, size = count + 1, size + len(stationery.fill(draft).data)
    return composing, time.perf_counter() - started, count, size


@contextmanager
def stocked(readers: int, selections: int) -> Iterator[tuple[Config, Store, datetime]]:
    """A fresh folder with the config and a database holding the fetched sample papers."""
    with tempfile.TemporaryDirectory(prefix="compose-bench-") as tmp:
        folder = Path(tmp)
        (folder / "subscribers.yaml").write_text(make_config(readers, selections), encoding="utf-8")
        os.environ.update({"NEWSLETTER_DB": str(folder / "state.db"), "NEWSLETTER_OUTBOX": str(folder / "outbox"), "NEWSLETTER_SECRET_KEY": "bench-secret"})
        config = config_mod.load(folder / "subscribers.yaml")
        now = utcnow()
        with Store(folder / "state.db") as store:
            pipeline.fetch(config, environment.load(), store, now=now)
            yield config, store, now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=3000)
    parser.add_argument("--selections", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with stocked(args.readers, args.selections) as (config, store, now):
        paths: dict[str, Callable[[Planner, Subscriber], Digest | None]] = {"per reader": per_reader, "grouped": Planner.next_digest}
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for _ in range(args.runs):
            for name, digest_of in paths.items():  # interleaved, so both see the same load
                composing, whole, count, size = mails(config, store, now, digest_of)
                timings[name].append((composing, whole))
        print(f"{len(config.subscribers)} readers over {args.selections} selections; {count} mails of {size / max(count, 1) / 1024:.0f} KiB on average")
        medians = {name: (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)) for name, runs in timings.items()}
        for name, (composing, whole) in medians.items():
            print(f"{name:>10}: compose {composing:6.2f} s ({len(config.subscribers) / composing:7.0f} readers/s); compose+render+message {whole:6.2f} s")
        (slow_c, slow_w), (fast_c, fast_w) = medians["per reader"], medians["grouped"]
        print(f"grouped is {slow_c / fast_c:.1f}x faster composing, {slow_w / fast_w:.1f}x with rendering and messages (medians of {args.runs})")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
