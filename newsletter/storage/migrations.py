"""The schema as an ordered list of migrations; `PRAGMA user_version` (on PostgreSQL the schema_version table)
counts how many a database has had. The same migrations build an SQLite file and a PostgreSQL database.

A migration is appended, never edited or reordered once released: a database at version N has had exactly
the first N. Opening a store applies the pending ones in one transaction (BEGIN IMMEDIATE, or on PostgreSQL an
advisory lock, so two processes opening at once do not both migrate); a database from a newer newsletter is
refused rather than guessed at.

Databases made before versions were recorded (user_version 0) hold some or all of what migrations 1-3
create, so those three only create what is missing: `CREATE ... IF NOT EXISTS`, and a column only if absent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from newsletter.errors import SchemaTooNew
from newsletter.ingest.fields import readable_text
from newsletter.storage.connection import Connection

Migration = Callable[[Connection], None]


def _columns(db: Connection, table: str) -> set[str]:
    return db.columns(table)


def m001_tables(db: Connection) -> None:
    """Every table and index, as the schema stood when versions began, less the two columns 2 and 3 add."""
    for statement in _TABLES:
        db.execute(statement)


def m002_papers_revised(db: Connection) -> None:
    """papers.revised: when a source with `replace: true` last brought a newer arXiv version (news again to those sent an older one)."""
    if "revised" not in _columns(db, "papers"):
        db.execute("ALTER TABLE papers ADD COLUMN revised TEXT")


def m003_deliveries_uncertain(db: Connection) -> None:
    """deliveries.uncertain: how often a row was interrupted while sending (the server may have it)."""
    if "uncertain" not in _columns(db, "deliveries"):
        db.execute("ALTER TABLE deliveries ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0")


def m004_link_versions(db: Connection) -> None:
    """link_versions: each reader's link version; bumping it voids every link mailed to them before."""
    db.execute("CREATE TABLE IF NOT EXISTS link_versions (subscriber TEXT PRIMARY KEY, version INTEGER NOT NULL)")


def m005_papers_changed(db: Connection) -> None:
    """papers.changed: a number that grows with every insert or merge, so the public pages read only the papers
    changed since they last looked (`updated` cannot tell: one fetch stamps every source's papers with the same time)."""
    db.execute("ALTER TABLE papers ADD COLUMN changed INTEGER NOT NULL DEFAULT 0")
    if db.dialect == "sqlite":  # a PostgreSQL database is new at this step: it has no papers to number
        db.execute("UPDATE papers SET changed = rowid")
    db.execute("CREATE INDEX papers_changed ON papers(changed)")


def m006_mail_that_comes_back(db: Connection) -> None:
    """bounces: each attributed report (bounce, complaint) per delivery; readers.pause_reason and resumed_at; deliveries found by Message-ID."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS bounces (
    edition TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (edition, subscriber, kind)
)"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS bounces_subscriber ON bounces(subscriber, at)")
    db.execute("CREATE INDEX IF NOT EXISTS deliveries_message_id ON deliveries(message_id)")
    if "pause_reason" not in _columns(db, "readers"):
        db.execute("ALTER TABLE readers ADD COLUMN pause_reason TEXT")
    if "resumed_at" not in _columns(db, "readers"):
        db.execute("ALTER TABLE readers ADD COLUMN resumed_at TEXT")  # soft bounces before it no longer count


def m007_popularity_snapshots(db: Connection) -> None:
    """popularity: the upvotes, comments and stars each fetch saw per paper, so `sort: rising` can rank by gain (pruned on write)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS popularity (paper TEXT NOT NULL, at TEXT NOT NULL, upvotes INTEGER, comments INTEGER, stars INTEGER, "
        "PRIMARY KEY (paper, at))"
    )


def m008_edition_layouts(db: Connection) -> None:
    """layouts: each distinct edition (its sections, shown and cut ids) stored once by content hash, and
    deliveries.layout pointing at it, so storage grows with editions rather than readers times papers.
    Rows from before keep their paper_ids (new rows leave it empty) and have no edition page."""
    db.execute("CREATE TABLE layouts (key TEXT PRIMARY KEY, data TEXT NOT NULL, created TEXT NOT NULL)")
    db.execute("ALTER TABLE deliveries ADD COLUMN layout TEXT REFERENCES layouts(key)")
    db.execute("CREATE INDEX deliveries_layout ON deliveries(subscriber, layout)")


def m009_sources_last_warning(db: Connection) -> None:
    """sources.last_warning: what was odd about the last successful fetch (a feed with no entries), for `newsletter sources`."""
    db.execute("ALTER TABLE sources ADD COLUMN last_warning TEXT")


