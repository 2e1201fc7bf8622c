"""Composing one subscriber's digest: grouping, ordering, caps, and never a paper twice."""

from __future__ import annotations

from datetime import UTC, date, datetime

from newsletter import config
from newsletter.model.digest import all_topics, compose
from newsletter.model.paper import Paper
from newsletter.model.ranking import match_all
from newsletter.model.topics import Matcher

CONF = config.parse(
    """\
settings:
  max_papers_per_topic: 2
sources:
  - {name: hf, type: hf_daily}
topics:
  tuning:
    title: Fine-tuning
    any: [fine-tuning, LoRA]
  agents:
    title: Agents
    any: [agent*]
  trending:
    title: Trending
    sources: [hf]
    min_score: 10
subscribers:
  - email: ada@example.org
    topics: [agents, tuning]
    keywords: [Ainu]
  - email: bob@example.org
    topics: [tuning]
    min_score: 5
  - email: cy@example.org
    topics: [tuning, agents, trending]
    max_papers: 3
""",
    "subs.yaml",
)
DAY = date(2026, 11, 25)


def paper(pid: str, title: str, score: int | None = None, day: int = 1, sources: tuple[str, ...] = ("arxiv",)) -> Paper:
    return Paper(id=pid, title=title, score=score, published=datetime(2026, 11, day, tzinfo=UTC), sources=sources)


PAPERS = [
    paper("1", "LoRA agents for everyone", score=3),
    paper("2", "Fine-tuning at scale", score=50),
    paper("3", "Agentic planning", day=3),
    paper("4", "Agent memory", day=5),
    paper("5", "Speech of the Ainu people"),
    paper("6", "Unrelated astronomy"),
    paper("7", "Trending diffusion", score=99, sources=("hf",)),
]
MATCHER = Matcher(all_topics(CONF))
MATCHES = match_all(MATCHER, PAPERS)


def digest_for(email: str, sent: set[str] | None = None):  # type: ignore[no-untyped-def]
    subscriber = CONF.subscriber(email)
    assert subscriber is not None
    return compose(CONF, subscriber, MATCHER, PAPERS, MATCHES, sent or set(), DAY)


def sections(digest) -> list[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    return [(s.title, [e.paper.id for e in s.entries]) for s in digest.sections]


def test_papers_appear_once_under_the_subscribers_first_matching_topic_with_tags() -> None:
    digest = digest_for("ada@example.org")
    assert sections(digest) == [("Agents", ["1", "4"]), ("Fine-tuning", ["2"]), ("Your keywords", ["5"])]
    assert digest.sections[0].more == 1, "agents had 3 matches, cap 2"


def test_tags_name_the_other_matching_topics() -> None:
    digest = digest_for("ada@example.org", sent={"3", "4"})
    agents = digest.sections[0]
    assert [(e.paper.id, e.tags) for e in agents.entries] == [("1", ("Fine-tuning",))]


def test_order_is_score_then_date() -> None:
    assert sections(digest_for("ada@example.org"))[0] == ("Agents", ["1", "4"]), "score 3 beats score 0"
    assert sections(digest_for("ada@example.org", sent={"1"}))[0] == ("Agents", ["4", "3"]), "equal scores: newest first"


def test_already_sent_papers_and_low_scores_are_left_out() -> None:
    assert sections(digest_for("bob@example.org")) == [("Fine-tuning", ["2"])]
    assert digest_for("bob@example.org", sent={"2"}) is None, "nothing new means no digest"


def test_subscriber_max_papers_caps_the_whole_digest_in_topic_order() -> None:
    digest = digest_for("cy@example.org")
    assert sections(digest) == [("Fine-tuning", ["2", "1"]), ("Agents", ["4"])]
    assert digest.count == 3


def test_digest_key_is_the_same_for_equal_content() -> None:
    assert digest_for("bob@example.org").key == digest_for("bob@example.org").key
    assert digest_for("bob@example.org").key != digest_for("ada@example.org").key
