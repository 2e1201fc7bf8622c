"""The connection every part of the store shares: pragmas, migrations at open, transactions, installation-wide values."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, Self, TypeVar

from newsletter.errors import StorageError
from newsletter.storage.migrations import migrate

P = ParamSpec("P")
R = TypeVar("R")
D = TypeVar("D", bound="Database")
DEFAULT_TIMEOUT = 30.0  # seconds to wait for another process's lock (NEWSLETTER_DB_TIMEOUT)


def utcnow() -> datetime:
    """The one clock the store uses, timezone-aware."""
    return datetime.now(UTC)


class Database:
    """The connection (WAL, migrated to the latest schema at open) and the meta table; the table groups build on it."""

    def __init__(self, path: Path | str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout
        if self.path.is_dir():
            raise StorageError(f"the state database {self.path} is a folder, not a file: point NEWSLETTER_DB at a file such as {self.path / 'newsletter.db'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"the state database {self.path} cannot be created: its folder {self.path.parent}: {exc.strerror or exc}") from exc
        with self.failures():
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            with self.failures():
                self.db.row_factory = sqlite3.Row
                _wal(self.db, timeout)
                self.db.execute("PRAGMA synchronous=FULL")  # NORMAL in WAL mode can lose committed ledger writes on power loss
                migrate(self.db, str(self.path))
        except BaseException:
            self.db.close()
            raise

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Turn an sqlite3 error into one StorageError line that names the file and what to do about it."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(_describe(exc, self.path, self.timeout)) from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE so concurrent writers queue instead of failing half-way; inside another transaction, join it."""
        if self.db.in_transaction:
            yield self.db
            return
        with self.failures():
            self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            with self.failures():
                self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """After a failure; SQLite may already have rolled back on its own (disk full, I/O error)."""
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error that brought us here is the one to report
                self.db.execute("ROLLBACK")

    # installation-wide values

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def guarded(method: Callable[Concatenate[D, P], R]) -> Callable[Concatenate[D, P], R]:
    """A store method whose sqlite3 errors come out as StorageError (see `Database.failures`)."""

    @functools.wraps(method)
    def wrapper(self: D, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.failures():
            return method(self, *args, **kwargs)

    return wrapper


def guard_methods(cls: type[D]) -> type[D]:
    """Wrap every public method of a store class (its mixins' too) with `guarded`, so no sqlite3 error leaves the store."""
    for name in dir(cls):
        if name.startswith("_") or name in ("transaction", "failures", "close"):
            continue
        attr = getattr(cls, name)
        if callable(attr) and not isinstance(attr, type):
            setattr(cls, name, guarded(attr))
    return cls


def _describe(exc: sqlite3.Error, path: Path, timeout: float) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        hint = f"another process held it locked for more than {timeout:g} s (NEWSLETTER_DB_TIMEOUT)"
    elif "full" in text:
        hint = "the disk is full: free some space"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        hint = "the file is damaged: restore a backup, or move it aside to start afresh"
    elif "readonly" in text or "unable to open" in text:
        hint = "check the file's and its folder's permissions"
    else:
        hint = type(exc).__name__
    return f"the state database {path} failed: {text} ({hint})"


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
