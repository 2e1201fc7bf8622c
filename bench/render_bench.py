"""Benchmark of building digest mails: 10,000 subscribers over 200 distinct topic selections.

The fast path is the product's: render and inline once per distinct digest (Renderer.render caches by
content, and each paper card once per send), serialise its MIME message once with the reader placeholders in it (mailer.Stationery), then per
subscriber sign the two link tokens and join the reader's headers, name, address and tokens into those bytes
(Stationery.letter with the rendered digest's placeholder values), as pipeline.send does. The naive path renders,
inlines and builds the message per subscriber (Renderer with no cache + build_message + as_bytes); it is
timed on a sample and extrapolated.

Run: .venv/bin/python bench/render_bench.py [--subscribers 10000] [--selections 200] [--naive 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import time
from datetime import date
from email.headerregistry import Address
from pathlib import Path

from newsletter import config
from newsletter.ingest.sources import parse
from newsletter.mail import tokens
from newsletter.mail.message import Headers, Stationery, build_message
from newsletter.mail.render import Reader, Renderer
from newsletter.model.config import Config, Source
from newsletter.model.digest import Digest, all_topics, compose
from newsletter.model.paper import Paper
from newsletter.model.ranking import match_all
from newsletter.model.topics import Matcher

ROOT = Path(__file__).resolve().parent.parent
FEEDS = ROOT / "samples" / "feeds"
BASE_URL = "https://digest.example.org"
SECRET = "bench-secret"
SENDER = Address("Paper Digest", addr_spec="digest@example.org")
LIST_ID = "Paper digest <digest.example.org>"
DAY = date(2026, 11, 25)
# Twelve topics over the bundled arXiv and Hugging Face captures; a selection is 1-4 of them.
TOPICS = {
    "trending": ("Trending on Hugging Face", "sources: [hf]"),
    "agents": ("LLM agents", "any: [agent*, tool use, agentic]"),
    "tuning": ("Fine-tuning", "any: [fine-tuning, LoRA, PEFT, adapter*, distillation]"),
    "continual": ("Continual learning", "any: [continual learning, catastrophic forgetting]"),
    "retrieval": ("Retrieval", "any: [retrieval*, RAG]"),
    "vision": ("Vision", "any: [image*, vision, video]"),
    "rl": ("Reinforcement learning", "any: [reinforcement learning, reward*, policy]"),
    "graphs": ("Graphs", "any: [graph*]"),
    "quantum": ("Quantum", "any: [quantum]"),
    "galaxies": ("Galaxies", "any: [galax*, dark matter]"),
    "proteins": ("Proteins", "any: [protein*, amyloid*]"),
    "robots": ("Robotics", "any: [robot*, manipulation]"),
}


def load_papers() -> list[Paper]:
    """The bundled Hugging Face and arXiv captures, parsed as a fetch would."""
    hf = parse(Source(name="hf", type="hf_daily"), (FEEDS / "personal-news-feed__daily_papers_2026-07-31.json").read_bytes(), "https://example.org/hf")
    arxiv = parse(
        Source(name="arxiv", type="arxiv_rss", announce_types=("new", "cross")),
        (FEEDS / "aioarxiv__rss_all_archives_2024-11-28_full.xml").read_bytes(),
        "https://example.org/rss",
    )
    return hf.papers + arxiv.papers


def selections(count: int, seed: int = 7) -> list[tuple[str, ...]]:
    """`count` distinct topic selections of one to four topics."""
    pool = [c for k in (1, 2, 3, 4) for c in itertools.combinations(TOPICS, k)]
    return random.Random(seed).sample(pool, count)


def make_config(chosen: list[tuple[str, ...]]) -> Config:
    """One subscriber per selection; subscribers sharing a selection share its digest."""
    topics = "\n".join(f"  {name}:\n    title: {title}\n    {rule}" for name, (title, rule) in TOPICS.items())
    subs = "\n".join(f"  - email: s{i}@example.org\n    topics: [{', '.join(sel)}]" for i, sel in enumerate(chosen))
    text = (
        "settings:\n  max_papers_per_topic: 8\n"
        "sources:\n  - {name: hf, type: hf_daily}\n  - {name: arxiv, type: arxiv_rss, categories: [cs]}\n"
        f"topics:\n{topics}\nsubscribers:\n{subs}\n"
    )
    return config.parse(text, "bench.yaml")


def distinct_digests(conf: Config, papers: list[Paper]) -> list[Digest]:
    matcher = Matcher(all_topics(conf))
    matches = match_all(matcher, papers)
    digests = [compose(conf, s, matcher, papers, matches, set(), DAY) for s in conf.subscribers]
    return [d for d in digests if d is not None]


def reader(i: int) -> Reader:
    email = f"reader{i}@example.org"
    return Reader(
        email,
        f"Reader {i}",
        tokens.sign(SECRET, tokens.UNSUBSCRIBE, email),
        tokens.sign(SECRET, tokens.PREFERENCES, email),
        tokens.sign(SECRET, tokens.EDITION, tokens.edition_value(email, "0" * 32)),
    )


def address(r: Reader) -> Address:
    """As the pipeline makes it: from the validated config address, without re-parsing it."""
    local, _, domain = r.email.rpartition("@")
    return Address(display_name=r.name, username=local, domain=domain)


def headers(r: Reader, subject: str) -> Headers:
    return Headers(address(r), subject, f"{BASE_URL}/unsubscribe/{r.unsubscribe_token}", LIST_ID)


def fast(digests: list[Digest], subscribers: int) -> tuple[float, int, float]:
    """Seconds for every subscriber's full MIME bytes, total bytes, and seconds of that spent rendering."""
    renderer = Renderer(BASE_URL)
    stationery: dict[int, Stationery] = {}
    total = 0
    started = time.perf_counter()
    render_time = 0.0
    for i in range(subscribers):
        slot = i % len(digests)
        t = time.perf_counter()
        rendered = renderer.render(digests[slot])
        if slot not in stationery:
            stationery[slot] = Stationery(SENDER, rendered.subject, LIST_ID, rendered.text, rendered.html, rendered.placeholders.names)
            render_time += time.perf_counter() - t
        r = reader(i)
        total += len(stationery[slot].letter(headers(r, rendered.subject), rendered.placeholders.values(r)).data)
    return time.perf_counter() - started, total, render_time


