"""The connection every part of the store shares: which engine, migrations at open, transactions, installation-wide values."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, Self, TypeVar

from newsletter.errors import StorageError
from newsletter.storage.connection import Connection, Postgres, engine_errors, is_url, redacted, sqlite
from newsletter.storage.migrations import migrate

P = ParamSpec("P")
R = TypeVar("R")
D = TypeVar("D", bound="Database")
DEFAULT_TIMEOUT = 30.0  # seconds to wait for another process's lock (NEWSLETTER_DB_TIMEOUT)


def utcnow() -> datetime:
    """The one clock the store uses, timezone-aware."""
    return datetime.now(UTC)


class Database:
    """The connection (an SQLite file in WAL mode, or a PostgreSQL server), migrated to the latest schema at open,
    and the meta table; the table groups build on it."""

    def __init__(self, location: Path | str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.location = location  # as given: what another connection to the same store opens
        self.path: Path | None = None  # the SQLite file; None on a server
        self.db: Connection
        if is_url(location):
            assert isinstance(location, str)
            self.name = redacted(location)
            with self.failures():
                self.db = Postgres(location, timeout)
        else:
            self.path = Path(location)
            self.name = str(self.path)
            if self.path.is_dir():
                raise StorageError(
                    f"the state database {self.path} is a folder, not a file: point NEWSLETTER_DB at a file such as {self.path / 'newsletter.db'}"
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"the state database {self.path} cannot be created: its folder {self.path.parent}: {exc.strerror or exc}") from exc
            with self.failures():
                self.db = sqlite(self.path, timeout)
        try:
            with self.failures():
                migrate(self.db, self.name)
        except BaseException:
            self.db.close()
            raise

    @property
    def shared(self) -> bool:
        """Several senders may work on this store at once (PostgreSQL); an SQLite file has one at a time."""
        return self.db.dialect == "postgresql"

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Turn an engine error into one StorageError line that names the database and what to do about it."""
        try:
            yield
        except engine_errors() as exc:
            raise StorageError(_describe(exc, self.name, self.timeout)) from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN (IMMEDIATE on SQLite, so concurrent writers queue instead of failing half-way); inside another transaction, join it."""
        if self.db.in_transaction:
            yield self.db
            return
        with self.failures():
            self.db.begin()
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
            with contextlib.suppress(*engine_errors()):  # the error that brought us here is the one to report
                self.db.execute("ROLLBACK")

    # installation-wide values

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def guarded(method: Callable[Concatenate[D, P], R]) -> Callable[Concatenate[D, P], R]:
    """A store method whose engine errors come out as StorageError (see `Database.failures`)."""

    @functools.wraps(method)
    def wrapper(self: D, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.failures():
            return method(self, *args, **kwargs)

    return wrapper


def guard_methods(cls: type[D]) -> type[D]:
    """Wrap every public method of a store class (its mixins' too) with `guarded`, so no engine error leaves the store."""
    for name in dir(cls):
        if name.startswith("_") or name in ("transaction", "failures", "close"):
            continue
        attr = getattr(cls, name)
        if callable(attr) and not isinstance(attr, type):
            setattr(cls, name, guarded(attr))
    return cls


def _describe(exc: Exception, name: str, timeout: float) -> str:
    text = " ".join(str(exc).split())  # PostgreSQL's messages run over several lines
    if ("connection" in text and ("failed" in text or "refused" in text)) or "invalid dsn" in text or "invalid connection option" in text:
        hint = "check the URL in NEWSLETTER_DB and that the server is running"
    elif "locked" in text or "busy" in text or "lock timeout" in text:
        hint = f"another process held it locked for more than {timeout:g} s (NEWSLETTER_DB_TIMEOUT)"
    elif "full" in text:
        hint = "the disk is full: free some space"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        hint = "the file is damaged: restore a backup, or move it aside to start afresh"
    elif "readonly" in text or "unable to open" in text:
        hint = "check the file's and its folder's permissions"
    else:
        hint = type(exc).__name__
    return f"the state database {name} failed: {text} ({hint})"
