"""Ranking within a topic (model/ranking.py), on real captured feeds: match strength first, popularity among equals,
`sort: trending | rising | newest`, snapshots taken by real fetches over a local HTTP server, ties that never read ids as text."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer, Reply

from newsletter import config as config_mod
from newsletter import pipeline
from newsletter.cli import cli
from newsletter.environment import Env
from newsletter.ingest.hf import hf_papers
from newsletter.ingest.sources import parse
from newsletter.model.config import Config, Source
from newsletter.model.digest import all_topics, compose
from newsletter.model.paper import Paper
from newsletter.model.ranking import Figures, Snapshot, gained, idf, idfs, match_all, recency, tie_key
from newsletter.model.topics import Matcher, Topic
from newsletter.storage.pruning import Keep
from newsletter.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
ARXIV = FIXTURES / "arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml"
HF = FIXTURES / "hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json"
HF_EARLIER = FIXTURES / "hf_daily_papers/all-news-ai__daily_papers_2026-07-31_pretty5.json"  # the same day's first 5, caught earlier
NOW = datetime(2026, 8, 1, 7, 0, tzinfo=UTC)


def hf(path: Path = HF) -> list[Paper]:
    return list(hf_papers(Source("hf", "hf_daily"), path.read_bytes()))


def section(conf: Config, papers: list[Paper], now: datetime | None = NOW, **kwargs: Any) -> list[str]:
    """The ids in the first subscriber's first section, as a send would order them."""
    matcher = Matcher(all_topics(conf))
    digest = compose(conf, conf.subscribers[0], matcher, papers, match_all(matcher, papers, now=now, **kwargs), set(), date(2026, 8, 1))
    assert digest is not None
    return [e.paper.id for e in digest.sections[0].entries]


def one_topic(body: str, **extra: Any) -> Config:
    settings = "settings: {max_papers_per_topic: 50}\n"
    return config_mod.parse(
        f"{settings}sources:\n  - {{name: hf, type: hf_daily}}\ntopics:\n  t:\n{body}subscribers:\n  - {{email: ada@example.org, topics: [t]}}\n", "subs.yaml"
    )


# --------------------------------------------------------------------------- relevance


@pytest.mark.parametrize(
    "keywords",
    [["large language model*", "LLM*"], ["reinforcement learning", "RLHF", "reward model*"], ["diffusion model*", "denoising"], ["agent*", "tool use"]],
)
def test_with_no_popularity_known_a_capped_topic_shows_title_matches_before_abstract_only_ones(keywords: list[str]) -> None:
    source = Source("arxiv", "arxiv_rss", url=str(ARXIV), categories=("cs",))
    papers = parse(source, ARXIV.read_bytes(), str(ARXIV)).papers  # 935 new and cross-listed arXiv papers: no upvotes anywhere
    assert len(papers) > 900 and all(p.score is None for p in papers)
    conf = one_topic(f"    any: {json.dumps(keywords)}\n    max_papers: 5\n")
    matcher = Matcher(all_topics(conf))
    taken = [p for p in papers if matcher.topics_for(p)]
    in_title = {p.id for p in taken if matcher.marks(p, ["t"]).title}
    assert len(in_title) >= 5 and len(taken) > len(in_title), "the topic has title matches to spare and abstract-only ones"
    shown = section(conf, papers, now=datetime(2024, 11, 29, tzinfo=UTC))
    assert len(shown) == 5 and set(shown) <= in_title, "a cap of 5 keeps title matches, never an abstract-only one"


def test_more_distinct_keywords_and_rarer_ones_weigh_more() -> None:
    papers = hf()
    conf = one_topic('    any: [memory, "long-term"]\n')
    matcher = Matcher(all_topics(conf))
    scored = match_all(matcher, papers, now=NOW)
    both = scored["2607.27919"]  # "Memory Decoder at Scale: A Pretrained, Parametric Long-Term Memory"
    assert both.found.title and both.matches["t"] > max(m.matches["t"] for pid, m in scored.items() if "t" in m.keys and pid != "2607.27919")
    assert idf(1, 30) > idf(10, 30) > idf(30, 30) > 0