def naive(digests: list[Digest], sample: int) -> float:
    """Seconds per subscriber when each one is rendered, inlined and built from scratch."""
    started = time.perf_counter()
    for i in range(sample):
        renderer = Renderer(BASE_URL)  # a fresh cache: nothing shared between subscribers
        rendered = renderer.render(digests[i % len(digests)])
        r = reader(i)
        html, text = renderer.personalise(rendered, r)
        build_message(SENDER, headers(r, rendered.subject), text, html).as_bytes()
    return (time.perf_counter() - started) / sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--selections", type=int, default=200)
    parser.add_argument("--naive", type=int, default=100, help="subscribers timed on the naive path")
    parser.add_argument("--runs", type=int, default=3, help="runs of the fast path: the median counts")
    args = parser.parse_args()

    papers = load_papers()
    digests = distinct_digests(make_config(selections(args.selections)), papers)
    sizes = sorted(d.count for d in digests)
    print(f"{len(papers)} papers, {len(digests)} distinct digests ({sizes[0]}-{sizes[-1]} papers, median {sizes[len(sizes) // 2]})")

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    runs = [fast(digests, args.subscribers) for _ in range(args.runs)]  # each with a fresh renderer: nothing kept between runs
    for seconds, total, render_time in runs:
        rate = args.subscribers / seconds
        steady = (args.subscribers - len(digests)) / (seconds - render_time)
        print(
            f"fast:  {args.subscribers} messages in {seconds:.2f} s = {rate:,.0f} messages/s overall; "
            f"{render_time:.2f} s of it rendering+inlining {len(digests)} digests once ({render_time / len(digests) * 1000:.0f} ms each), "
            f"then {steady:,.0f} messages built/s (sign tokens, join reader values into the MIME bytes; {total / args.subscribers / 1024:.0f} KiB each)"
        )
    seconds = statistics.median(s for s, _, _ in runs)
    rate = args.subscribers / seconds
    print(f"median of {len(runs)} runs: {rate:,.0f} messages/s overall (target >= 4,000: {'met' if rate >= 4000 else 'MISSED'})")
    per_naive = naive(digests, args.naive)
    naive_total = per_naive * args.subscribers
    print(
        f"naive: {per_naive * 1000:.1f} ms per subscriber (sample of {args.naive}) → {naive_total:.0f} s for {args.subscribers}, "
        f"{1 / per_naive:,.0f} messages/s"
    )
    print(f"ratio: the fast path is {naive_total / seconds:.0f}× faster than rendering and inlining per subscriber")


if __name__ == "__main__":
    main()
