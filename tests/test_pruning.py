"""`newsletter prune`: what no guarantee needs goes; what dedup, kept edition pages and `rising` need stays."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer
from support.smtpserver import SMTPServer
from test_editions import CONFIG, digests, layouts, snapshot
from test_web import Site, link, make_site

from newsletter import environment
from newsletter.cli import cli
from newsletter.model.config import Config, Settings
from newsletter.model.digest import Layout, Shelf
from newsletter.model.paper import Paper
from newsletter.pipeline.pruning import keep
from newsletter.storage.pruning import Keep
from newsletter.storage.store import Store

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
AGE = timedelta(days=100)  # past the edition pages' 90 days


@pytest.fixture
def site(tmp_path: Path, http_server: LocalHTTPServer) -> Iterator[Site]:
    with SMTPServer() as smtp:
        site = make_site(tmp_path, http_server, smtp, extra={"NEWSLETTER_KEEP_PAPERS_DAYS": "30"})
        site.config_path.write_text(CONFIG.format(base=http_server.url("").rstrip("/")), encoding="utf-8")
        yield site


def run(site: Site, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=site.environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def age(db: sqlite3.Connection, by: timedelta) -> None:
    """Move every stored time `by` into the past, as if it had all happened that long ago."""
    for table, columns in {
        "papers": ("first_seen", "updated"),
        "deliveries": ("created", "updated"),
        "layouts": ("created",),
        "popularity": ("at",),
        "schedule": ("slot", "updated"),
    }.items():
        for column in columns:
            for (value,) in db.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall():
                db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", ((datetime.fromisoformat(value) - by).isoformat(), value))
    db.commit()


def test_a_pruned_ledger_still_sends_no_old_paper_again_and_a_kept_edition_still_opens(site: Site) -> None:
    run(site, "send")
    (ada_mail,), (bob_mail,) = digests(site, "ada@example.org"), digests(site, "bob@example.org")
    (ada,), (bob,) = layouts(site, "ada@example.org"), layouts(site, "bob@example.org")
    db = sqlite3.connect(site.env.db)
    age(db, AGE)  # every paper seen and both digests sent 100 days ago ...
    recent = (datetime.now(UTC) - timedelta(days=5)).isoformat()
    db.execute("UPDATE deliveries SET created = ?, updated = ? WHERE subscriber = 'ada@example.org'", (recent, recent))  # ... but Ada's 5 days ago
    db.commit()
    total = db.execute("SELECT COUNT(*) FROM papers").fetchone()[0]
    db.close()

    before = snapshot(site)
    dry = run(site, "prune", "--dry-run")
    assert dry.startswith("Would remove") and "1 finished deliveries, 1 edition layouts" in dry, dry
    assert snapshot(site) == before, "a dry run changes nothing"

    output = run(site, "prune")
    assert output.startswith("Removed") and "1 finished deliveries, 1 edition layouts" in output, output
    assert "Kept: finished deliveries and their edition pages since" in output
    with Store(site.env.db) as store:
        assert [d.subscriber for d in store.deliveries()] == ["ada@example.org"]
        held = set(ada.ids)
        assert {p.id for p in store.papers_by_id(held) if p.title} == held, "the kept edition's papers keep their bodies, however old"
        cut = store.db.execute("SELECT id, data FROM papers WHERE pruned IS NOT NULL").fetchall()
        assert cut and len(cut) + len(held) == total and not held & {r["id"] for r in cut}
        stub = store.paper(cut[0]["id"])
        assert stub is not None and (stub.title, stub.abstract, stub.authors) == ("", "", ()) and stub.sources, "a cut paper keeps its id and sources"
        assert store.db.execute("SELECT COUNT(*) FROM papers").fetchone()[0] == total, "no paper's row goes: a re-fetched one is known"
    assert "1 finished deliveries" not in run(site, "prune"), "a second prune finds nothing more of it"

    page = site.client.get(link(ada_mail, "editions"))
    assert page.status_code == 200 and page.text.count('<td class="paper') == ada.total, "Ada's edition, within its horizon, still opens whole"
    assert site.client.get(link(bob_mail, "editions")).status_code == 404, "Bob's, past it, is gone"

    db = sqlite3.connect(site.env.db)
    new_one = bob.ids[0]  # the control: forgotten outright, it is news to Bob, whose delivery of it was pruned
    db.execute("DELETE FROM papers WHERE id = ?", (new_one,))
    db.execute("DELETE FROM http_cache")  # no 304s: every paper comes again, the cut ones too
    db.commit()
    db.close()
    sent = len(site.smtp.messages)
    run(site, "send", "--to", "ada@example.org")
    run(site, "send", "--to", "bob@example.org")
    mails = site.smtp.messages[sent:]
    with Store(site.env.db) as store:
        assert store.db.execute("SELECT COUNT(*) FROM papers WHERE pruned IS NOT NULL").fetchone()[0] == 0, "fetched again, the cut ones have their bodies back"
        again = [d for d in store.deliveries() if d.created > datetime.now(UTC) - timedelta(hours=1)]
    assert [(d.subscriber, d.paper_ids) for d in again] == [("bob@example.org", (new_one,))], "only the forgotten paper went out, and not to Ada"
    assert len(mails) == 1, "Ada's kept edition still counts it as hers"


def test_a_cut_paper_fetched_again_gets_its_body_back_and_stays_old(database: Path | str) -> None:
    with Store(database) as store:
        old = T0 - timedelta(days=400)
        paper = Paper(id="2311.00001", title="Old", abstract="Long ago.", sources=("arxiv",), version=2)
        store.add_papers([paper], old)
        assert store.prune(_keep(T0), now=T0).paper_bodies == 1
        assert store.paper(paper.id) == Paper(id=paper.id, title="", sources=("arxiv",), version=2)
        assert store.papers_seen_since(old) == [], "a cut paper is no candidate, whatever the look-back"
        assert store.add_papers([paper], T0) == (0, 0), "known, and not new to its source"
        assert store.paper(paper.id) == paper
        assert store.papers_seen_since(T0 - timedelta(days=7)) == [], "first seen long ago: no candidate"
        store.add_papers([Paper(id=paper.id, title="Old", version=3)], T0, replace=True)
        assert [p.paper.id for p in store.papers_seen_since(T0 - timedelta(days=7))] == [paper.id], "a revision is news, as before"


def test_prune_keeps_what_rising_reads_and_drops_what_no_window_reaches(database: Path | str) -> None:
    with Store(database) as store:
        hot, old = Paper(id="2411.00001", title="Hot", score=1), Paper(id="2301.00001", title="Old", score=9)
        store.add_papers([old], T0 - timedelta(days=30))
        store.record_popularity([old], T0 - timedelta(days=30), 24)
        store.add_papers([hot], T0 - timedelta(hours=48))
        for hours, score in ((48, 1), (30, 5), (20, 8), (1, 20)):
            store.record_popularity([Paper(id=hot.id, title="Hot", score=score)], T0 - timedelta(hours=hours), 24 * 7)
        since = T0 - timedelta(hours=24)
        wanted = store.popularity_history([hot.id, old.id], since)
        assert [s.figures.upvotes for s in wanted[hot.id]] == [5, 8, 20], "the gain over a day counts from the last snapshot before it"

        pruned = store.prune(_keep(T0), now=T0)
        assert pruned.snapshots == 2, "the hot paper's oldest, and the old paper's only one (no fetch saw it within the horizon)"
        assert store.popularity_history([hot.id, old.id], since) == {hot.id: wanted[hot.id]}, "rising reads the same gains"


def test_http_validators_stay_for_configured_urls_and_recent_saves(database: Path | str) -> None:
    with Store(database) as store:
        store.save_validators("https://feeds.example.org/configured", '"a"', None, T0 - timedelta(days=60))
        store.save_validators("https://feeds.example.org/removed", '"b"', None, T0 - timedelta(days=60))
        store.save_validators("https://feeds.example.org/page-2", '"c"', None, T0 - timedelta(days=1))
        assert store.prune(_keep(T0), now=T0).http_cache == 1
        assert store.validators("https://feeds.example.org/removed") == (None, None)
        assert store.validators("https://feeds.example.org/configured") == ('"a"', None)
        assert store.validators("https://feeds.example.org/page-2") == ('"c"', None)


def test_unfinished_deliveries_and_papers_waiting_in_them_are_never_pruned(database: Path | str) -> None:
    with Store(database) as store:
        old = T0 - timedelta(days=400)
        store.add_papers([Paper(id="p1", title="One", abstract="x" * 500), Paper(id="p2", title="Two")], old)
        store.plan_delivery("e-old", "ada@example.org", Layout(old.date(), (Shelf("t", "T", ("p1",), ()),)), old)
        store.record_sent("bob@example.org", ["p2"], "welcome", old)
        pruned = store.prune(_keep(T0), now=T0)
        assert (pruned.deliveries, pruned.layouts, pruned.sent_lists, pruned.paper_bodies) == (0, 0, 1, 1)
        assert [d.status for d in store.deliveries()] == ["pending"]
        paper = store.paper("p1")
        assert paper is not None and paper.abstract == "x" * 500, "a digest yet to go out is built from its papers"
        assert store.sent_paper_ids("ada@example.org") == {"p1"}
        assert store.pruned_before() == T0 - timedelta(days=90)


def _keep(now: datetime) -> Keep:
    return Keep(
        deliveries=now - timedelta(days=90),
        papers=now - timedelta(days=365),
        candidates=now - timedelta(days=7),
        snapshots=now - timedelta(hours=24),
        http_cache=now - timedelta(days=7),
        urls=frozenset({"https://feeds.example.org/configured"}),
    )


def test_deliveries_are_kept_as_long_as_soft_bounces_in_a_row_are_counted_over() -> None:
    """INBOUND_SOFT_BOUNCE_DAYS beyond how long editions are kept: prune keeps the digests the count reads."""
    config = Config(Path("subscribers.yaml"), Settings(), (), {}, ())
    short = environment.load({"NEWSLETTER_KEEP_EDITIONS_DAYS": "10"})
    assert keep(config, short, T0).deliveries == T0 - timedelta(days=30), "the soft bounces' default 30 days"
    longer = environment.load({"NEWSLETTER_KEEP_EDITIONS_DAYS": "10", "INBOUND_SOFT_BOUNCE_DAYS": "120"})
    assert keep(config, longer, T0).deliveries == T0 - timedelta(days=120)
    both = environment.load({"NEWSLETTER_KEEP_EDITIONS_DAYS": "200", "INBOUND_SOFT_BOUNCE_DAYS": "120"})
    assert keep(config, both, T0).deliveries == T0 - timedelta(days=200)