def test_idfs_count_the_papers_each_keyword_hits() -> None:
    """The bit-sliced count `idfs` makes agrees with counting paper by paper, keyword by keyword."""
    papers = hf() + hf(HF_EARLIER)
    matcher = Matcher([Topic("t", "T", any=("diffusion", "agent*", "memory", "learning", "video", "reasoning", "title:model*"))])
    found = [matcher.match(p)[1] for p in papers]
    counts = [sum(f.any >> kid & 1 for f in found) for kid in range(matcher.keyword_count())]
    assert all(0 < n < len(found) for n in counts) and len(set(counts)) > 3, counts  # each keyword hits some papers, not all
    assert idfs(matcher.keyword_count(), found) == [idf(n, len(found)) for n in counts]


def test_at_equal_match_strength_more_upvotes_rank_first() -> None:
    papers = hf()  # "agent*" in the abstract only, or in the title too, of papers out the same day or the day before
    conf = one_topic("    any: [agent*]\n")
    matcher = Matcher(all_topics(conf))
    scored = match_all(matcher, papers, now=NOW)
    shown = section(conf, papers)
    by_id = {p.id: p for p in papers}
    groups: dict[float, list[str]] = {}
    for pid in shown:
        groups.setdefault(round(scored[pid].matches["t"], 9), []).append(pid)
    assert [len(g) for g in groups.values()] == [8, 5], "two match strengths: title (and abstract), abstract only"
    for group in groups.values():
        upvotes = [by_id[pid].score or 0 for pid in group]
        assert upvotes == sorted(upvotes, reverse=True), group
    assert shown[0] == "2607.28227" and by_id[shown[0]].score == 283
    assert shown[8] == "2607.28618" and by_id[shown[8]].score == 292, "the most upvoted abstract-only match comes after every title match"


# --------------------------------------------------------------------------- the other sorts


def test_sort_trending_puts_popularity_first_and_newest_the_publication_date() -> None:
    papers = hf()
    trending = section(one_topic("    any: [agent*]\n    sort: trending\n"), papers)
    assert trending[:3] == ["2607.28618", "2607.28227", "2607.28568"], "292, 283 and 168 upvotes, title match or not"
    newest = section(one_topic("    any: [agent*]\n    sort: newest\n"), papers)
    by_id = {p.id: p for p in papers}
    dates = [by_id[pid].published for pid in newest]
    assert dates == sorted(dates, reverse=True)  # type: ignore[type-var]
    assert newest[-1] == "2607.18806" and newest[0] == "2607.28227", "oldest last; among the newest, the best match and most upvoted first"


def test_ties_are_newer_first_then_arxiv_ids_as_numbers_then_natural_order() -> None:
    day = datetime(2026, 7, 30, tzinfo=UTC)
    ids = ["2607.9999", "2607.10000", "2606.99999", "hep-th/9901001", "math/9901001", "doi:10.1/100", "doi:10.1/9", "doi:10.1/10", "1", "10", "100", "2"]
    papers = [Paper(id=pid, title="LoRA", published=day) for pid in ids]
    conf = one_topic("    any: [LoRA]\n")
    assert section(conf, papers) == [
        "2607.10000",  # five-digit numbers come after four-digit ones: 2607.10000 is newer than 2607.9999
        "2607.9999",
        "2606.99999",
        "hep-th/9901001",
        "math/9901001",
        "1",
        "2",
        "10",
        "100",
        "doi:10.1/9",
        "doi:10.1/10",
        "doi:10.1/100",
    ]
    assert section(conf, list(reversed(papers))) == section(conf, papers), "whatever order they came in"
    older = dataclasses.replace(papers[0], published=day - timedelta(days=1))
    assert section(conf, [older, papers[-1]]) == ["2", "2607.9999"], "a newer date decides first"
    assert tie_key("2607.9999", None)[0] == float("inf"), "undated papers last"


