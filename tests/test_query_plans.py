"""The store's hot paths (every send, fetch and edition page) read through indexes: no query scans a table that grows with history."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.model.digest import Layout, Shelf
from newsletter.model.paper import Paper
from newsletter.storage.store import Store

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
GROWING = {"papers", "deliveries", "layouts", "popularity", "sent_lists", "bounces", "http_cache"}
ALIASES = {"d": "deliveries", "l": "layouts", "p": "papers", "q": "popularity", "newer": "popularity", "s": "sent_lists"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A few weeks of history: papers (some revised), editions mailed to a few readers, snapshots, validators."""
    store = Store(Path(tmp_path_factory.mktemp("plans")) / "state.db")
    for day in range(30):
        now = T0 + timedelta(days=day)
        papers = [Paper(id=f"24{day:02d}.{n:05d}", title="P", score=n, version=1) for n in range(20)]
        store.add_papers(papers, now)
        store.record_popularity(papers, now, 24)
        store.save_validators(f"https://feeds.example.org/{day}", '"e"', None, now)
        layout = Layout(now.date(), (Shelf("t", "T", tuple(p.id for p in papers[:5]), tuple(p.id for p in papers[5:])),))
        for reader in range(20):
            who = f"r{reader}@example.org"
            store.plan_delivery(f"e{day}", who, layout, now)
            store.claim(f"e{day}", who, now)
            store.mark_sent(f"e{day}", who, f"<m{day}.{reader}@x>", "250 ok", now)
    store.add_papers([Paper(id="2401.00001", title="P", version=2)], T0 + timedelta(days=29), replace=True)
    return store


def hot_paths(store: Store) -> list[tuple[str, Callable[[], object]]]:
    now = T0 + timedelta(days=30)
    layout = Layout(now.date(), (Shelf("t", "T", ("2429.00001",), ()),))
    ids = [f"2429.{n:05d}" for n in range(20)]
    return [
        ("candidates", lambda: store.papers_seen_since(now - timedelta(days=7))),
        ("papers sent to a reader", lambda: store.sent_paper_ids("r3@example.org", now - timedelta(days=7))),
        ("papers sent to every reader", lambda: store.sent_paper_ids_by_reader(now - timedelta(days=7))),
        ("a fetch's papers", lambda: store.add_papers([Paper(id="2429.00001", title="P"), Paper(id="2430.00001", title="N")], now)),
        ("a fetch's snapshots", lambda: store.record_popularity([Paper(id="2429.00001", title="P", score=50)], now, 24)),
        ("rising", lambda: store.popularity_history(ids, now - timedelta(hours=24))),
        ("validators", lambda: store.validators("https://feeds.example.org/3")),
        ("plan", lambda: store.plan_delivery("e30", "r3@example.org", layout, now)),
        ("claim", lambda: store.claim("e30", "r3@example.org", now)),
        ("mark sent", lambda: store.mark_sent("e30", "r3@example.org", "<m30@x>", "250 ok", now)),
        ("rows to send", lambda: store.deliveries(("pending", "deferred"))),
        ("interrupted rows", lambda: store.recover_interrupted(now=now)),
        ("an edition's page", lambda: (store.layout("r3@example.org", layout.key), store.papers_by_id(ids), store.papers_version(ids))),
        ("a reader's feed", lambda: store.editions("r3@example.org", 50)),
        ("a bounce's delivery", lambda: store.delivery_by_message_id("<m3.3@x>")),
        ("a bounce's edition", lambda: (store.sent_editions(), store.sent_to("e3"))),
        ("soft bounces", lambda: store.soft_bounces_in_a_row("r3@example.org", now - timedelta(days=30))),
        ("public pages' changes", lambda: store.papers_changed_since(10**9)),
    ]


def test_each_hot_path_reads_through_indexes(store: Store) -> None:
    for name, call in hot_paths(store):
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        try:
            call()
        finally:
            store.db.set_trace_callback(None)
        queries = [s for s in statements if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", s, re.I)]
        assert queries, f"{name}: no query seen"
        for sql in queries:
            plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + sql)]
            scans = [step for step in plan if (m := re.match(r"SCAN (\w+)", step)) and ALIASES.get(m.group(1), m.group(1)) in GROWING]
            assert not scans, f"{name}: {sql[:160]}… scans {scans} (plan: {plan})"


def test_the_papers_since_query_would_scan_with_an_or(store: Store) -> None:
    """The check above can fail: the query as it stood (first_seen OR revised) reads every paper."""
    plan = [r[3] for r in store.db.execute("EXPLAIN QUERY PLAN SELECT data FROM papers WHERE first_seen >= ?1 OR revised >= ?1", ("2026",))]
    assert plan == ["SCAN papers"] or any("MULTI-INDEX OR" in step for step in plan)
