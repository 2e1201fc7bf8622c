"""The SQLite store: papers merge by id, first-seen time is kept, and the ledger moves rows one way."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from newsletter.papers import Paper
from newsletter.store import Store

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def test_papers_are_new_once_and_merge_later_sightings(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        arxiv = Paper(id="2411.00001", title="A", categories=("cs.CL",), sources=("arxiv",), version=1)
        hf = Paper(id="2411.00001", title="A", score=42, sources=("hf",), version=2)
        assert store.add_papers([arxiv], T0) == 1
        assert store.add_papers([hf], T0 + timedelta(hours=1)) == 0
        merged = store.paper("2411.00001")
        assert merged is not None
        assert merged.score == 42 and merged.categories == ("cs.CL",) and merged.sources == ("arxiv", "hf") and merged.version == 2
        [stored] = store.papers_seen_since(T0)
        assert stored.first_seen == T0, "age counts from the first sighting"


def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        store.add_papers([Paper(id="x", title="X")], T0)
        store.save_validators("http://h/feed", '"abc"', "Wed, 01 Jan 2026 00:00:00 GMT")
    with Store(tmp_path / "state.db") as store:
        assert store.paper("x") is not None
        assert store.validators("http://h/feed") == ('"abc"', "Wed, 01 Jan 2026 00:00:00 GMT")


def test_a_row_is_claimed_once_and_sent_marks_its_papers(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        assert store.plan_delivery("e1", "Ada@example.org", ["p1", "p2"])
        assert not store.plan_delivery("e1", "ada@example.org", ["p1"]), "one row per edition and subscriber"
        assert store.sent_paper_ids("ada@example.org") == {"p1", "p2"}, "papers waiting in a row are not offered again"
        assert store.claim("e1", "ada@example.org") == ["p1", "p2"]
        assert store.claim("e1", "ada@example.org") is None, "a claimed row cannot be claimed twice"
        store.mark_sent("e1", "ada@example.org", "<m@x>", "250 ok")
        assert store.sent_paper_ids("ADA@example.org") == {"p1", "p2"}
        assert [r["status"] for r in store.deliveries()] == ["sent"]


def test_rows_interrupted_while_sending_are_retried_once_then_failed(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        store.plan_delivery("e1", "a@x.org", ["p1"])
        store.claim("e1", "a@x.org")
        assert store.recover_interrupted() == 1
        assert store.deliveries(["deferred"])[0]["last_reply"].startswith("interrupted")
        store.claim("e1", "a@x.org")
        assert store.recover_interrupted() == 0
        assert store.deliveries(["failed"])[0]["subscriber"] == "a@x.org"


def test_source_health_counts_consecutive_failures(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        store.source_failed("s", "HTTP 500", T0)
        store.source_failed("s", "HTTP 503", T0)
        assert store.source_health()["s"].consecutive_failures == 2
        store.source_succeeded("s", 7, T0)
        health = store.source_health()["s"]
        assert health.consecutive_failures == 0 and health.papers_seen == 7 and health.last_error == "HTTP 503"


def test_a_higher_version_through_a_replace_source_is_news_again_once(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        store.add_papers([Paper(id="2411.00001", title="A", version=1)], T0)
        store.plan_delivery("e1", "ada@example.org", ["2411.00001"], T0)
        store.claim("e1", "ada@example.org", T0)
        store.mark_sent("e1", "ada@example.org", "<m1>", "250 OK", T0 + timedelta(minutes=1))
        assert store.sent_paper_ids("ada@example.org") == {"2411.00001"}

        store.add_papers([Paper(id="2411.00001", title="A", version=2)], T0 + timedelta(hours=1))  # no replace asked
        assert store.sent_paper_ids("ada@example.org") == {"2411.00001"}
        store.add_papers([Paper(id="2411.00001", title="A", version=3)], T0 + timedelta(hours=2), replace=True)
        assert store.sent_paper_ids("ada@example.org") == set(), "v3 is news to someone sent v1"
        assert [sp.paper.id for sp in store.papers_seen_since(T0 + timedelta(days=30))] == []
        assert [sp.paper.id for sp in store.papers_seen_since(T0 + timedelta(hours=2))] == ["2411.00001"], "revised counts as recent"

        store.plan_delivery("e2", "ada@example.org", ["2411.00001"], T0 + timedelta(hours=3))
        store.claim("e2", "ada@example.org", T0 + timedelta(hours=3))
        store.mark_sent("e2", "ada@example.org", "<m2>", "250 OK", T0 + timedelta(hours=3))
        store.add_papers([Paper(id="2411.00001", title="A", version=3)], T0 + timedelta(hours=4), replace=True)  # seen again
        assert store.sent_paper_ids("ada@example.org") == {"2411.00001"}


def test_a_database_made_before_revisions_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE papers (id TEXT PRIMARY KEY, data TEXT NOT NULL, first_seen TEXT NOT NULL, updated TEXT NOT NULL)")
    db.close()
    with Store(path) as store:
        store.add_papers([Paper(id="x", title="X", version=1)], T0)
        store.add_papers([Paper(id="x", title="X", version=2)], T0, replace=True)
        assert store.paper("x").version == 2  # type: ignore[union-attr]
