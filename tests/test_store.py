"""The SQLite store: papers merge by id, first-seen time is kept, and the ledger moves rows one way."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.errors import StorageError
from newsletter.model.digest import Layout, Shelf
from newsletter.model.paper import Paper
from newsletter.model.signup import Choice
from newsletter.storage.store import Store

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def layout(shown: list[str], cut: tuple[str, ...] = ()) -> Layout:
    """An edition of one topic: these papers shown, those cut."""
    return Layout(T0.date(), (Shelf("agents", "LLM agents", tuple(shown), cut),))


def test_papers_are_new_once_and_merge_later_sightings(database: Path | str) -> None:
    with Store(database) as store:
        arxiv = Paper(id="2411.00001", title="A", categories=("cs.CL",), sources=("arxiv",), version=1)
        hf = Paper(id="2411.00001", title="A", score=42, sources=("hf",), version=2)
        assert store.add_papers([arxiv], T0) == (1, 1)
        assert store.add_papers([hf], T0 + timedelta(hours=1)) == (0, 1), "not new here, but new from the second source"
        assert store.add_papers([hf], T0 + timedelta(hours=2)) == (0, 0)
        merged = store.paper("2411.00001")
        assert merged is not None
        assert merged.score == 42 and merged.categories == ("cs.CL",) and merged.sources == ("arxiv", "hf") and merged.version == 2
        [stored] = store.papers_seen_since(T0)
        assert stored.first_seen == T0, "age counts from the first sighting"


def test_a_server_url_without_psycopg_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg is imported only to open a server: an SQLite installation never loads it, and one without the extra is told what to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed: importing it fails
    with pytest.raises(StorageError, match=r"names a PostgreSQL server, but psycopg is not installed: pip install 'newsletter\[postgres\]'"):
        Store("postgresql://ada:s3cret@/newsletter?host=/nowhere")


def test_an_sqlite_store_never_imports_psycopg(tmp_path: Path) -> None:
    code = f"import sys; from newsletter.storage.store import Store; Store({str(tmp_path / 'state.db')!r}).close(); print('psycopg' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_state_survives_reopening_the_file(database: Path | str) -> None:
    with Store(database) as store:
        store.add_papers([Paper(id="x", title="X")], T0)
        store.save_validators("http://h/feed", '"abc"', "Wed, 01 Jan 2026 00:00:00 GMT")
    with Store(database) as store:
        assert store.paper("x") is not None
        assert store.validators("http://h/feed") == ('"abc"', "Wed, 01 Jan 2026 00:00:00 GMT")


def test_a_row_is_claimed_once_and_sent_marks_its_papers(database: Path | str) -> None:
    with Store(database) as store:
        assert store.plan_delivery("e1", "Ada@example.org", layout(["p1", "p2"]))
        assert not store.plan_delivery("e1", "ada@example.org", layout(["p1"])), "one row per edition and subscriber"
        assert store.sent_paper_ids("ada@example.org") == {"p1", "p2"}, "papers waiting in a row are not offered again"
        assert store.claim("e1", "ada@example.org") == 1, "first attempt"
        assert store.claim("e1", "ada@example.org") is None, "a claimed row cannot be claimed twice"
        store.mark_sent("e1", "ada@example.org", "<m@x>", "250 ok")
        assert store.sent_paper_ids("ADA@example.org") == {"p1", "p2"}
        assert [r.status for r in store.deliveries()] == ["sent"]
        assert store.claim("e1", "ada@example.org") is None, "a sent row is never claimed again"


def test_an_exception_escaping_a_transaction_rolls_back_everything_inside_it(database: Path | str) -> None:
    with Store(database) as store:
        assert store.plan_delivery("e0", "bob@example.org", layout(["p0"])), "committed before: must survive the rollback"
        with pytest.raises(RuntimeError, match="boom"), store.transaction():
            assert store.plan_delivery("e1", "ada@example.org", layout(["p1", "p2"]))  # each joins the open transaction
            assert store.claim("e1", "ada@example.org") == 1
            store.save_validators("https://example.org/feed.xml", '"etag"', None)
            raise RuntimeError("boom")
        assert not store.db.in_transaction
        assert [(r.edition, r.subscriber, r.status) for r in store.deliveries()] == [("e0", "bob@example.org", "pending")]
        assert store.sent_paper_ids("ada@example.org") == set()
        assert store.validators("https://example.org/feed.xml") == (None, None)
        assert store.plan_delivery("e1", "ada@example.org", layout(["p1"])), "the row was never made, so it can be planned afresh"
    with Store(database) as reopened:  # and nothing half-done reached the file
        assert sorted((r.edition, r.status, r.attempts) for r in reopened.deliveries()) == [("e0", "pending", 0), ("e1", "pending", 0)]


def test_a_deferral_counts_an_attempt_unless_the_server_was_at_fault(database: Path | str) -> None:
    with Store(database) as store:
        store.plan_delivery("e1", "a@x.org", layout(["p1"]))
        store.claim("e1", "a@x.org")
        store.mark_deferred("e1", "a@x.org", "451 try later")
        assert store.claim("e1", "a@x.org") == 2
        store.mark_deferred("e1", "a@x.org", "cannot connect", counted=False)
        assert store.claim("e1", "a@x.org") == 2, "a refused connection says nothing about this reader"


def test_rows_interrupted_while_sending_are_sent_once_more_and_counted_as_uncertain(database: Path | str) -> None:
    with Store(database) as store:
        store.plan_delivery("e1", "a@x.org", layout(["p1"]))
        store.plan_delivery("e1", "b@x.org", layout(["p1"]))
        store.claim("e1", "a@x.org")
        assert store.recover_interrupted(limit=2) == 1, "only the row in `sending`"
        [row] = store.deliveries(["deferred"])
        assert row.uncertain == 1 and row.last_reply.startswith("interrupted")
        assert store.recover_interrupted(limit=2) == 0, "nothing new was interrupted"
        store.claim("e1", "a@x.org")
        assert store.recover_interrupted(limit=2) == 0
        [row] = store.deliveries(["failed"])
        assert (row.subscriber, row.uncertain) == ("a@x.org", 2), "a crash loop does not mail one reader forever"
        assert [r.status for r in store.deliveries(["pending"])] == ["pending"]
        assert store.sent_paper_ids("a@x.org") == {"p1"}, "the reader may have it: no new edition sends its papers again"


def test_a_row_unconfirmed_after_its_data_is_sent_once_more_then_failed_keeping_its_papers(database: Path | str) -> None:
    with Store(database) as store:
        store.plan_delivery("e1", "a@x.org", layout(["p1", "p2"]))
        store.claim("e1", "a@x.org")
        assert not store.mark_uncertain("e1", "a@x.org", "connection lost after the message", limit=2)
        [row] = store.deliveries()
        assert (row.status, row.uncertain, row.attempts) == ("deferred", 1, 1)
        assert store.claim("e1", "a@x.org") == 2
        assert store.mark_uncertain("e1", "a@x.org", "connection lost after the message", limit=2)
        [row] = store.deliveries()
        assert (row.status, row.uncertain) == ("failed", 2) and "not sent again" in (row.last_reply or "")
        assert store.sent_paper_ids("a@x.org") == {"p1", "p2"}

        store.plan_delivery("e2", "b@x.org", layout(["p3"]))
        store.claim("e2", "b@x.org")
        store.mark_uncertain("e2", "b@x.org", "connection lost after the message")
        store.claim("e2", "b@x.org")
        store.mark_failed("e2", "b@x.org", "550 no such user", hard=True, pause_after=3)
        assert store.sent_paper_ids("b@x.org") == {"p3"}, "an earlier try may have arrived"


def test_consecutive_hard_failures_pause_a_reader_and_a_success_resets_the_count(database: Path | str) -> None:
    with Store(database) as store:
        for n in range(1, 3):
            store.plan_delivery(f"e{n}", "a@x.org", layout([]))
            store.claim(f"e{n}", "a@x.org")
            assert not store.mark_failed(f"e{n}", "a@x.org", "550 no such user", hard=True, pause_after=2) or n == 2
        assert set(store.paused()) == {"a@x.org"}
        assert store.paused()["a@x.org"].failures == 2 and store.paused()["a@x.org"].last_failure == "550 no such user"
        assert store.resume("A@x.org") and store.paused() == {}

        store.plan_delivery("e3", "a@x.org", layout([]))
        store.claim("e3", "a@x.org")
        assert not store.mark_failed("e3", "a@x.org", "550 no such user", hard=True, pause_after=2)
        store.plan_delivery("e4", "a@x.org", layout([]))
        store.claim("e4", "a@x.org")
        store.mark_sent("e4", "a@x.org", "<m@x>", "250 ok")
        store.plan_delivery("e5", "a@x.org", layout([]))
        store.claim("e5", "a@x.org")
        assert not store.mark_failed("e5", "a@x.org", "550 no such user", hard=True, pause_after=2), "not consecutive"
        store.plan_delivery("e6", "a@x.org", layout([]))
        store.claim("e6", "a@x.org")
        assert not store.mark_failed("e6", "a@x.org", "gave up after 5 attempts", hard=False, pause_after=2), "soft failures never pause"
        assert store.paused() == {}


def test_a_ledger_from_before_the_uncertain_column_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.execute(
        "CREATE TABLE deliveries (edition TEXT NOT NULL, subscriber TEXT NOT NULL, status TEXT NOT NULL, paper_ids TEXT NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0, last_reply TEXT, message_id TEXT, created TEXT NOT NULL, updated TEXT NOT NULL, "
        "PRIMARY KEY (edition, subscriber))"
    )
    db.execute("INSERT INTO deliveries VALUES ('e1', 'a@x.org', 'sending', '[]', 1, NULL, NULL, '2026-11-25T07:00:00+00:00', '2026-11-25T07:00:00+00:00')")
    db.commit()
    db.close()
    with Store(tmp_path / "old.db") as store:
        assert store.recover_interrupted() == 1
        assert store.deliveries()[0].uncertain == 1


def test_source_health_counts_consecutive_failures(database: Path | str) -> None:
    with Store(database) as store:
        store.source_failed("s", "HTTP 500", T0)
        store.source_failed("s", "HTTP 503", T0)
        assert store.source_health()["s"].consecutive_failures == 2
        store.source_succeeded("s", 7, T0)
        health = store.source_health()["s"]
        assert health.consecutive_failures == 0 and health.papers_seen == 7 and health.last_error == "HTTP 503"


def test_what_every_reader_was_sent_read_at_once_is_what_each_reader_was_sent_read_alone(database: Path | str) -> None:
    """Ledger.sent_paper_ids_by_reader, the send's one read, against the per-reader query: waiting, sent, uncertain and
    refused rows, cut papers, welcome lists, revisions before and after a mail, and rows older than the horizon."""
    with Store(database) as store:
        store.add_papers([Paper(id=f"p{n}", title="P", version=1) for n in range(1, 9)], T0)
        hours = [T0 + timedelta(hours=h) for h in range(12)]

        def mailed(edition: str, who: str, shown: list[str], cut: tuple[str, ...], at: datetime) -> None:
            store.plan_delivery(edition, who, layout(shown, cut), at)
            store.claim(edition, who, at)
            store.mark_sent(edition, who, f"<{edition}.{who}>", "250 ok", at)

        for who in ("ada@example.org", "bob@example.org", "Cyd@example.org", "hal@example.org", "ida@example.org"):  # one edition, five readers
            mailed("e1", who, ["p1", "p2"], ("p3",), hours[1])
        mailed("e0", "ada@example.org", ["p8"], (), T0 - timedelta(days=30))  # before the horizon: not read with `since`
        mailed("e2", "bob@example.org", ["p4"], (), hours[2])
        store.plan_delivery("e3", "ada@example.org", layout(["p5"]), hours[3])  # pending
        store.plan_delivery("e3", "bob@example.org", layout(["p5", "p6"]), hours[3])
        store.claim("e3", "bob@example.org", hours[3])  # left in sending
        store.plan_delivery("e3", "dee@example.org", layout(["p6"]), hours[3])
        store.claim("e3", "dee@example.org", hours[3])
        store.mark_deferred("e3", "dee@example.org", "451 later", now=hours[3])  # deferred
        store.plan_delivery("e3", "eve@example.org", layout(["p7"]), hours[3])
        store.claim("e3", "eve@example.org", hours[3])
        store.mark_uncertain("e3", "eve@example.org", "lost", limit=1, now=hours[4])  # failed, the server may have it
        store.plan_delivery("e3", "fay@example.org", layout(["p7", "p1"]), hours[3])
        store.claim("e3", "fay@example.org", hours[3])
        store.mark_failed("e3", "fay@example.org", "550 no", hard=True, pause_after=3, now=hours[4])  # refused: nothing offered
        store.record_sent("gus@example.org", ["p2", "p8"], "welcome", hours[5])
        store.add_papers([Paper(id="p2", title="P", version=2), Paper(id="p7", title="P", version=2)], hours[6], replace=True)  # news again
        mailed("e4", "Cyd@example.org", ["p2"], (), hours[7])  # v2 mailed after its revision
        store.plan_delivery("e5", "ada@example.org", layout(["p7"]), hours[8])  # waiting rows hold every version

        readers = [f"{name}@example.org" for name in ("ada", "bob", "cyd", "dee", "eve", "fay", "gus", "hal", "ida")]
        for since in (None, T0 - timedelta(days=1), hours[2], hours[6]):
            everyone = store.sent_paper_ids_by_reader(since)
            assert {who: set(everyone.get(who, ())) for who in readers} == {who: store.sent_paper_ids(who, since) for who in readers}, since
            assert set(everyone) <= set(readers)
        everyone = store.sent_paper_ids_by_reader(T0 - timedelta(days=1))
        assert everyone["ada@example.org"] == {"p1", "p3", "p5", "p7"}, "e0 is past the horizon, p2 revised after e1, p7 waits"
        assert everyone["bob@example.org"] == {"p1", "p3", "p4", "p5", "p6"}
        assert everyone["eve@example.org"] == set(), "the server may have had p7, but v2 came after"
        assert "fay@example.org" not in everyone, "a refused row offered nothing"
        assert store.sent_paper_ids_by_reader(hours[11]) == {"ada@example.org": {"p5", "p7"}, "bob@example.org": {"p5", "p6"}, "dee@example.org": {"p6"}}
        assert everyone["hal@example.org"] is everyone["ida@example.org"], "readers sent the same mails share one set"


def test_a_higher_version_through_a_replace_source_is_news_again_once(database: Path | str) -> None:
    with Store(database) as store:
        store.add_papers([Paper(id="2411.00001", title="A", version=1)], T0)
        store.plan_delivery("e1", "ada@example.org", layout(["2411.00001"]), T0)
        store.claim("e1", "ada@example.org", T0)
        store.mark_sent("e1", "ada@example.org", "<m1>", "250 OK", T0 + timedelta(minutes=1))
        assert store.sent_paper_ids("ada@example.org") == {"2411.00001"}

        store.add_papers([Paper(id="2411.00001", title="A", version=2)], T0 + timedelta(hours=1))  # no replace asked
        assert store.sent_paper_ids("ada@example.org") == {"2411.00001"}
        store.add_papers([Paper(id="2411.00001", title="A", version=3)], T0 + timedelta(hours=2), replace=True)
        assert store.sent_paper_ids("ada@example.org") == set(), "v3 is news to someone sent v1"
        assert [sp.paper.id for sp in store.papers_seen_since(T0 + timedelta(days=30))] == []
        assert [sp.paper.id for sp in store.papers_seen_since(T0 + timedelta(hours=2))] == ["2411.00001"], "revised counts as recent"

        store.plan_delivery("e2", "ada@example.org", layout(["2411.00001"]), T0 + timedelta(hours=3))
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


def test_a_file_that_is_not_a_database_raises_storage_error_not_sqlite3(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"\x00garbage" * 500)
    with pytest.raises(StorageError, match=r"file is not a database.*restore a backup"):
        Store(tmp_path / "state.db")


def test_a_lock_held_past_the_timeout_raises_storage_error_and_leaves_no_transaction_open(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db", timeout=0.1) as store:
        other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageError, match=r"database is locked.*more than 0\.1 s"):
            store.plan_delivery("e1", "a@x.org", layout(["p1"]))
        other.execute("ROLLBACK")
        other.close()
        assert not store.db.in_transaction
        assert store.plan_delivery("e1", "a@x.org", layout(["p1"]))


def test_the_other_table_groups_read_back_what_they_wrote(database: Path | str) -> None:
    """Sources' validators, the schedule, sign-ups, link versions, bounces and paper lookups, on either engine."""
    with Store(database) as store:
        store.save_validators("https://a.org/feed", '"v1"', None)
        store.save_validators("https://a.org/feed", '"v2"', "Tue, 01 Dec 2026 07:00:00 GMT")
        assert store.validators("https://a.org/feed") == ('"v2"', "Tue, 01 Dec 2026 07:00:00 GMT")
        store.record_slot("Ada@Example.org", T0 + timedelta(days=1), "sent", T0)
        store.record_slot("ada@example.org", T0, "missed", T0)
        assert store.handled_slots() == {"ada@example.org": (T0 + timedelta(days=1), "sent")}, "an older slot never overwrites a newer one"
        assert [store.revoke_links("ada@example.org") for _ in range(2)] == [1, 2] and store.link_versions() == {"ada@example.org": 2}
        store.remember_confirmed("bo@example.org", Choice(("ml",), "daily"), T0)
        assert store.confirmed_since(T0) == [("bo@example.org", Choice(("ml",), "daily"))]
        assert store.confirmed_since(T0 + timedelta(seconds=1)) == [] and store.meta("yaml.confirmed:bo@example.org") is None, "older notes dropped"
        store.record_unsubscribed("Cy@example.org", T0)
        assert store.unsubscribed() == {"cy@example.org"} and store.unsubscribed_since(T0) == ["cy@example.org"]
        assert store.forget_unsubscribed("cy@example.org") and not store.forget_unsubscribed("cy@example.org")
        assert store.record_bounce("e1", "ada@example.org", "soft_bounce", "mailbox full", T0)
        assert not store.record_bounce("e1", "ada@example.org", "soft_bounce", "mailbox full", T0), "the same report read twice"
        assert store.count_unattributed() == 1 and store.inbound_counts() == {"soft_bounce": 1, "unattributed": 1}
        store.add_papers([Paper(id="p1", title="One"), Paper(id="p2", title="Two 100%")], T0)
        assert [p.title for p in store.papers_by_id(["p2", "nope", "p1"])] == ["Two 100%", "One"], "in the order asked, a % kept"
        assert [c.paper.id for c in store.papers_changed_since(0)] == ["p1", "p2"] and store.papers_changed_since(2) == []


