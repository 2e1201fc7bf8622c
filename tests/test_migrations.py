"""Schema migrations: fresh files end at the latest version, old files upgrade without loss, newer ones are refused."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest

from newsletter.errors import SchemaTooNew, StorageError
from newsletter.ingest.fields import fold_space, readable_text
from newsletter.ingest.sources import parse
from newsletter.model.config import Source
from newsletter.model.digest import Layout, Shelf
from newsletter.storage import migrations
from newsletter.storage.connection import Connection, Postgres, sqlite
from newsletter.storage.migrations import MIGRATIONS, Migration
from newsletter.storage.store import Store

SCHEMAS = Path(__file__).parent / "fixtures" / "schemas"
LATEST = len(MIGRATIONS)
NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def _old_database(path: Path, fixture: str) -> Path:
    """A state file as an older newsletter left it: its schema and rows, user_version 0."""
    db = sqlite3.connect(path)
    db.executescript((SCHEMAS / fixture).read_text(encoding="utf-8"))
    db.close()
    return path


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    rows = {t: [dict(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}
    db.close()
    return rows


def _connect(database: Path | str) -> Connection:
    """A connection to the store that migrates nothing, to look at what opening it left."""
    return Postgres(database, 5) if isinstance(database, str) else sqlite(database, 5)


def _shape(database: Path | str) -> tuple[dict[str, set[str]], set[str]]:
    """Each table's columns, and the index names (not the primary keys')."""
    db = _connect(database)
    try:
        if db.dialect == "sqlite":
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
        else:
            rows = db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> 'schema_version'")
            tables = [r[0] for r in rows]
            indexes = {r[0] for r in db.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname NOT LIKE '%_pkey'")}
        return {t: db.columns(t) for t in tables}, indexes
    finally:
        db.close()


def _user_version(database: Path | str) -> int:
    db = _connect(database)
    try:
        return db.version()
    finally:
        db.close()


def test_a_fresh_database_ends_at_the_latest_version(database: Path | str) -> None:
    with Store(database):
        pass
    assert LATEST == 17
    assert _user_version(database) == LATEST
    columns, indexes = _shape(database)
    assert "sent" not in columns and columns["sent_lists"] == {"subscriber", "sent_at", "edition", "paper_ids"}
    assert "pruned" in columns["papers"] and "saved" in columns["http_cache"]
    assert len(columns) == 16 and "revised" in columns["papers"] and "uncertain" in columns["deliveries"] and "link_versions" in columns
    assert "pause_reason" in columns["readers"] and "bounces" in columns and columns["senders"] == {"worker", "started"}
    assert "layout" in columns["deliveries"] and "layouts" in columns and "claimed_by" in columns["deliveries"]
    assert columns["popularity"] == {"paper", "at", "upvotes", "comments", "stars"}
    assert indexes == {
        "papers_first_seen",
        "papers_changed",
        "deliveries_status",
        "deliveries_subscriber",
        "deliveries_layout",
        "rate_events_key",
        "bounces_subscriber",
        "deliveries_message_id",
        "papers_revised",
        "papers_unpruned",
        "sent_lists_sent_at",
    }


@pytest.mark.parametrize("fixture", ["fa3b13e.sql", "b85425c.sql"], ids=["before-versions", "before-revised-and-uncertain"])
def test_an_old_database_upgrades_without_loss(tmp_path: Path, fixture: str) -> None:
    path = _old_database(tmp_path / "state.db", fixture)
    before = _rows(path)
    assert _user_version(path) == 0 and all(before.values()), "the fixture has rows in every table"

    with Store(path):
        pass

    assert _user_version(path) == LATEST
    after = _rows(path)
    for table, rows in before.items():
        if table == "sent":  # read from the deliveries now (test_an_upgraded_database_works)
            continue
        assert [{k: row[k] for k in old} for row, old in zip(after[table], rows, strict=True)] == rows, f"every {table} row survives as it was"
    _fresh_store = Store(tmp_path / "fresh.db")
    _fresh_store.close()
    assert _shape(path) == _shape(tmp_path / "fresh.db"), "the same tables, columns and indexes as a fresh database"
    if fixture == "b85425c.sql":
        assert [r["revised"] for r in after["papers"]] == [None, None, None]
        assert [r["uncertain"] for r in after["deliveries"]] == [0, 0, 0, 0]
    else:
        assert [r["revised"] for r in after["papers"]] == [None, "2026-11-26T06:00:04.870000+00:00", None]
        assert [r["uncertain"] for r in after["deliveries"]] == [0, 0, 0, 1]


@pytest.mark.parametrize("fixture", ["fa3b13e.sql", "b85425c.sql"])
def test_an_upgraded_database_works(tmp_path: Path, fixture: str) -> None:
    path = _old_database(tmp_path / "state.db", fixture)
    with Store(path) as store:
        revised_since_sent = fixture == "fa3b13e.sql"  # 2411.01877 got a new version after Ada was mailed it
        assert store.sent_paper_ids("ada@example.org") == {"2411.01234", "2411.02210"} | (set() if revised_since_sent else {"2411.01877"})
        assert store.claim("2026-11-26", "ada@example.org", NOW) == 1, "the old pending row"
        store.mark_sent("2026-11-26", "ada@example.org", "<m@x>", "250 ok", NOW)
        assert store.claim("2026-11-26", "grace@example.net", NOW) == 2, "the old deferred row, its attempts kept"
        assert store.recover_interrupted(limit=3, now=NOW) == 1
        [row] = store.deliveries(["deferred"])
        assert row.uncertain == (2 if fixture == "fa3b13e.sql" else 1)
        assert [r.status for r in store.deliveries()] == ["sent", "failed", "sent", "deferred"]
        assert store.source_health()["hf-daily"].consecutive_failures == 1
        assert store.validators("https://rss.arxiv.org/rss/cs.CL+cs.LG") == ('"5f2c-63a1b2c4d5e6f"', "Wed, 25 Nov 2026 05:00:00 GMT")
        assert store.meta("last_edition") == "2026-11-26"
        assert [s.paper.id for s in store.papers_seen_since(datetime(2026, 11, 25, tzinfo=UTC))] == ["2411.02210", "2411.01234", "2411.01877"]
        store.record_slot("lin@example.com", NOW, "sent", NOW)
        assert store.handled_slots()["lin@example.com"] == (NOW, "sent")


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    newer = LATEST + 1
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    with pytest.raises(SchemaTooNew) as caught:
        Store(path)
    assert isinstance(caught.value, StorageError)
    assert str(caught.value) == f"{path} has schema version {newer}; this newsletter knows up to {LATEST}: upgrade newsletter (or restore a backup)"
    assert _user_version(path) == newer and _shape(path) == ({}, set()), "nothing was touched"


def _counting(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[str]:
    ran: list[str] = []

    def wrap(step: Migration) -> Migration:
        def counted(db: Connection) -> None:
            ran.append(step.__name__)
            time.sleep(delay)
            step(db)

        return counted

    monkeypatch.setattr(migrations, "MIGRATIONS", [wrap(step) for step in MIGRATIONS])
    return ran


def test_opening_again_runs_no_migration(database: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _counting(monkeypatch)
    with Store(database):
        pass
    assert ran == [step.__name__ for step in MIGRATIONS]
    with Store(database):
        pass
    assert len(ran) == LATEST, "nothing ran the second time"


def _open_at_once(path: Path | str) -> list[BaseException]:
    """Two connections open the same file at the same moment, as the daemon and the web app starting together."""
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            Store(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_processes_opening_at_once_migrate_once(database: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _counting(monkeypatch, delay=0.05)
    assert _open_at_once(database) == []
    assert len(ran) == LATEST, "the second opener found the work done"
    assert _user_version(database) == LATEST


def test_two_processes_creating_the_database_together_both_open_it(tmp_path: Path) -> None:
    """SQLite refuses one of two simultaneous switches of a new file to WAL at once, without waiting, so the store
    waits and tries again (this failed about one time in fifteen)."""
    assert [error for n in range(60) for error in _open_at_once(tmp_path / f"{n}.db")] == []


def test_a_failing_migration_on_a_new_database_leaves_it_empty(database: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(db: Connection) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("the last migration failed")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="the last migration failed"):
        Store(database)
    assert _user_version(database) == 0 and _shape(database) == ({}, set()), "every step rolled back with it"
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    with Store(database):
        pass
    assert _user_version(database) == LATEST


def test_a_failing_migration_rolls_back_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _old_database(tmp_path / "state.db", "b85425c.sql")
    before, shape = _rows(path), _shape(path)

    def broken(db: Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration 4 failed")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="migration 4 failed"):
        Store(path)
    assert _user_version(path) == 0, "version unchanged"
    assert _shape(path) == shape and _rows(path) == before, "migrations 1-3 rolled back with it: no new table or column"

    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    with Store(path):
        pass
    assert _user_version(path) == LATEST


def test_sent_rows_are_read_from_the_deliveries_they_came_from_and_the_rest_kept_as_lists(tmp_path: Path) -> None:
    """Migration 10: the per-paper `sent` rows go; every reader is owed exactly the papers they were owed before."""
    path = tmp_path / "state.db"
    db = sqlite(path, 5)
    migrations.migrate(db, str(path), MIGRATIONS[:9])
    t = [(NOW + timedelta(hours=h)).isoformat() for h in range(6)]
    for pid, revised in (("p1", None), ("p2", None), ("p3", t[3]), ("p4", None), ("p5", None)):
        db.execute("INSERT INTO papers (id, data, first_seen, updated, revised) VALUES (?, '{}', ?, ?, ?)", (pid, t[0], t[0], revised))
    edition = Layout(NOW.date(), (Shelf("t", "T", ("p1",), ("p2", "p3")),))
    db.execute("INSERT INTO layouts (key, data, created) VALUES (?, ?, ?)", (edition.key, json.dumps(edition.to_dict()), t[1]))
    rows = [  # edition, subscriber, status, its own paper ids (rows from before layouts), layout, uncertain, updated
        ("e1", "ada@example.org", "sent", "[]", edition.key, 0, t[1]),
        ("e2", "ada@example.org", "sent", '["p3"]', None, 0, t[4]),  # p3 again, revised since e1
        ("e3", "ada@example.org", "pending", '["p5"]', None, 0, t[5]),
        ("e1", "carol@example.org", "failed", "[]", edition.key, 1, t[2]),  # the server may have had it
        ("e1", "dan@example.org", "failed", "[]", edition.key, 0, t[2]),  # refused: nothing offered
    ]
    for e, who, status, ids, key, uncertain, when in rows:
        db.execute(
            "INSERT INTO deliveries (edition, subscriber, status, paper_ids, layout, uncertain, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (e, who, status, ids, key, uncertain, when, when),
        )
    sent = [("ada", "p1", "e1", t[1]), ("ada", "p2", "e1", t[1]), ("ada", "p3", "e2", t[4]), ("ada", "p4", "welcome", t[0])]
    sent += [("carol", pid, "e1", t[2]) for pid in ("p1", "p2", "p3")] + [("bob", "p4", "welcome", t[0])]
    db.executemany("INSERT INTO sent (subscriber, paper_id, edition, sent_at) VALUES (?, ?, ?, ?)", [(f"{w}@example.org", p, e, s) for w, p, e, s in sent])
    readers = ["ada@example.org", "bob@example.org", "carol@example.org", "dan@example.org"]
    owed = {who: _sent_before_migration_10(db, who) for who in readers}
    db.close()
    assert owed == {
        "ada@example.org": {"p1", "p2", "p3", "p4", "p5"},
        "bob@example.org": {"p4"},
        "carol@example.org": {"p1", "p2"},  # p3 was revised after her try
        "dan@example.org": set(),
    }

    with Store(path) as store:
        assert {who: store.sent_paper_ids(who) for who in readers} == owed
        lists = [tuple(r) for r in store.db.execute("SELECT subscriber, edition, paper_ids FROM sent_lists ORDER BY subscriber")]
        assert lists == [("ada@example.org", "welcome", '["p4"]'), ("bob@example.org", "welcome", '["p4"]')], "only what no delivery accounts for"
        assert "sent" not in _shape(path)[0]


def _sent_before_migration_10(db: Connection, subscriber: str) -> set[str]:
    """Ledger.sent_paper_ids as it read the per-paper rows before migration 10."""
    sent = {
        r[0]
        for r in db.execute(
            "SELECT s.paper_id FROM sent s LEFT JOIN papers p ON p.id = s.paper_id WHERE s.subscriber = ? AND (p.revised IS NULL OR p.revised <= s.sent_at)",
            (subscriber,),
        )
    }
    for ids, data in db.execute(
        "SELECT d.paper_ids, l.data FROM deliveries d LEFT JOIN layouts l ON l.key = d.layout WHERE d.subscriber = ? AND d.status IN ('pending', 'sending', 'deferred')",
        (subscriber,),
    ):
        sent.update(json.loads(ids) + (Layout.from_dict(json.loads(data)).ids if data else []))
    return sent


ARXIV_RSS = Path(__file__).parent / "fixtures" / "arxiv_rss" / "aioarxiv__rss_all_archives_2024-11-28_full.xml"


def test_latex_stored_before_the_cleaning_is_read_as_a_fetch_reads_it_now(database: Path | str) -> None:
    """Migration 16: real arXiv titles and abstracts stored raw (as before ingest read LaTeX) come out as ingest gives
    them now; papers stored since stay as they were, even one that reading again would change."""
    fetched = {p.id: p for p in parse(Source("arxiv", "arxiv_rss"), ARXIV_RSS.read_bytes(), "https://rss.arxiv.org/rss/all").papers}
    raw = {e.link.rsplit("/", 1)[-1]: e for e in feedparser.parse(ARXIV_RSS.read_bytes()).entries}
    old_ids = ["2411.17875", "2411.17792", "2411.17797"]  # Erd\H{o}s; $H^3$Fusion; Precis\~ao … Cram\'er-Rao
    since = next(p for p in fetched.values() if readable_text(p.abstract, paragraphs=True) != p.abstract)  # "≈15~orbits"
    db = _connect(database)
    migrations.migrate(db, str(database), MIGRATIONS[:15])
    rows = []
    for n, pid in enumerate(old_ids, 1):
        record = fetched[pid].to_dict()
        for key in ("arxiv_comment", "primary_category", "ai_summary"):  # the keys that came with the cleaning
            del record[key]
        abstract = fold_space(raw[pid].summary.partition("Abstract:")[2])
        cut = abstract.index(". ") + 1  # two paragraphs, as feeds with blank lines in an abstract give
        record.update(title=fold_space(raw[pid].title), abstract=f"{abstract[:cut]}\n\n{abstract[cut + 1 :]}")
        rows.append((pid, record, n))
    rows.append((since.id, since.to_dict(), 4))
    for pid, record, n in rows:
        db.execute(
            "INSERT INTO papers (id, data, first_seen, updated, changed) VALUES (?, ?, ?, ?, ?)", (pid, json.dumps(record), NOW.isoformat(), NOW.isoformat(), n)
        )
    assert "Erd\\H{o}s" in rows[0][1]["title"] and "$H^3$" in rows[1][1]["title"]
    db.close()

    with Store(database) as store:
        for pid in old_ids:
            paper = store.paper(pid)
            assert paper is not None
            assert paper.title == fetched[pid].title, "the title a fetch gives now"
            assert "\n\n" in paper.abstract and paper.abstract.replace("\n\n", " ") == fetched[pid].abstract, "the abstract too, its paragraphs kept"
            assert "\\" not in paper.title + paper.abstract and "$" not in paper.title
        assert store.paper(since.id) == since, "clean text stored since is not read again"
        changes = {c.paper.id: c.changed for c in store.papers_changed_since(4)}
        assert sorted(changes) == sorted(old_ids), "the changed papers, and only those, are read again by the public pages"
        assert [store.paper(pid).title for pid in old_ids[:2]] == [  # type: ignore[union-attr]
            "On an Erdős-Szekeres Game",
            "H³Fusion: Helpful, Harmless, Honest Fusion of Aligned LLMs",
        ]

    db = _connect(database)
    before = [tuple(r) for r in db.execute("SELECT id, data, changed FROM papers ORDER BY id")]
    db.begin()
    migrations.m016_papers_readable_latex(db)
    db.execute("COMMIT")
    assert [tuple(r) for r in db.execute("SELECT id, data, changed FROM papers ORDER BY id")] == before, "a second run changes nothing"
    db.close()
