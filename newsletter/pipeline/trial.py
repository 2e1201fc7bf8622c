"""`newsletter topics try`: the rules run over stored papers, so a user sees what an edit would select before anyone gets mail."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from newsletter.mail.filters import mark_text
from newsletter.model.digest import rank
from newsletter.model.paper import Paper
from newsletter.model.topics import Matcher, Topic

SAMPLES = 3  # papers shown per topic (and of those no topic takes)


@dataclass(frozen=True)
class TopicTrial:
    """One topic's share of the stored papers: how many it takes and its best few."""

    topic: Topic
    label: str
    count: int
    samples: tuple[Paper, ...]


@dataclass(frozen=True)
class Trial:
    """The outcome of running every rule over a set of stored papers."""

    total: int
    topics: tuple[TopicTrial, ...]
    unmatched: int  # papers no topic takes
    unmatched_samples: tuple[Paper, ...]
    complete: bool  # every topic is shown (no TOPIC was asked for), so the unmatched papers are worth showing


def run_trial(
    matcher: Matcher, topics: Sequence[Topic], labels: dict[str, str], papers: Iterable[Paper], only: str | None = None, samples: int = SAMPLES
) -> Trial:
    """Match every paper once; keep per topic the count and the top papers by score, then date (as the digest orders them).

    `topics` are those `matcher` was compiled from; `only` restricts the report to one topic name, while papers
    no topic takes are still judged against all topics."""
    taken: dict[str, list[Paper]] = {t.name: [] for t in topics}
    unmatched: list[Paper] = []
    total = 0
    for paper in papers:
        total += 1
        names = matcher.topics_for(paper)
        for name in names:
            taken[name].append(paper)
        if not names:
            unmatched.append(paper)
    shown = [t for t in topics if only is None or t.name == only]
    return Trial(
        total=total,
        topics=tuple(TopicTrial(t, labels.get(t.name, t.name), len(taken[t.name]), tuple(sorted(taken[t.name], key=rank)[:samples])) for t in shown),
        unmatched=len(unmatched),
        unmatched_samples=tuple(sorted(unmatched, key=rank)[:samples]),
        complete=only is None,
    )


def format_trial(trial: Trial, matcher: Matcher, days: int) -> list[str]:
    """The lines `topics try` prints: counts per topic with marked titles, then the papers no topic takes."""
    lines = [f"{trial.total} papers first seen in the last {days} day{'s' if days != 1 else ''}"]
    width = max((len(t.label) for t in trial.topics), default=0)
    for t in trial.topics:
        lines.append(f"{t.label.ljust(width)}  {t.count:5}")
        for paper in t.samples:
            lines.append("    " + marked(matcher, paper, t.topic.name))
    if not trial.complete:
        return lines
    lines.append(f"{'matched by no topic'.ljust(width)}  {trial.unmatched:5}")
    for paper in trial.unmatched_samples:
        lines.append(f"    {paper.id}  {' '.join(paper.title.split())}")
    return lines


def marked(matcher: Matcher, paper: Paper, topic: str) -> str:
    """`id  title` with the topic's matched words as *word*, plus the words it matched in the abstract."""
    marks = matcher.marks(paper, [topic])
    title = mark_text(paper.title, marks.title)
    words = list(dict.fromkeys(paper.abstract[a:b].lower() for a, b in marks.abstract))
    extra = f"  [abstract: {', '.join(f'*{w}*' for w in words)}]" if words else ""
    return f"{paper.id}  {' '.join(title.split())}{extra}"
