"""Benchmark of the topic matcher against the straightforward per-keyword regex loop, which also serves
as the test oracle (tests/test_topics.py uses `reference_test`, `ReferenceMatcher` and `load_arxiv_papers`),
and of matching with scoring on (`ranking.match_all`: topics, idf, a score per (paper, topic), the sort keys),
as every send does it.

Run: .venv/bin/python bench/topics_bench.py [--papers 10000] [--topics 200] [--reference 300]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser

from newsletter.model.paper import Paper
from newsletter.model.ranking import SORTS, Figures, Snapshot, match_all
from newsletter.model.topics import Keyword, Matcher, Topic, parse_keyword

FIXTURE = Path("/work/shared/fixtures/arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml")
LOCAL_FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/arxiv_rss" / FIXTURE.name
SOURCES = (("arxiv",), ("hf",), ("arxiv", "hf"))
# words that make no research topic: generated topics avoid terms containing them
FILLER = set(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "also",
        "among",
        "an",
        "analysis",
        "and",
        "any",
        "approach",
        "are",
        "as",
        "at",
        "based",
        "be",
        "been",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "data",
        "demonstrate",
        "different",
        "do",
        "does",
        "each",
        "effect",
        "effects",
        "either",
        "from",
        "further",
        "has",
        "have",
        "here",
        "how",
        "however",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "method",
        "methods",
        "model",
        "models",
        "more",
        "most",
        "new",
        "not",
        "of",
        "on",
        "one",
        "only",
        "or",
        "other",
        "our",
        "over",
        "paper",
        "present",
        "problem",
        "propose",
        "proposed",
        "provide",
        "recent",
        "result",
        "results",
        "several",
        "show",
        "shown",
        "some",
        "such",
        "study",
        "studied",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "trained",
        "two",
        "under",
        "use",
        "used",
        "using",
        "various",
        "very",
        "via",
        "was",
        "we",
        "well",
        "were",
        "what",
        "when",
        "where",
        "whether",
        "which",
        "while",
        "who",
        "will",
        "with",
        "within",
        "without",
        "work",
        "would",
    ]
)


def reference_test(kw: Keyword, prefilter: bool = False) -> Callable[[Paper], bool]:
    """The rule contract restated as one plain regex per keyword, independent of the matcher's engine.

    `prefilter` skips the regex of a title/abstract phrase whose first word run does not even occur in the
    lowercased field: a necessary condition that only saves time (the tests use it, the benchmark does not).
    """
    if kw.regex is not None:
        pattern = re.compile(kw.regex, re.IGNORECASE)
    elif kw.field in ("author", "category"):
        pattern = re.compile(re.escape(kw.words[0]) + (".*" if kw.prefix else ""), re.IGNORECASE)
    else:
        glue = r"[\s\-\u2010\u2011]*"
        tail = r"\w*" if kw.prefix else ""
        pattern = re.compile(r"(?<!\w)" + glue.join(map(re.escape, kw.words)) + tail + r"(?!\w)", re.IGNORECASE)
    if kw.field in ("author", "category"):
        search = pattern.search if kw.regex is not None else pattern.fullmatch
        attr = "authors" if kw.field == "author" else "categories"
        return lambda p: any(search(" ".join(v.split())) for v in getattr(p, attr))
    fields = ("title", "abstract") if kw.field is None else (kw.field,)
    if prefilter and kw.regex is None:
        run = re.search(r"\w+", " ".join(kw.words).lower())
        assert run is not None
        return lambda p: any(run[0] in getattr(p, f).lower() and pattern.search(getattr(p, f)) for f in fields)
    return lambda p: any(pattern.search(getattr(p, f)) for f in fields)


class ReferenceMatcher:
    """For each paper, for each topic, for each keyword: `re.search` — slow, obviously right."""

    def __init__(self, topics: Sequence[Topic], prefilter: bool = False) -> None:
        def tests(keywords: tuple[str, ...]) -> list[Callable[[Paper], bool]]:
            return [reference_test(parse_keyword(k), prefilter) for k in keywords]

        self.topics = [(t, tests(t.any), tests(t.all), tests(t.none)) for t in topics]

    def topics_for(self, paper: Paper) -> list[str]:
        """Names of the matching topics, in order, evaluated clause by clause."""
        score = paper.score or 0
        return [
            t.name
            for t, any_, all_, none in self.topics
            if (not any_ or any(k(paper) for k in any_))
            and all(k(paper) for k in all_)
            and not any(k(paper) for k in none)
            and score >= t.min_score
            and (not t.sources or bool(set(t.sources) & set(paper.sources)))
        ]


def load_arxiv_papers(path: Path) -> list[Paper]:
    """The papers of an arXiv RSS file, parsed with feedparser as the arxiv source would see them."""
    papers = []
    for e in feedparser.parse(str(path)).entries:
        summary = e.get("summary", "")
        _, found, abstract = summary.partition("Abstract:")
        authors = tuple(a.strip() for a in e.get("author", "").split(",") if a.strip())
        papers.append(
            Paper(
                id=e.link.rsplit("/", 1)[-1],
                title=" ".join(e.title.split()),
                abstract=abstract.strip() if found else summary,
                authors=authors,
                categories=tuple(t["term"] for t in e.get("tags", [])),
            )
        )
    return papers


def _doc_counts(papers: Sequence[Paper], pattern: re.Pattern[str]) -> list[tuple[str, int]]:
    """(term, number of papers containing it), most frequent first, ties alphabetical (deterministic)."""
    counts: collections.Counter[str] = collections.Counter()
    for p in papers:
        counts.update({m.lower() for m in pattern.findall(f"{p.title}\n{p.abstract}")})
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def research_topics(papers: Sequence[Paper], n: int, seed: int = 2024) -> list[Topic]:
    """`n` topics of 5 keywords drawn from the papers' own vocabulary: words, phrases, hyphenated terms,
    trailing-* stems, and now and then a none/all keyword, a field prefix, a regex, a score or source rule."""
    rng = random.Random(seed)
    docs = len(papers)

    def band(pattern: str, low: int, high: float) -> list[str]:
        terms = _doc_counts(papers, re.compile(pattern))
        return [t for t, c in terms if low <= c <= high * docs and not set(re.split("[ -]", t)) & FILLER]

    words = band(r"\b[A-Za-z]{6,}\b", 2, 0.01)
    phrases = band(r"\b[A-Za-z]{4,} [A-Za-z]{4,}\b", 3, 0.03)
    hyphenated = band(r"\b[A-Za-z]{2,}-[A-Za-z]{3,}\b", 3, 0.03)
    common = band(r"\b[A-Za-z]{6,}\b", 1, 1.0)[:60]
    stems = [w for w in words if len(w) >= 9]
    topics = []
    for i in range(n):
        kws = [
            rng.choice(words),
            rng.choice(words).capitalize(),
            rng.choice(phrases),
            rng.choice(hyphenated),
            (w := rng.choice(stems))[: len(w) - 3] + "*",
        ]
        if i % 10 == 3:
            kws[0] = "title:" + kws[0]
        if i % 67 == 7:
            kws[1] = f"/{re.escape(rng.choice(words))}s?/"
        if i % 40 == 11:
            kws[1] = "category:" + rng.choice(("cs.*", "cs.CL", "quant-ph", "math.*"))
        none = (kws.pop(),) if i % 7 == 0 else ()
        all_ = (rng.choice(common),) if i % 11 == 0 else ()
        if all_:
            kws.pop()
        topics.append(
            Topic(
                name=f"topic-{i:03d}",
                title=f"Topic {i}",
                any=tuple(kws),
                all=all_,
                none=none,
                min_score=5 if i % 13 == 0 else 0,
                sources=("hf",) if i % 17 == 0 else None,
            )
        )
    return topics


def _earlier(arxiv_id: str, months: int) -> str:
    """The id's number `months` earlier ("2411.17875" three back: "2408.17875"): a copy gets an arXiv id of its own,
    as papers in a real store have (a "#3" suffix made every id one of the few from other feeds that tie on their
    natural order)."""
    head, _, number = arxiv_id.partition(".")
    month = int(head[:2]) * 12 + int(head[2:4]) - 1 - months
    return f"{month // 12:02d}{month % 12 + 1:02d}.{number}"


def corpus(papers: Sequence[Paper], n: int, seed: int = 7) -> list[Paper]:
    """`n` papers made of shuffled copies of the real ones, with varied ids, sources and scores."""
    rng = random.Random(seed)
    out: list[Paper] = []
    taken: set[str] = set()
    round_ = 0
    while len(out) < n:
        batch = list(papers)
        rng.shuffle(batch)
        for p in batch[: n - len(out)]:
            score = rng.choice((None, rng.randint(0, 40)))
            back = 12 * round_  # a year back per round of copies, then a month more while that id is taken
            while (copy := _earlier(p.id, back)) in taken:
                back += 1
            taken.add(copy)
            out.append(dataclasses.replace(p, id=copy, sources=rng.choice(SOURCES), score=score))
        round_ += 1
    return out


NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def ranked_inputs(papers: Sequence[Paper], topics: Sequence[Topic]) -> tuple[list[Topic], list[Paper], dict[str, list[Snapshot]]]:
    """The topics with every sort in turn (rising windows of 6 to 48 h), the papers dated over the last 10 days
    with comment and star counts where they have upvotes, and two snapshots 12 h apart for each of those."""
    rng = random.Random(11)
    sorted_topics = [dataclasses.replace(t, sort=SORTS[i % 4], rising_hours=(6, 24, 48)[i % 3]) for i, t in enumerate(topics)]
    dated, history = [], {}
    for p in papers:
        published = NOW - timedelta(hours=rng.randint(0, 240))
        counts = {} if p.score is None else {"comments": rng.randint(0, 9), "stars": rng.choice((None, rng.randint(0, 5000)))}
        dated.append(dataclasses.replace(p, published=published, **counts))
        if p.score is not None:
            before = Figures(max(0, p.score - rng.randint(0, 20)), 0, None)
            history[p.id] = [Snapshot(NOW - timedelta(hours=18), before), Snapshot(NOW - timedelta(hours=6), Figures.of(dated[-1]))]
    return sorted_topics, dated, history


def _rate(fn: Callable[[Paper], list[str]], papers: Sequence[Paper], repeat: int) -> tuple[list[float], list[list[str]]]:
    """Papers/s of each of `repeat` runs, and the results of the last run."""
    rates, results = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        results = [fn(p) for p in papers]
        rates.append(len(papers) / (time.perf_counter() - start))
    return rates, results


def main() -> int:
    """Print papers/s of the matcher and of the reference loop, their ratio, and whether results agree."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=10_000)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--reference", type=int, default=300, help="papers to run the slow reference loop on")
    ap.add_argument("--fixture", type=Path, default=FIXTURE if FIXTURE.exists() else LOCAL_FIXTURE)
    args = ap.parse_args()

    real = load_arxiv_papers(args.fixture)
    topics = research_topics(real, args.topics)
    papers = corpus(real, args.papers)
    words = sum(len(p.title.split()) + len(p.abstract.split()) for p in papers) / len(papers)
    print(f"{len(papers)} papers ({len(real)} distinct, {words:.0f} words each on average), {len(topics)} topics")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores{' (busy machine: expect lower figures)' if load > 1 else ''}")

    start = time.perf_counter()
    matcher = Matcher(topics)
    print(f"compile: {(time.perf_counter() - start) * 1000:.1f} ms")
    rates, results = _rate(matcher.topics_for, papers, repeat=5)
    fast = max(rates)
    matched = sum(map(bool, results)) / len(results)
    print(f"matcher:   {fast:10,.0f} papers/s  ({matched:.0%} of papers match a topic)")
    print(f"           {statistics.median(rates):10,.0f} median of {len(rates)} runs, {min(rates):,.0f} to {fast:,.0f}")

    ranked_topics, dated, history = ranked_inputs(papers, topics)
    ranked = Matcher(ranked_topics)
    scoring = []
    for _ in range(5):
        start = time.perf_counter()
        scored = match_all(ranked, dated, now=NOW, history=history)
        scoring.append(len(dated) / (time.perf_counter() - start))
    pairs = sum(len(m.keys) for m in scored.values())
    print(f"scoring:   {max(scoring):10,.0f} papers/s  (topics and a score per (paper, topic): {pairs / len(dated):.1f} per paper, every sort)")
    print(f"           {statistics.median(scoring):10,.0f} median of {len(scoring)} runs, {min(scoring):,.0f} to {max(scoring):,.0f}")

    sample = papers[: args.reference]
    reference = ReferenceMatcher(topics)
    (slow,), expected = _rate(reference.topics_for, sample, repeat=1)
    print(f"reference: {slow:10,.0f} papers/s  (per-keyword re.search loop, on {len(sample)} papers)")
    print(f"ratio:     {fast / slow:10,.0f}x")
    wrong = [p.id for p, want, got in zip(sample, expected, results[: len(sample)], strict=True) if want != got]
    print(f"identical results on {len(sample)} papers: {'yes' if not wrong else 'NO: ' + ', '.join(wrong[:5])}")
    print(f"target ≥ 20,000 papers/s with scoring on: {'met' if statistics.median(scoring) >= 20_000 else 'MISSED'} (median {statistics.median(scoring):,.0f})")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