def m010_sent_from_deliveries(db: Connection) -> None:
    """The papers sent to a reader are read from their deliveries' layouts (stored once per distinct edition)
    rather than kept as a row per (reader, paper): `sent` goes. `sent_lists` holds one row per mail sent outside
    the ledger (the welcome's taste of the digest) with its papers; each old `sent` row that no delivery
    accounts for (the same edition, sent at the same moment, holding that paper) moves there."""
    db.execute(
        "CREATE TABLE sent_lists (subscriber TEXT NOT NULL, sent_at TEXT NOT NULL, edition TEXT NOT NULL, paper_ids TEXT NOT NULL, "
        "PRIMARY KEY (subscriber, sent_at, edition))"
    )
    layouts: dict[str, set[str]] = {}
    loose: dict[tuple[str, str, str], list[str]] = {}
    group: tuple[str, str] | None = None
    covered: tuple[str, set[str]] | None = None  # the delivery's sent time and papers, when it counts as sent
    for subscriber, paper_id, edition, sent_at in db.execute("SELECT subscriber, paper_id, edition, sent_at FROM sent ORDER BY subscriber, edition"):
        if group != (subscriber, edition):
            group = (subscriber, edition)
            covered = _delivered(db, edition, subscriber, layouts)
        if covered is None or covered[0] != sent_at or paper_id not in covered[1]:
            loose.setdefault((subscriber, sent_at, edition), []).append(paper_id)
    db.executemany(
        "INSERT INTO sent_lists (subscriber, sent_at, edition, paper_ids) VALUES (?, ?, ?, ?)",
        [(subscriber, sent_at, edition, json.dumps(ids)) for (subscriber, sent_at, edition), ids in loose.items()],
    )
    db.execute("DROP TABLE sent")


def _delivered(db: Connection, edition: str, subscriber: str, layouts: dict[str, set[str]]) -> tuple[str, set[str]] | None:
    """When a delivery counted as sent (sent, or failed after the server may have had it) was sent, and its papers."""
    row = db.execute(
        "SELECT d.status, d.uncertain, d.updated, d.paper_ids, d.layout, l.data FROM deliveries d LEFT JOIN layouts l ON l.key = d.layout "
        "WHERE d.edition = ? AND d.subscriber = ?",
        (edition, subscriber),
    ).fetchone()
    if row is None or not (row[0] == "sent" or (row[0] == "failed" and row[1] > 0)):
        return None
    ids = set(json.loads(row[3]))
    if row[4] is not None and row[5] is not None:
        if row[4] not in layouts:
            layouts[row[4]] = {pid for section in json.loads(row[5])["sections"] for pid in section["shown"] + section["cut"]}
        ids |= layouts[row[4]]
    return row[2], ids


def m011_hot_path_indexes(db: Connection) -> None:
    """Indexes for the queries every send and fetch makes, so none scans a table that grows with history: papers
    revised since (the candidates' second half), a reader's deliveries by status and time (papers sent to them),
    finished deliveries by time (prune) and deliveries by layout (an edition's page, and prune's unused layouts)."""
    db.execute("CREATE INDEX papers_revised ON papers(revised)")
    db.execute("DROP INDEX deliveries_subscriber")
    db.execute("CREATE INDEX deliveries_subscriber ON deliveries(subscriber, status, updated)")
    db.execute("DROP INDEX deliveries_status")
    db.execute("CREATE INDEX deliveries_status ON deliveries(status, updated)")
    db.execute("DROP INDEX deliveries_layout")
    db.execute("CREATE INDEX deliveries_layout ON deliveries(layout, subscriber)")


def m012_prunable(db: Connection) -> None:
    """papers.pruned: when `newsletter prune` cut a paper to what dedup needs (its id, version and sources), indexed with
    first_seen so each prune reads only the papers not cut yet; http_cache.saved: when a URL's validators were last saved."""
    db.execute("ALTER TABLE papers ADD COLUMN pruned TEXT")
    db.execute("CREATE INDEX papers_unpruned ON papers(pruned, first_seen)")
    db.execute("ALTER TABLE http_cache ADD COLUMN saved TEXT")


def m013_pending_choice_details(db: Connection) -> None:
    """pending_subscriptions.details: the sign-up's name, keywords, send time and time zone (JSON), written to the entry on confirming."""
    db.execute("ALTER TABLE pending_subscriptions ADD COLUMN details TEXT NOT NULL DEFAULT '{}'")


def m014_deliveries_claimed_by(db: Connection) -> None:
    """deliveries.claimed_by: the connection (a PostgreSQL backend) that took the row, so several senders share an edition
    and a row in `sending` counts as interrupted only once that connection is gone."""
    db.execute("ALTER TABLE deliveries ADD COLUMN claimed_by INTEGER")


def m015_sent_lists_by_time(db: Connection) -> None:
    """sent_lists indexed by time: a send reads every reader's welcome lists within the horizon at once (not reader by reader)."""
    db.execute("CREATE INDEX sent_lists_sent_at ON sent_lists(sent_at)")