def test_recency_counts_a_week_in_full_then_fades_to_half() -> None:
    assert recency(NOW - timedelta(days=6), NOW) == 1.0 and recency(None, NOW) == 1.0
    assert 0.7 < recency(NOW - timedelta(days=37), NOW) == pytest.approx(0.75) and recency(NOW - timedelta(days=5000), NOW) == pytest.approx(0.5)


# --------------------------------------------------------------------------- rising: snapshots of real fetches


def test_gain_counts_from_the_last_snapshot_before_the_window() -> None:
    def snap(hours_ago: int, upvotes: int) -> Snapshot:
        return Snapshot(NOW - timedelta(hours=hours_ago), Figures(upvotes, 2, None))

    start = NOW - timedelta(hours=24)
    history = [snap(40, 1), snap(30, 3), snap(20, 10), snap(1, 60)]
    assert gained(history, start, None) == Figures(57, 0, None), "from 3 (30 h ago), the last before the window"
    assert gained(history[2:], start, None) == Figures(50, 0, None), "no earlier snapshot: from the first in the window"
    assert gained(history[2:], start, NOW - timedelta(hours=5)) == Figures(60, 2, None), "published in the window: all of it is new"
    assert gained([], start, None) == Figures() and gained([snap(1, 9)], start, None) == Figures(0, 0, None)


@pytest.fixture
def hf_world(tmp_path: Path, http_server: LocalHTTPServer) -> tuple[Config, Env]:
    path = tmp_path / "subscribers.yaml"
    topic = "{sources: [hf], sort: %s, max_papers: 30}"
    path.write_text(
        f"""settings: {{allow_private_network: true}}
sources:
  - {{name: hf, type: hf_daily, url: "{http_server.url("/daily_papers")}"}}
topics:
  rising: {topic % "rising"}
  trending: {topic % "trending"}
  relevance: {topic % "relevance"}
subscribers:
  - {{email: rise@example.org, topics: [rising]}}
  - {{email: trend@example.org, topics: [trending]}}
  - {{email: rel@example.org, topics: [relevance]}}
""",
        encoding="utf-8",
    )
    return config_mod.load(path), Env(sender="Digest <d@example.org>", db=tmp_path / "state.db")


def fetch_at(conf: Config, env: Env, store: Store, when: datetime) -> None:
    policy = pipeline.fetch_policy(conf, env, when.date(), api_interval=0)
    (result,) = pipeline.fetch(conf, env, store, now=when, policy=policy)
    assert result.error is None


def orders(conf: Config, store: Store, when: datetime) -> dict[str, list[str]]:
    planner = pipeline.Planner(conf, store, when)
    out = {}
    for s in conf.subscribers:
        digest = planner.next_digest(s)
        assert digest is not None
        out[s.topics[0]] = [e.paper.id for e in digest.sections[0].entries]
    return out


def test_rising_ranks_by_what_two_fetches_of_the_same_papers_saw_gained(hf_world: tuple[Config, Env], http_server: LocalHTTPServer) -> None:
    conf, env = hf_world
    first = json.loads(HF.read_bytes())
    later = json.loads(HF.read_bytes())
    for item in later:  # an hour later: OmniScope went from 3 to 60 upvotes, Flux-OPD from 40 to 42
        item["paper"]["upvotes"] = {"2607.23193": 60, "2607.28022": 42}.get(item["paper"]["id"], item["paper"]["upvotes"])
    http_server.route("/daily_papers", Reply(body=json.dumps(first).encode()), Reply(body=json.dumps(later).encode()))
    with Store(env.db) as store:
        t1 = datetime(2026, 8, 1, 6, 0, tzinfo=UTC)
        fetch_at(conf, env, store, t1)
        before = orders(conf, store, t1)
        fetch_at(conf, env, store, t1 + timedelta(hours=1))
        after = orders(conf, store, t1 + timedelta(hours=1))
        history = store.popularity_history(["2607.23193"], t1 - timedelta(hours=24))
    assert [s.figures.upvotes for s in history["2607.23193"]] == [3, 60], "each fetch recorded what it saw"
    assert before["rising"] == before["trending"], "one fetch: nothing gained yet, so popularity decides"
    assert after["rising"][:2] == ["2607.23193", "2607.28022"], "3 → 60 beats 40 → 42, and both beat papers that gained nothing"
    assert after["rising"][2:] == [pid for pid in after["trending"] if pid not in after["rising"][:2]], "then by popularity"
    assert after["trending"][:4] == ["2607.28618", "2607.28227", "2607.28568", "2607.23193"], "trending: 292, 283, 168, then OmniScope's 60"


