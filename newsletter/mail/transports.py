"""One way out for messages: an SMTP connection (TLS never dropped to plaintext) or the local outbox."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from newsletter.errors import DeliveryError, NewsletterError
from newsletter.mail.message import Letter, seven_bit
from newsletter.mail.signing import DkimSettings, Signer

_LINE_DOT = re.compile(rb"\n\.")
_UNSAFE = re.compile(r"[\s<>]")
SECURITY_PORTS = {"starttls": 587, "ssl": 465, "none": 25}  # the port each SMTP_SECURITY uses unless SMTP_PORT says otherwise


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP server (SMTP_HOST, SMTP_PORT, SMTP_SECURITY, SMTP_USERNAME, ...)."""

    host: str
    port: int = SECURITY_PORTS["starttls"]
    security: str = "starttls"  # one of SECURITY_PORTS: "starttls", "ssl" (implicit TLS) or "none"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    tls_verify: bool = True  # False (SMTP_TLS_VERIFY=false) only for a self-signed test server


class Transport(Protocol):
    """One way out for messages, used by one thread at a time: an SMTP connection or a folder."""

    def send(self, letter: Letter) -> str: ...

    def close(self) -> None: ...


class Outbox:
    """Writes each message as an .eml file, atomically, for the demo and for people without SMTP."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(self, letter: Letter) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in letter.recipient)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
        with os.fdopen(fd, "wb") as fh:
            fh.write(letter.data)
            fh.flush()
            os.fsync(fh.fileno())
        n = 1
        final = self.folder / f"{stamp}-{safe}.eml"
        while True:  # link, not rename, so an existing file is never overwritten
            try:
                os.link(tmp, final)
                break
            except FileExistsError:
                n += 1
                final = self.folder / f"{stamp}-{safe}-{n}.eml"
        os.unlink(tmp)
        return f"written {final}"

    def close(self) -> None:
        return None


class Smtp:
    """One reused SMTP connection; TLS when asked is never dropped to plaintext, and certificates are checked."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.settings.tls_verify:  # SMTP_TLS_VERIFY=false: an explicit choice for a self-signed test server
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        smtp = self.settings
        where = f"{smtp.host}:{smtp.port}"
        try:
            conn: smtplib.SMTP
            if smtp.security == "ssl":
                conn = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=self._context())
            else:
                conn = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
            conn.ehlo()
            if smtp.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise DeliveryError(f"{where} does not offer STARTTLS; refusing to send in plaintext", temporary=False, server=True)
                conn.starttls(context=self._context())
                conn.ehlo()
            if smtp.username:
                conn.login(smtp.username, smtp.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"login refused by {where}: {_reply(exc.smtp_code, exc.smtp_error)}", temporary=False, server=True) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"TLS certificate of {where} not trusted: {exc.verify_message} (SMTP_TLS_VERIFY=false accepts it, for a test server only)",
                temporary=False,
                server=True,
            ) from exc
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS with {where} failed: {exc}", temporary=False, server=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where} refused the session: {_reply(exc.smtp_code, exc.smtp_error)}", temporary=exc.smtp_code < 500, server=True) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"cannot connect to {where}: {exc}", temporary=True, server=True) from exc
        return conn

    def send(self, letter: Letter) -> str:
        """One SMTP transaction; a connection found dead before DATA is replaced once, since nothing can have been accepted."""
        fresh = self._conn is None
        if self._conn is None:
            self._conn = self._connect()
        try:
            return self._transact(self._conn, letter)
        except _Stale:
            self.close()
            if fresh:
                raise DeliveryError("connection lost before the message was sent", temporary=True) from None
            self._conn = self._connect()
            try:
                return self._transact(self._conn, letter)
            except _Stale:
                self.close()
                raise DeliveryError("connection lost before the message was sent", temporary=True) from None

    def _transact(self, conn: smtplib.SMTP, letter: Letter) -> str:
        if not (letter.sender.isascii() and letter.recipient.isascii()):  # the web form and subscribers.yaml spell domains as punycode
            raise DeliveryError(f"{letter.recipient}: an address beyond ASCII needs SMTPUTF8, which the newsletter does not send", temporary=False)
        if _UNSAFE.search(letter.sender) or _UNSAFE.search(letter.recipient):  # each goes into a command line as it is, between < >
            raise DeliveryError(f"{letter.recipient!r}: not a bare address (a line end, space or angle bracket in an envelope address)", temporary=False)
        eight_bit = conn.has_extn("8bitmime")
        data = letter.data if eight_bit or letter.data.isascii() else seven_bit(letter.data)  # a signed mail is 7bit already
        if conn.has_extn("pipelining"):
            self._pipelined(conn, letter, eight_bit)
        else:
            self._envelope(conn, letter, eight_bit)
        try:  # from here the server may have the message: a lost connection is not a plain temporary failure
            conn.send(_dot_stuffed(data))
            code, text = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.close()
            raise DeliveryError(
                f"connection lost after the message was handed over, before the server's answer: {exc}", temporary=True, uncertain=True
            ) from exc
        if code != 250:
            self._after_refusal(conn, code)
            raise DeliveryError(_reply(code, text), temporary=code < 500)
        return _reply(code, text)

    def _envelope(self, conn: smtplib.SMTP, letter: Letter, eight_bit: bool) -> None:
        """MAIL, RCPT and DATA one after the other, each waiting for its reply; returns once the server awaits the message."""
        try:
            code, text = conn.mail(letter.sender, ["BODY=8BITMIME"] if eight_bit else [])
            if code == 250:
                code, text = conn.rcpt(letter.recipient)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Stale from exc
        if code not in (250, 251):
            self._after_refusal(conn, code)
            raise DeliveryError(_reply(code, text), temporary=code < 500)
        try:
            code, text = conn.docmd("data")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.close()
            raise DeliveryError(f"connection lost while sending: {exc}", temporary=True) from exc
        if code != 354:
            self._after_refusal(conn, code)
            raise DeliveryError(_reply(code, text), temporary=code < 500)

    def _pipelined(self, conn: smtplib.SMTP, letter: Letter, eight_bit: bool) -> None:
        """`_envelope` in one write and one wait (PIPELINING, RFC 2920), where a server offers it: two round trips a
        message fewer, each a wait for the GIL in a busy send. The first refusal is the answer; a lost connection
        before DATA's reply has handed nothing over, like a stale one; a 421 closes the session, so nothing follows it."""
        option = " BODY=8BITMIME" if eight_bit else ""
        try:
            conn.send(f"MAIL FROM:<{letter.sender}>{option}\r\nRCPT TO:<{letter.recipient}>\r\nDATA\r\n")
            replies = [conn.getreply()]
            while len(replies) < 3 and replies[-1][0] != 421:
                replies.append(conn.getreply())
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Stale from exc
        refusal = next(((c, t) for c, t in replies[:2] if c not in (250, 251)), None)
        if refusal is None:  # MAIL and RCPT taken: DATA's is the answer
            code, text = replies[2]
            if code == 354:
                return
        else:
            code, text = refusal
        if refusal is not None and replies[-1][0] == 354:  # DATA taken though MAIL or RCPT was not (RFC 2920 forbids it): end it empty
            try:
                conn.send(".\r\n")
                conn.getreply()
            except (OSError, smtplib.SMTPServerDisconnected):
                code = -1
        self._after_refusal(conn, code)
        raise DeliveryError(_reply(code, text), temporary=code < 500)

    def _after_refusal(self, conn: smtplib.SMTP, code: int) -> None:
        """421 (or -1, a dead socket) ends the session; anything else resets it for the next message."""
        if code in (421, -1):
            self.close()
            return
        try:
            conn.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                self._conn.close()
            self._conn = None


