"""`newsletter topics try`, `topics explain` and `preview`: the rules and the ranking run over stored papers, so a user
sees what an edit would select, in what order and why, and the next digest, before anyone gets mail."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from newsletter.mail import tokens
from newsletter.mail.filters import mark_text
from newsletter.mail.render import Reader
from newsletter.model.config import AUTHORS_TOPIC, KEYWORDS_TOPIC, Config, Subscriber
from newsletter.model.digest import Layout, subscriber_topics
from newsletter.model.paper import Paper
from newsletter.model.ranking import Figures, Score, field_weights, idfs, matched_words, tie_key
from newsletter.model.topics import Explanation, Found, Matcher, Topic
from newsletter.pipeline.planning import Planner, reader_for

LIMIT = 20  # matches listed per topic (and papers of no topic) unless --limit or --all say otherwise


@dataclass(frozen=True)
class Listed:
    """One match as `topics try` lists it: the paper, its score in the topic and the words that matched."""

    paper: Paper
    score: Score
    words: tuple[str, ...]


@dataclass(frozen=True)
class TopicTrial:
    """One topic's share of the stored papers: how many it takes, and those, best first (up to the limit)."""

    topic: Topic
    label: str
    count: int
    listed: tuple[Listed, ...]


@dataclass(frozen=True)
class Trial:
    """The outcome of running every rule over a set of stored papers."""

    total: int
    topics: tuple[TopicTrial, ...]
    unmatched: int  # papers no topic takes
    unmatched_samples: tuple[Paper, ...]
    complete: bool  # every topic is shown (no TOPIC was asked for), so the unmatched papers are worth showing


def preview_reader(subscriber: Subscriber, secret: str, link_version: int, layout: Layout) -> Reader:
    """The reader of a preview: their real links, but "View in your browser" opens the previewed layout itself
    (no edition is recorded, so an edition link would open nothing)."""
    return replace(reader_for(subscriber, secret, link_version, layout.key), edition_token=tokens.preview(secret, subscriber.email, layout, link_version))


def for_reader(config: Config, subscriber: Subscriber, explanations: list[Explanation]) -> list[Explanation]:
    """`topics explain --for`: the lines of the reader's own sections in their order, then their exclude rule."""
    excluded = config.exclude_topic(subscriber)
    names = [t.name for t in subscriber_topics(config, subscriber)] + ([excluded.name] if excluded else [])
    by_name = {e.topic: e for e in explanations}
    return [by_name[name] for name in names if name in by_name]


def reader_verdict(config: Config, subscriber: Subscriber, paper: Paper, explanations: list[Explanation]) -> str:
    """Whether the paper reaches this reader, and which of their rules decided: the last line of `topics explain --for`."""
    email = subscriber.email
    excluded = config.exclude_topic(subscriber)
    out = next((e for e in explanations if excluded and e.topic == excluded.name and e.matched), None)
    if out is not None:
        hits = ", ".join(str(h) for c in out.clauses for h in c.hits)
        return f"=> kept out of {email}'s digest by exclude: {hits}"
    taken = [e for e in explanations if e.matched and not (excluded and e.topic == excluded.name)]
    if not taken:
        return f"=> not for {email}: none of their topics or own rules takes it"
    if (paper.score or 0) < subscriber.min_score:
        return f"=> kept out of {email}'s digest by min_score: score {paper.score or 0} < {subscriber.min_score}"
    first = taken[0]
    rule = {AUTHORS_TOPIC: " (a followed author: their own rule)", KEYWORDS_TOPIC: " (their own keywords)"}.get(first.topic.partition(":")[0], "")
    title = next(t.title for t in subscriber_topics(config, subscriber) if t.name == first.topic)
    return f"=> in {email}'s digest, under {title}{rule}"


def run_trial(planner: Planner, labels: Mapping[str, str], only: str | None = None, limit: int | None = LIMIT) -> Trial:
    """Each topic's matches among the planner's papers in the order its digest section would have them (`limit`: at most
    that many listed, None: all); `only` restricts the report to one topic name, while papers no topic takes are
    still judged against all topics."""
    topics = {t.name: t for t in planner.matcher.topics}
    taken: dict[str, list[Listed]] = {name: [] for name in topics}
    unmatched: list[Paper] = []
    for paper in planner.papers:
        matched = planner.matches[paper.id]
        for name in matched.keys:
            taken[name].append(Listed(paper, matched.score(topics[name]), tuple(text for _, text in matched_words(planner.matcher, name, matched.found))))
        if not matched.keys:
            unmatched.append(paper)
    shown = [t for t in planner.matcher.topics if only is None or t.name == only]
    unmatched.sort(key=lambda p: tie_key(p.id, p.published or planner.first_seen.get(p.id)))
    return Trial(
        total=len(planner.papers),
        topics=tuple(
            TopicTrial(t, labels.get(t.name, t.name), len(taken[t.name]), tuple(sorted(taken[t.name], key=lambda e: e.score.key)[:limit])) for t in shown
        ),
        unmatched=len(unmatched),
        unmatched_samples=tuple(unmatched[:limit]),
        complete=only is None,
    )


