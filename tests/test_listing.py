"""The listing behind the public pages: which stored papers each topic takes, on which day, in which order."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

from newsletter.model.listing import FRONT, Listing, listed
from newsletter.model.paper import Paper
from newsletter.model.topics import Topic

SEEN = datetime(2026, 8, 2, 6, 0, tzinfo=UTC)
AGENTS = Topic("agents", "Agents", any=("agent*",))
TRENDING = Topic("trending", "Trending", min_score=50)


def paper(pid: str, title: str, day: int, score: int | None = None) -> Paper:
    return Paper(pid, title, published=datetime(2026, 8, day, 12, tzinfo=UTC), score=score)


def test_a_paper_is_listed_on_its_publication_day_but_never_after_it_was_first_seen() -> None:
    assert listed(paper("a", "x", 1), SEEN, ()).day == date(2026, 8, 1)
    assert listed(paper("b", "x", 9), SEEN, ()).day == date(2026, 8, 2), "a date in the future cannot keep a paper on top"
    assert listed(Paper("c", "x"), SEEN, ()).day == date(2026, 8, 2), "no date: the day it was first seen"


def test_topics_list_their_papers_by_day_newest_first_and_best_first_within_a_day() -> None:
    listing = Listing([AGENTS, TRENDING])
    for n, p in enumerate([paper("1", "Agents A", 1, 10), paper("2", "Agents B", 1, 90), paper("3", "Agents C", 2), paper("4", "Cells", 2)]):
        listing.add(p, SEEN, n + 1)
    assert listing.days("agents") == [date(2026, 8, 2), date(2026, 8, 1)]
    assert [e.id for e in listing.on(date(2026, 8, 1), "agents")] == ["2", "1"], "highest score first, as in the digest"
    assert [e.id for e in listing.on(date(2026, 8, 1), "trending")] == ["2"]
    assert {e.id for d in listing.days() for e in listing.on(d)} == {"1", "2", "3"}, "the front page: papers some topic takes"
    assert [e.id for e in listing.newest("agents", 10)][:1] == ["3"] and len(listing.newest("agents", 2)) == 2, "newest first, cut to the limit"
    assert listing.watermark == 4


def test_a_merged_paper_is_listed_again_with_what_it_now_matches() -> None:
    listing = Listing([AGENTS, TRENDING])
    listing.add(paper("1", "Agents A", 1), SEEN, 1)
    assert [e.id for e in listing.on(date(2026, 8, 1), "trending")] == []
    listing.add(dataclasses.replace(paper("1", "Agents A", 1), score=120), SEEN, 2)
    assert [e.id for e in listing.on(date(2026, 8, 1), "trending")] == ["1"], "the upvotes Hugging Face brought count"
    assert [e.id for e in listing.on(date(2026, 8, 1), FRONT)] == ["1"], "still once on the front page"


def test_without_topics_the_front_page_lists_every_paper() -> None:
    listing = Listing([])
    listing.add(paper("1", "Cells", 1), SEEN, 1)
    assert [e.id for e in listing.on(date(2026, 8, 1))] == ["1"]


def test_a_paper_whose_body_was_pruned_is_listed_nowhere() -> None:
    listing = Listing([AGENTS])
    listing.add(paper("1", "Agents A", 1), SEEN, 1)
    listing.add(paper("2", "Agents B", 1), SEEN, 2)
    listing.drop("1", 3)
    assert [e.id for e in listing.on(date(2026, 8, 1), "agents")] == ["2"] and [e.id for e in listing.on(date(2026, 8, 1))] == ["2"]
    listing.drop("2", 4)
    assert listing.days("agents") == [] and listing.days() == [], "a day left empty is no day of the archive"
    assert listing.watermark == 4
