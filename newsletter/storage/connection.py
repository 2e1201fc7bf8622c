"""One interface over the two engines the store runs on: an SQLite file (embedded, the default) or a PostgreSQL server.

The store's SQL is written once, in the subset both accept (`?` placeholders, ON CONFLICT, RETURNING); this module
is the only place that knows which engine is behind it: placeholders, rows read by name or position, how a
transaction begins, the schema version, and the few PostgreSQL spellings of SQLite functions.
"""

from __future__ import annotations

import functools
import re
import secrets
import sqlite3
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from newsletter.errors import StorageError

URL_SCHEMES = ("postgresql://", "postgres://")  # NEWSLETTER_DB naming a server, not a file


def engine_errors() -> tuple[type[Exception], ...]:
    """What either engine raises. psycopg is imported only to open a server (it takes a quarter of a second, on
    every command), so until then no error can be one of its."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def is_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def redacted(url: str) -> str:
    """The URL as messages may show it: without its password."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL psycopg could read either: name only its scheme, in case a password is in the rest
        return url.partition("://")[0] + "://…"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{host}"))


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the store's SQL runs on; rows are read by column name or by position either way."""

    dialect: str  # "sqlite" or "postgresql"
    worker: int  # this connection's number in deliveries.claimed_by
    alive: str  # a subquery of the claimed_by numbers whose connections are still open: another process's rows it has in hand
    skip_locked: str  # what ends a SELECT of delivery rows `d` to take: rows another transaction is taking are passed over

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Any: ...
    def begin(self) -> None: ...
    def exclusive(self, name: str) -> None: ...
    def columns(self, table: str) -> set[str]: ...
    def version(self) -> int: ...
    def set_version(self, version: int) -> None: ...
    def close(self) -> None: ...


class SQLite(sqlite3.Connection):
    """An SQLite file in WAL mode; writers queue at BEGIN IMMEDIATE, and one sender per file holds its lock file."""

    dialect = "sqlite"
    alive = "SELECT worker FROM senders"  # only this run's `send --workers` processes (the lock file): every other row in `sending` was interrupted
    skip_locked = ""  # writers queue at BEGIN IMMEDIATE: no row is being taken by another
    worker = 0  # set per connection: rows it took in an earlier run are free again

    def begin(self) -> None:
        self.execute("BEGIN IMMEDIATE")

    def exclusive(self, name: str) -> None:
        """Inside a transaction, wait for any other holding `name`: BEGIN IMMEDIATE already made every writer wait."""

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.execute(f"PRAGMA table_info({table})")}

    def version(self) -> int:
        return int(self.execute("PRAGMA user_version").fetchone()[0])

    def set_version(self, version: int) -> None:
        self.execute(f"PRAGMA user_version = {version:d}")


def sqlite(path: Path, timeout: float) -> SQLite:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, factory=SQLite)
    db.worker = secrets.randbits(31) + 1
    try:
        db.row_factory = sqlite3.Row
        db.create_function("greatest", -1, _greatest, deterministic=True)
        _wal(db, timeout)
        db.execute("PRAGMA synchronous=FULL")  # NORMAL in WAL mode can lose committed ledger writes on power loss
    except BaseException:
        db.close()
        raise
    return db


def _greatest(*values: Any) -> Any:
    """PostgreSQL's GREATEST: the largest value that is not NULL."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL, waiting as a busy handler would: SQLite answers "database is locked" at once, without its busy
    handler, when two connections (the daemon and the web app starting together) switch a new file at the same moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class Row:
    """A PostgreSQL row read as sqlite3.Row is: by column name or position, and `dict(row)`."""

    __slots__ = ("names", "values")

    def __init__(self, values: Sequence[Any], names: dict[str, int]) -> None:
        self.values = values
        self.names = names

    def __getitem__(self, key: int | str) -> Any:
        return self.values[self.names[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def keys(self) -> list[str]:
        return list(self.names)


def _row_maker(cursor: Any) -> Any:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


class Postgres:
    """A PostgreSQL connection in autocommit mode, BEGIN and COMMIT sent as SQLite's are; the text columns
    compare byte by byte (COLLATE "C"), as SQLite's do, so ISO times and key ranges order the same."""

    dialect = "postgresql"
    alive = "SELECT pid FROM pg_stat_activity"
    skip_locked = " FOR UPDATE OF d SKIP LOCKED"

    def __init__(self, url: str, timeout: float) -> None:
        try:
            import psycopg
        except ImportError:  # the `postgres` extra is not installed: only SQLite files can be opened
            raise StorageError(
                f"NEWSLETTER_DB={redacted(url)} names a PostgreSQL server, but psycopg is not installed: pip install 'newsletter[postgres]'"
            ) from None
        self._idle = psycopg.pq.TransactionStatus.IDLE
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout)), row_factory=_row_maker)
        self.conn.execute(f"SET lock_timeout = {round(timeout * 1000):d}")
        self.worker = int(self.conn.info.backend_pid)

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != self._idle

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        query, order = _translate(sql)
        return self.conn.execute(query, [parameters[i] for i in order] if order is not None else parameters)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Any:
        query, order = _translate(sql)
        rows = seq if order is None else ([params[i] for i in order] for params in seq)
        with self.conn.cursor() as cur:
            cur.executemany(query, list(rows))
            return cur

    def begin(self) -> None:
        self.execute("BEGIN")

    def exclusive(self, name: str) -> None:
        """Inside a transaction, wait for any other holding `name` (a read-then-write that must not interleave), until it ends."""
        self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    def columns(self, table: str) -> set[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?", (table,))
        return {row[0] for row in rows}

    def version(self) -> int:
        """PostgreSQL has no user_version: the count lives in a one-row table of its own."""
        if not self.columns("schema_version"):  # read from the catalog as of now: another may have just made it
            return 0
        row = self.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row[0])

    def set_version(self, version: int) -> None:
        self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        self.execute("DELETE FROM schema_version")
        self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def close(self) -> None:
        self.conn.close()


def lock_key(name: str) -> int:
    """A PostgreSQL advisory lock number for a name: the same in every process."""
    return zlib.crc32(b"newsletter:" + name.encode())


_PLACEHOLDER = re.compile(r"\?(\d*)")
_JSON_EACH = re.compile(r"json_each\((\?\d*)\)")
_TEXT = re.compile(r"\bTEXT\b")


@functools.lru_cache(maxsize=512)
def _translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """SQLite's spelling in PostgreSQL's: `?`/`?N` as `%s` (with the order to pass the parameters in, when numbered
    ones repeat), json_each as json_array_elements_text, and text columns created to compare byte by byte."""
    sql = sql.replace("%", "%%")
    sql = _JSON_EACH.sub(r"json_array_elements_text(CAST(\1 AS json))", sql)
    if sql.lstrip().upper().startswith(("CREATE TABLE", "ALTER TABLE")):
        sql = _TEXT.sub('TEXT COLLATE "C"', sql)
    order: list[int] = []
    numbered = False

    def place(match: re.Match[str]) -> str:
        nonlocal numbered
        if match.group(1):
            numbered = True
            order.append(int(match.group(1)) - 1)
        else:
            order.append(len(order))
        return "%s"

    sql = _PLACEHOLDER.sub(place, sql)
    return sql, tuple(order) if numbered else None
