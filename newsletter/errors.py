"""Every exception the package raises, under one root, so a caller can catch `NewsletterError` and the CLI
can turn each kind into one clear line and its exit code."""

from __future__ import annotations

from dataclasses import dataclass


class NewsletterError(Exception):
    """The root: anything this package raises on purpose."""


# what the operator wrote


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the file, located as an editor would show it (1-based)."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"


class ConfigError(NewsletterError):
    """subscribers.yaml cannot be used; raised with every problem found, never just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class KeywordError(NewsletterError, ValueError):
    """A topic keyword cannot be read; the message is short enough to follow a file:line:col."""


class EnvError(NewsletterError, ValueError):
    """A deployment setting whose value cannot be used."""


class ConcurrentEdit(NewsletterError):
    """subscribers.yaml changed while this process was editing it; nothing was written, try again."""


# what comes from outside


class FetchError(NewsletterError):
    """A document could not be fetched; the message is a short reason fit to show an operator."""

    def __init__(self, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.body = body  # an HTTP 4xx's own body (at most 64 KiB): some services explain the error there


class SourceError(NewsletterError):
    """A source answered, but with something we cannot use (error feed, bad JSON, unparseable document)."""


class InvalidInput(NewsletterError, ValueError):
    """What a person typed (or a reader's value about to go into a mail) cannot be used; the message is safe to show."""


class RateLimited(NewsletterError):
    """Too many subscribe attempts from one IP or for one address; try again later."""


# making and sending mail


class RenderError(NewsletterError):
    """A template is missing or broken; the message names the template and line."""


class DeliveryError(NewsletterError):
    """The message was not accepted; `temporary` says whether trying later may work.

    `server` marks errors about the connection (cannot connect, TLS, login) rather than this recipient:
    they say nothing about the reader, so they never count against the delivery or the subscriber.
    `uncertain` marks a connection lost after the message was handed over (after DATA's final dot, before the
    reply): the server may have it, so the ledger counts the row as uncertain rather than simply retrying it.
    """

    def __init__(self, reply: str, temporary: bool, server: bool = False, uncertain: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary
        self.server = server
        self.uncertain = uncertain


class SendInProgress(NewsletterError):
    """Another send holds this database's lock; two senders would take each other's rows for interrupted ones."""


# the state database


class StorageError(NewsletterError):
    """The SQLite state file cannot be used as it is (corrupt, locked too long, disk full, ...).

    `sent` is how many digests a send had delivered and recorded before the failure (0: nothing was sent),
    so the CLI can say which and choose its exit code.
    """

    sent: int = 0


class SchemaTooNew(StorageError):
    """The state file was migrated by a newer newsletter than this one: its schema is not one this code knows."""

    def __init__(self, path: str, version: int, known: int) -> None:
        self.version = version
        self.known = known
        super().__init__(f"{path} has schema version {version}; this newsletter knows up to {known}: upgrade newsletter (or restore a backup)")


# the static export


class ArchiveError(NewsletterError):
    """`newsletter archive` cannot write where it was told to (not a folder, no permission, disk full)."""


# mail that comes back


class MailboxError(NewsletterError):
    """The mailbox that mail comes back to (INBOUND_IMAP_*) cannot be read: connection, TLS, login, folder."""