def m016_papers_readable_latex(db: Connection) -> None:
    """Titles and abstracts stored before ingest rendered LaTeX readably get what a fetch gives them now (`readable_text`,
    ingest's own step), so old papers read, match and sort like new ones. A record from before has no `arxiv_comment`
    key (it came with the cleaning); one whose text changes is given it, so a second run leaves it alone: text stored
    since is not read again, as reading clean text again can still change it ("20-80~MHz" kept as written). Changed
    papers get a new change number and time, so the public pages and the edition pages read them again."""
    now = datetime.now(UTC).isoformat()
    changed = db.execute("SELECT coalesce(max(changed), 0) FROM papers").fetchone()[0]
    updates = []
    for paper_id, data in db.execute("SELECT id, data FROM papers ORDER BY changed, id").fetchall():
        fields = json.loads(data)
        if "arxiv_comment" in fields:  # read at ingest already
            continue
        stored = (fields.get("title") or "", fields.get("abstract") or "")
        title, abstract = readable_text(stored[0]), readable_text(stored[1], paragraphs=True)
        if (title, abstract) == stored:
            continue  # nothing to read (most text): the record stays as it was, and reading it again changes nothing
        fields.update(title=title, abstract=abstract, arxiv_comment=None)
        changed += 1
        updates.append((json.dumps(fields, ensure_ascii=False, separators=(",", ":")), now, changed, paper_id))
    db.executemany("UPDATE papers SET data = ?, updated = ?, changed = ? WHERE id = ?", updates)


def m017_senders(db: Connection) -> None:
    """senders: the worker processes of a `send --workers N` on an SQLite file while it runs, so each leaves alone the
    rows another has taken and a killed one's become free (PostgreSQL reads its live connections instead)."""
    db.execute("CREATE TABLE IF NOT EXISTS senders (worker INTEGER PRIMARY KEY, started TEXT NOT NULL)")


MIGRATIONS: list[Migration] = [
    m001_tables,
    m002_papers_revised,
    m003_deliveries_uncertain,
    m004_link_versions,
    m005_papers_changed,
    m006_mail_that_comes_back,
    m007_popularity_snapshots,
    m008_edition_layouts,
    m009_sources_last_warning,
    m010_sent_from_deliveries,
    m011_hot_path_indexes,
    m012_prunable,
    m013_pending_choice_details,
    m014_deliveries_claimed_by,
    m015_sent_lists_by_time,
    m016_papers_readable_latex,
    m017_senders,
]


def version(db: Connection) -> int:
    return db.version()


def migrate(db: Connection, name: str, migrations: Sequence[Migration] | None = None) -> int:
    """Bring the database to the latest version (all pending migrations or none); the version it ends at.

    `db` must be in autocommit mode (isolation_level None) and outside a transaction; `name` is how errors call the file.
    """
    steps = MIGRATIONS if migrations is None else migrations
    current = version(db)
    if current == len(steps):  # the usual open: no write lock taken
        return current
    if current > len(steps):
        raise SchemaTooNew(name, current, len(steps))
    db.begin()
    try:
        db.exclusive("migrate")
        current = version(db)  # another process may have migrated while this one waited for the lock
        if current > len(steps):
            raise SchemaTooNew(name, current, len(steps))
        for step in steps[current:]:
            step(db)
        db.set_version(len(steps))
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return len(steps)


_TABLES = (
    """CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    updated TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS papers_first_seen ON papers(first_seen)",
    """CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY,
    last_attempt TEXT,
    last_success TEXT,
    last_error TEXT,
    last_error_at TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    papers_seen INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS http_cache (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT
)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
    edition TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'deferred', 'failed')),
    paper_ids TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT,
    message_id TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (edition, subscriber)
)""",
    "CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries(status)",
    "CREATE INDEX IF NOT EXISTS deliveries_subscriber ON deliveries(subscriber, status)",
    """CREATE TABLE IF NOT EXISTS readers (
    subscriber TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_failure TEXT,
    paused_at TEXT
)""",
    """CREATE TABLE IF NOT EXISTS sent (
    subscriber TEXT NOT NULL,
    paper_id TEXT NOT NULL,
    edition TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (subscriber, paper_id)
)""",
    """CREATE TABLE IF NOT EXISTS schedule (
    subscriber TEXT PRIMARY KEY,
    slot TEXT NOT NULL,
    outcome TEXT NOT NULL,
    updated TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS pending_subscriptions (
    email TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    topics TEXT NOT NULL,
    frequency TEXT NOT NULL,
    created TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS rate_events (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS rate_events_key ON rate_events(kind, key, at)",
    """CREATE TABLE IF NOT EXISTS unsubscribed (
    email TEXT PRIMARY KEY,
    at TEXT NOT NULL
)""",
)
