"""`newsletter topics try` and `topics explain` on a real SQLite store filled from the real fixtures by `newsletter fetch`."""

from __future__ import annotations

import importlib.util
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter import config
from newsletter.cli import cli
from newsletter.model.digest import all_topics
from newsletter.model.paper import Paper
from newsletter.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures"

CONFIG = f"""\
sources:
  - name: hf
    type: hf_daily
    url: {FIXTURES}/hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json
  - name: arxiv
    type: arxiv_rss
    categories: [cs, astro-ph]
    url: {FIXTURES}/arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml
topics:
  agents:
    any: [agent*, tool use]
    all: ["/\\\\b(LLM|language model)s?\\\\b/"]
  continual:
    any: [continual learning, catastrophic forgetting]
  exoplanets:
    any: [exoplanet*, hot Jupiter*]
  nothing:
    any: [zzyzx]
subscribers:
  - email: ada@example.org
    topics: [continual]
    keywords: [retrieval-augmented]
"""


def _oracle() -> type:
    spec = importlib.util.spec_from_file_location("topics_bench", ROOT / "bench/topics_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReferenceMatcher  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config and a store that `newsletter fetch` filled from the bundled feeds, plus one paper seen 20 days ago."""
    path = tmp_path_factory.mktemp("try")
    (path / "subscribers.yaml").write_text(CONFIG, encoding="utf-8")
    result = newsletter(path, "fetch")
    assert result.exit_code == 0, result.output
    with Store(path / "state.db") as store:
        old = Paper(id="2001.00001", title="An old paper on catastrophic forgetting", abstract="Continual learning, again.")
        store.add_papers([old], now=datetime.now(UTC) - timedelta(days=20))
    return path


def newsletter(workdir: Path, *args: str) -> Result:
    env = {"NEWSLETTER_DB": str(workdir / "state.db"), "NEWSLETTER_CONFIG": str(workdir / "subscribers.yaml")}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_try_counts_each_topic_like_the_reference_loop_and_marks_matched_words(workdir: Path) -> None:
    loaded = config.load(workdir / "subscribers.yaml")
    with Store(workdir / "state.db") as store:
        recent = [s.paper for s in store.papers_seen_since(datetime.now(UTC) - timedelta(days=7))]
    oracle = _oracle()(all_topics(loaded))
    expected = dict.fromkeys(["agents", "continual", "exoplanets", "nothing", "keywords:ada@example.org"], 0)
    unmatched = 0
    for p in recent:
        names = oracle.topics_for(p)
        for name in names:
            expected[name] += 1
        unmatched += not names

    result = newsletter(workdir, "topics", "try")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{len(recent)} papers first seen in the last 7 days", "the old paper is beyond the horizon"
    counts = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in lines[1:] if not line.startswith("    ")}
    assert counts == {
        "agents": expected["agents"],
        "continual": expected["continual"],
        "exoplanets": expected["exoplanets"],
        "nothing": 0,
        "keywords of ada@example.org": expected["keywords:ada@example.org"],
        "matched by no topic": unmatched,
    }
    assert all(n > 0 for name, n in counts.items() if name != "nothing")
    assert "      1.  " in result.output and "2411.18320  *Continual Learning* in Machine Speech Chain Using Gradient Episodic Memory" in result.output
    listed = [line for line in lines if line.startswith("    ") and not line.strip().startswith("…")]
    shown = {name: min(n, 20) for name, n in counts.items()}
    assert len(listed) == sum(shown.values()), "every match up to 20 per topic (the default limit), and 20 papers no topic took"
    keyword_topics = listed[: sum(shown.values()) - shown["matched by no topic"]]
    assert all("[matched: " in line for line in keyword_topics), "every match says which keywords matched"
    assert f"    … {unmatched - 20} more (--limit N, or --all)" in lines


def test_try_all_lists_every_match_best_first_with_its_score(workdir: Path) -> None:
    result = newsletter(workdir, "topics", "try", "agents", "--all")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    count = int(lines[1].split()[1])
    listed = lines[2:]
    assert count > 3 and len(listed) == count, "no cap: every match is listed"
    assert [int(line.split(".")[0]) for line in listed] == list(range(1, count + 1))
    scores = [float(line.split()[1]) for line in listed]
    assert scores == sorted(scores, reverse=True), "relevance order, best first"
    assert all("[matched: agent*" in line or "[matched: tool use" in line for line in listed)


def test_try_limit(workdir: Path) -> None:
    result = newsletter(workdir, "topics", "try", "agents", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 + 2 + 1 and lines[-1] == f"    … {int(lines[1].split()[1]) - 2} more (--limit N, or --all)"


def test_try_one_topic_over_more_days(workdir: Path) -> None:
    result = newsletter(workdir, "topics", "try", "continual", "--days", "30")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["continual", "4"], "the paper seen 20 days ago counts now"
    assert "matched by no topic" not in result.output
    assert len(lines) == 2 + 4
    assert "2001.00001  An old paper on *catastrophic forgetting*" in lines[2], "a title match, undated: 20 days old by when it was fetched"
    assert "2411.18320  *Continual Learning*" in lines[3], "both keywords in title and abstract, but published in 2024: recency halves it"


def test_try_unknown_topic_is_an_input_error(workdir: Path) -> None:
    result = newsletter(workdir, "topics", "try", "continuous")
    assert result.exit_code == 1
    assert "no topic 'continuous'" in result.output and "continual" in result.output


def test_explain_shows_every_topic_with_the_keywords_and_fields_that_decided_and_the_score(workdir: Path) -> None:
    result = newsletter(workdir, "topics", "explain", "2411.18320")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] + lines[6:] == [
        "2411.18320: Continual Learning in Machine Speech Chain Using Gradient Episodic Memory",
        'agents                       no match  any: none of ["agent*", "tool use"] matched; all: missing "/\\b(LLM|language model)s?\\b/"',
        'continual                    MATCH     any: "continual learning" in title+abstract, "catastrophic forgetting" in abstract',
        'exoplanets                   no match  any: none of ["exoplanet*", "hot Jupiter*"] matched',
        'nothing                      no match  any: none of ["zzyzx"] matched',
        'keywords of ada@example.org  no match  any: none of ["retrieval-augmented"] matched',
    ]
    rank, parts, figures = lines[3:6]
    assert rank.startswith("    #1 of 3 by relevance; relevance ") and " = match " in rank and " × recency " in rank
    match = float(rank.split(" = match ")[1].split()[0])
    terms = re.findall(r'"[^"]+" in [a-z+]+ (\d+) × idf ([\d.]+)', parts)
    assert [w for w, _ in terms] == ["4", "1"], "title+abstract weighs 3 + 1, abstract alone 1"
    assert match == pytest.approx(sum(int(w) * float(idf) for w, idf in terms), abs=0.02)
    assert figures.startswith("    popularity: no figures; recency: ") and figures.endswith(" days old")


def test_explain_unknown_paper(workdir: Path) -> None:
    result = newsletter(workdir, "topics", "explain", "9999.99999")
    assert result.exit_code == 1 and "no stored paper with id '9999.99999'" in result.output