def format_trial(trial: Trial, matcher: Matcher, days: int, width: int | None = None) -> list[str]:
    """The lines `topics try` prints: per topic its count, then each listed match with its score, what it sorts by
    and the words that matched; then the papers no topic takes. `width`: cut each line to it (a terminal's)."""
    lines = [f"{trial.total} papers first seen in the last {days} day{'s' if days != 1 else ''}"]
    label_width = max((len(t.label) for t in trial.topics), default=0)
    for t in trial.topics:
        lines.append(f"{t.label.ljust(label_width)}  {t.count:5}" + (f"  (sort: {t.topic.sort})" if t.topic.sort != "relevance" else ""))
        for i, entry in enumerate(t.listed, 1):
            words = f"  [matched: {', '.join(entry.words)}]" if entry.words else ""
            lines.append(f"    {i:3}. {entry.score.relevance:6.2f}  {_by(t.topic, entry)}{marked(matcher, entry.paper, t.topic.name)}{words}")
        if len(t.listed) < t.count:
            lines.append(f"    … {t.count - len(t.listed)} more (--limit N, or --all)")
    if trial.complete:
        lines.append(f"{'matched by no topic'.ljust(label_width)}  {trial.unmatched:5}")
        for paper in trial.unmatched_samples:
            lines.append(f"    {paper.id}  {' '.join(paper.title.split())}")
        if len(trial.unmatched_samples) < trial.unmatched:
            lines.append(f"    … {trial.unmatched - len(trial.unmatched_samples)} more (--limit N, or --all)")
    return lines if width is None else [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


def _by(topic: Topic, entry: Listed) -> str:
    """What a non-relevance sort orders by, shown before the paper."""
    if topic.sort == "trending":
        return f"{_figures(Figures.of(entry.paper))}  "
    if topic.sort == "rising":
        return f"{_figures(entry.score.gain, '+')} in {topic.rising_hours} h  "
    if topic.sort == "newest":
        return f"{entry.paper.published:%Y-%m-%d}  " if entry.paper.published else "undated     "
    return ""


def _figures(figures: Figures, sign: str = "") -> str:
    parts = [f"{sign}{n} {what}" for n, what in ((figures.upvotes, "upvotes"), (figures.comments, "comments"), (figures.stars, "stars")) if n is not None]
    return ", ".join(parts) or "no figures"


def marked(matcher: Matcher, paper: Paper, topic: str) -> str:
    """`id  title` with the topic's matched words as *word*, plus the words it matched in the abstract."""
    marks = matcher.marks(paper, [topic])
    title = mark_text(paper.title, marks.title)
    words = list(dict.fromkeys(paper.abstract[a:b].lower() for a, b in marks.abstract))
    extra = f"  [abstract: {', '.join(f'*{w}*' for w in words)}]" if words else ""
    return f"{paper.id}  {' '.join(title.split())}{extra}"


def explain_scores(planner: Planner, paper: Paper) -> dict[str, list[str]]:
    """Per topic that takes the paper: how its score there comes about, and where that puts it among the topic's papers."""
    matches = planner.matched([paper])
    matched = matches[paper.id]
    weights = idfs(planner.matcher.keyword_count(), [m.found for m in matches.values()])
    fields = field_weights(matched.found)
    when = paper.published or planner.first_seen.get(paper.id)
    age = f"{(planner.now - when).total_seconds() / 86400:.1f} days old" if when else "age unknown"
    out = {}
    for topic in planner.matcher.topics:
        if topic.name not in matched.keys:
            continue
        score = matched.score(topic)
        rivals = sorted(m.keys[topic.name] for m in matches.values() if topic.name in m.keys)
        parts = [
            f'"{text}" in {"+".join(_fields(matched.found, kid))} {fields[kid]:g} × idf {weights[kid]:.2f}'
            for kid, text in matched_words(planner.matcher, topic.name, matched.found)
        ]
        out[topic.name] = [
            f"    #{rivals.index(score.key) + 1} of {len(rivals)} by {topic.sort}; "
            f"relevance {score.relevance:.2f} = match {score.match:.2f} × (1 + popularity {score.popularity:.2f} / 4) × recency {score.recency:.2f}",
            f"    match: {' + '.join(parts) if parts else 'the topic has no keywords (1)'}",
            f"    popularity: {_figures(Figures.of(paper))}"
            + (f"; rising {score.rising:.2f} over {topic.rising_hours} h: {_figures(score.gain, '+')}" if topic.sort == "rising" else "")
            + f"; recency: {age}",
        ]
    return out


def _fields(found: Found, kid: int) -> list[str]:
    bit = 1 << kid
    return [
        name
        for name, bits in (("title", found.title), ("abstract", found.abstract), ("authors", found.authors), ("categories", found.categories))
        if bits & bit
    ]
