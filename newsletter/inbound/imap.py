"""Reading mail that comes back from an IMAP mailbox: each message handled, then moved to a folder, never deleted."""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from newsletter.errors import MailboxError

log = logging.getLogger("newsletter.inbound")


@dataclass(frozen=True)
class ImapSettings:
    """INBOUND_IMAP_HOST, _PORT, _USER, _PASSWORD, _FOLDER, _DONE_FOLDER, _TLS, _TLS_VERIFY."""

    host: str
    port: int = 993
    user: str = ""
    password: str = ""
    folder: str = "INBOX"
    done_folder: str = "newsletter-processed"
    tls: bool = True  # TLS from the first byte (IMAPS); False only for a server on loopback
    tls_verify: bool = True
    timeout: float = 60.0


def poll(settings: ImapSettings, handle: Callable[[str, bytes], object]) -> int:
    """Handle every message in the folder, oldest first, moving each to the done folder once handled; how many.

    A message whose handling raised stays where it is, to be tried at the next poll (the error goes up)."""
    where = f"{settings.host}:{settings.port}"
    try:
        conn = _connect(settings)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"cannot open the mailbox at {where}: {exc}") from exc
    try:
        done = 0
        _check(conn.create(_quote(settings.done_folder)), ok_if=("ALREADYEXISTS", "already exists"))
        _check(conn.select(_quote(settings.folder)))
        typ, data = conn.uid("SEARCH", None, "ALL")  # type: ignore[arg-type]
        _check((typ, data))
        for uid in (data[0] or b"").split():
            typ, parts = conn.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            raw = next((p[1] for p in parts if isinstance(p, tuple) and isinstance(p[1], bytes)), None)
            if typ != "OK" or raw is None:
                log.warning("mailbox %s: message %s could not be fetched; left in %s", where, uid.decode(), settings.folder)
                continue
            handle(f"imap:{settings.folder}/{uid.decode()}", raw)
            _move(conn, uid.decode(), settings.done_folder)
            done += 1
        return done
    except imaplib.IMAP4.error as exc:
        raise MailboxError(f"the mailbox at {where} refused: {exc}") from exc
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):  # the messages handled are moved already
            conn.logout()


def _connect(settings: ImapSettings) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    conn: imaplib.IMAP4
    if settings.tls:
        conn = imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=context, timeout=settings.timeout)
    else:
        conn = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
    try:
        conn.login(settings.user, settings.password)
    except imaplib.IMAP4.error:
        conn.shutdown()
        raise
    return conn


def _move(conn: imaplib.IMAP4, uid: str, folder: str) -> None:
    """MOVE (RFC 6851) where the server has it; else copy, then mark the original deleted and expunge it."""
    if "MOVE" in conn.capabilities:
        _check(conn.uid("MOVE", uid, _quote(folder)))
        return
    _check(conn.uid("COPY", uid, _quote(folder)))
    _check(conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"))
    _check(conn.expunge())


def _check(answer: tuple[str, Sequence[object]], ok_if: tuple[str, ...] = ()) -> None:
    typ, data = answer
    if typ == "OK":
        return
    text = " ".join(d.decode(errors="replace") if isinstance(d, bytes) else str(d) for d in data)
    if any(marker.lower() in text.lower() for marker in ok_if):
        return
    raise imaplib.IMAP4.error(f"{typ} {text}")


def _quote(folder: str) -> str:
    return '"' + re.sub(r'(["\\])', r"\\\1", folder) + '"'