def test_rising_over_two_real_captures_of_one_day(hf_world: tuple[Config, Env], http_server: LocalHTTPServer) -> None:
    """all-news-ai caught the day's first five papers earlier than personal-news-feed caught all thirty."""
    conf, env = hf_world
    http_server.route("/daily_papers", Reply(body=HF_EARLIER.read_bytes()), Reply(body=HF.read_bytes()))
    with Store(env.db) as store:
        t1 = datetime(2026, 8, 1, 6, 0, tzinfo=UTC)
        fetch_at(conf, env, store, t1)
        fetch_at(conf, env, store, t1 + timedelta(hours=3))
        after = orders(conf, store, t1 + timedelta(hours=3))
    assert after["rising"][:2] == ["2607.28582", "2607.27958"], "17 → 19 and 11 → 12 upvotes: the only gains between the captures"
    assert after["trending"].index("2607.28582") > 2


def test_snapshots_keep_what_the_longest_window_needs_and_the_latest(database: Path | str) -> None:
    paper = Paper(id="2607.23193", title="OmniScope", score=0)
    start = datetime(2026, 8, 1, tzinfo=UTC)
    with Store(database) as store:
        for hour in range(0, 49, 6):  # a fetch every 6 hours for two days, windows up to 24 h
            store.record_popularity([dataclasses.replace(paper, score=hour)], start + timedelta(hours=hour), keep_hours=24)
        store.record_popularity([Paper(id="no-figures", title="An arXiv paper")], start, keep_hours=24)
        kept = store.popularity_history([paper.id, "no-figures"], start)
        assert [s.figures.upvotes for s in kept[paper.id]] == [24, 30, 36, 42, 48], "24 h back, plus the last before that as baseline"
        assert "no-figures" not in kept, "papers without figures take no rows"
        window = store.popularity_history([paper.id], start + timedelta(hours=45))
        assert [s.figures.upvotes for s in window[paper.id]] == [42, 48], "from the last at or before the window's start"
        later = start + timedelta(days=30)
        store.record_popularity([], later, keep_hours=24)
        assert len(store.popularity_history([paper.id], start)[paper.id]) == 5, "a fetch prunes the snapshots of the papers it saw"
        store.prune(Keep(later, later, candidates=start, snapshots=later - timedelta(hours=24), http_cache=later, urls=frozenset()), now=later)
        assert [s.figures.upvotes for s in store.popularity_history([paper.id], start)[paper.id]] == [48], "prune: a paper no longer fetched keeps its latest"


# --------------------------------------------------------------------------- check


def test_check_rejects_a_bad_sort_and_rising_hours_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "sources:\n  - {name: hf, type: hf_daily}\ntopics:\n  t:\n    any: [LoRA]\n    sort: hot\n    rising_hours: -3\n"
        "subscribers:\n  - {email: ada@example.org, topics: [t]}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["--config", str(path), "check"], env={"NEWSLETTER_DB": str(tmp_path / "state.db")})
    assert result.exit_code == 1
    assert f"{path}:6:5: topics.t.sort: unknown sort 'hot' (one of: relevance, trending, rising, newest)" in result.output
    assert f"{path}:7:5: topics.t.rising_hours: must be at least 1, got -3" in result.output


def test_topics_keep_their_config_order_of_keywords_for_matched_words() -> None:
    matcher = Matcher([Topic("t", "T", any=("LoRA", "lora", "adapter*"), all=("tuning",))])
    assert matcher.keywords_of("t") == ((0, "LoRA"), (1, "adapter*"), (2, "tuning")), "equivalent spellings are one keyword"