def test_unfinished_rows_are_taken_once_per_store(database: Path | str) -> None:
    with Store(database) as store, Store(database) as other:
        for who in ("a@x.org", "b@x.org", "c@x.org"):
            store.plan_delivery("e1", who, layout(["p1"]), T0)
        first = [d.subscriber for d in store.take_unfinished(2)]
        assert first == ["a@x.org", "b@x.org"], "oldest first"
        assert [d.subscriber for d in store.take_unfinished(2)] == ["c@x.org"] and store.take_unfinished(2) == [], "not those taken before"
        taken_by_other = [d.subscriber for d in other.take_unfinished(5)]
        if store.shared:
            assert taken_by_other == [], "another sender still running holds them"
        else:
            assert taken_by_other == first + ["c@x.org"], "an SQLite file has one sender: the lock file says the last one is gone"


def test_a_registered_worker_keeps_the_rows_it_took_until_it_is_forgotten(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as worker, Store(tmp_path / "state.db") as other:
        worker.register_sender()
        for who in ("a@x.org", "b@x.org", "c@x.org"):
            worker.plan_delivery("e1", who, layout(["p1"]), T0)
        assert [d.subscriber for d in worker.take_unfinished(2)] == ["a@x.org", "b@x.org"]
        assert worker.claim("e1", "a@x.org") == 1
        assert [d.subscriber for d in other.take_unfinished(5)] == ["c@x.org"], "a running worker's rows are left alone"
        assert other.recover_interrupted() == 0, "its row in `sending` is in its hands, not interrupted"
        other.forget_senders([worker.db.worker])
        assert [d.subscriber for d in other.take_unfinished(5)] == ["b@x.org"], "a killed worker's rows it never claimed are free"
        assert other.recover_interrupted() == 1, "and its row in `sending` was interrupted"


def test_a_server_that_cannot_be_reached_is_one_line_naming_it_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://ada:s3cret@/newsletter?host={tmp_path}"
    with pytest.raises(StorageError) as caught:
        Store(url, timeout=1)
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(f"the state database postgresql://ada@/newsletter?host={tmp_path} failed: ") and "NEWSLETTER_DB" in message


def test_the_editions_a_bounce_may_name_are_every_edition_once_by_name_from_the_last(database: Path | str) -> None:
    with Store(database) as store:
        assert store.sent_editions() == []
        for edition in ("send-20261120T080000.000000Z", "slot-2026-11-21T07:00Z", "send-20261122T080000.000000Z"):
            for who in ("ada@example.org", "bob@example.org"):
                store.plan_delivery(edition, who, layout(["p1"]))
        store.claim("slot-2026-11-21T07:00Z", "bob@example.org")
        store.mark_sent("slot-2026-11-21T07:00Z", "bob@example.org", "<m@x>", "250 ok")
        assert store.sent_editions() == ["slot-2026-11-21T07:00Z", "send-20261122T080000.000000Z", "send-20261120T080000.000000Z"]
        assert store.sent_to("slot-2026-11-21T07:00Z") == ["bob@example.org"], "only whoever it was sent to"
        assert store.sent_to("send-20261122T080000.000000Z") == []