class _Stale(NewsletterError):
    """The connection died before the message's DATA began: nothing was handed over."""


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 4.5.2), ending in the final dot; what `smtplib.SMTP.data` sends.

    A dot first or after any LF is doubled, as smtplib's multi-line regex `^\\.` does, but with a search for the
    LF-dot pair: smtplib's tries every position of a 100 KB digest (1 ms), bytes.replace takes a quarter of that,
    this half as long again."""
    stuffed = _LINE_DOT.sub(b"\n..", data)
    stuffed = b"." + stuffed if stuffed.startswith(b".") else stuffed
    return stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def _reply(code: int, text: bytes | str) -> str:
    return f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"


class Signed:
    """A transport that DKIM-signs each message as it sends it: in the thread that owns the connection, so with a
    pool the signing overlaps the other connections' network waits instead of adding to the main thread's work."""

    def __init__(self, transport: Transport, signer: Signer) -> None:
        self.transport = transport
        self.signer = signer

    def send(self, letter: Letter) -> str:
        return self.transport.send(replace(letter, data=self.signer.sign(letter.data)))

    def close(self) -> None:
        self.transport.close()


def signed(transport: Transport, signer: Signer | None) -> Transport:
    """`transport`, signing with `signer` when there is one (DKIM is set up)."""
    return transport if signer is None else Signed(transport, signer)


def connection(smtp: SmtpSettings | None, outbox: Path, dkim: DkimSettings | None) -> Transport:
    """One way out for a single message (a confirmation, a welcome): SMTP when there are SMTP settings, else the outbox folder; signed with `dkim`."""
    return signed(Smtp(smtp) if smtp is not None else Outbox(outbox), Signer.from_settings(dkim))
