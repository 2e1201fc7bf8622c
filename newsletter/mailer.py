"""Building and signing the MIME message, and handing it to SMTP servers (a small pool) or to the local outbox."""

from __future__ import annotations

import email.policy
import os
import queue
import re
import smtplib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.contentmanager import raw_data_manager
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import dkim

from .environment import Env

# Headers the DKIM signature covers; RFC 8058 §4 asks for both List-Unsubscribe headers, which dkimpy leaves out by default.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip


class DeliveryError(Exception):
    """The message was not accepted; `temporary` says whether trying later may work.

    `server` marks errors about the connection (cannot connect, TLS, login) rather than this recipient:
    they say nothing about the reader, so they never count against the delivery or the subscriber.
    """

    def __init__(self, reply: str, temporary: bool, server: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary
        self.server = server


@dataclass(frozen=True)
class Headers:
    """What differs between messages: who, what, and the links to leave."""

    to: Address
    subject: str
    unsubscribe_url: str
    list_id: str
    unsubscribe_mailto: str | None = None


def build_message(sender: Address, headers: Headers, text: str, html: str, now: datetime | None = None) -> EmailMessage:
    """multipart/alternative (text first, then HTML); EmailMessage refuses CR/LF smuggled into headers."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = headers.to
    msg["Subject"] = headers.subject
    msg["Date"] = format_datetime(now or datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
    msg["List-Id"] = headers.list_id
    msg["List-Unsubscribe"] = _unsubscribe(headers)
    _mark_bulk(msg)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def _mark_bulk(msg: EmailMessage) -> None:
    """The headers every digest carries, whichever way it is built: one-click unsubscribe (RFC 8058), and no auto-replies."""
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"


MAX_LINE = 998  # octets per line on the wire (RFC 5321 §4.5.3.1.6)
# CRLF line ends, and header lines up to the hard limit: folding a long List-Unsubscribe URL at 78 columns
# would turn it into RFC 2047 encoded-words, which no mail client reads as a link.
WIRE = email.policy.SMTP.clone(max_line_length=MAX_LINE)
_TEXT_SLOT, _HTML_SLOT = "newsletter-text-body-slot", "newsletter-html-body-slot"
_SUBJECT_SLOT, _DATE_SLOT = "newsletter-subject-slot", format_datetime(datetime(2000, 1, 1, tzinfo=timezone.utc))  # Date must parse
_SUBJECT_LINE, _DATE_LINE = f"Subject: {_SUBJECT_SLOT}\r\n".encode(), f"Date: {_DATE_SLOT}\r\n".encode()


class Stationery:
    """One rendered digest's message minus the reader: serialised once, then filled per reader as bytes.

    The bodies still hold the reader placeholders; the whole message is encoded once (8bit, CRLF) and cut
    at them, so a reader's copy is their three header lines (To, Message-ID, List-Unsubscribe, which still
    pass through EmailMessage unless plain ASCII) and the chunks joined with their encoded values. Date is
    when the stationery was made, the digest's composition. A reader whose values would stretch a line past
    what SMTP allows, or a digest with such a line already, gets the message built whole by `build_message`
    instead. Building whole costs about 9 ms of CPU, filling about 0.1 ms.
    """

    def __init__(self, sender: Address, subject: str, list_id: str, text: str, html: str, placeholders: Iterable[str], now: datetime | None = None) -> None:
        self.sender = sender
        self.date = now or datetime.now(timezone.utc)
        self.text, self.html = text, html
        names = sorted(placeholders, key=len, reverse=True)  # longest first, should one contain another
        assert names, "stationery without placeholders is one message: build it with build_message"
        self.pattern = re.compile("|".join(map(re.escape, names)))
        marks = re.compile(b"|".join(re.escape(name.encode()) for name in names))
        head, middle, tail, self.boundary = _skeleton(str(sender), list_id)
        head = head.replace(_SUBJECT_LINE, _header_line("Subject", subject), 1).replace(_DATE_LINE, _header_line("Date", format_datetime(self.date)), 1)
        text_bytes, html_bytes = _body_8bit(text), _body_8bit(html)
        self.chunks: list[bytes] = []  # the message cut at the placeholders; empty: every reader's is built whole
        self.slots: list[str] = []  # the placeholder between chunks[i] and chunks[i + 1]
        self.lines: list[tuple[int, tuple[str, ...]]] = []  # each line holding placeholders: its length without them, and them
        self.widest = self.most = 0  # the longest of those lengths, and the most placeholders on one line
        if text_bytes is None or html_bytes is None or self.boundary in text_bytes or self.boundary in html_bytes:
            return
        bodies = text_bytes + middle + html_bytes + tail
        pieces = re.split(b"(" + marks.pattern + b")", bodies)
        self.chunks = [head + pieces[0], *pieces[2::2]]
        self.slots = [p.decode() for p in pieces[1::2]]
        lines: set[tuple[int, tuple[str, ...]]] = set()
        for match in marks.finditer(bodies):
            start, end = bodies.rfind(b"\r\n", 0, match.start()), bodies.find(b"\r\n", match.end())
            line = bodies[start + 2 if start >= 0 else 0 : end if end >= 0 else len(bodies)]
            found = tuple(m.decode() for m in marks.findall(line))
            lines.add((len(line) - sum(map(len, found)), found))
        self.lines = sorted(lines)
        self.widest = max((base for base, _ in self.lines), default=0)
        self.most = max((len(found) for _, found in self.lines), default=0)

    def letter(self, headers: Headers, values: Mapping[str, str], signer: Signer | None = None) -> Letter:
        """This reader's message, ready for the wire; `values` fill the placeholders and are one line each."""
        together = "".join(values.values())
        if "\r" in together or "\n" in together:
            raise ValueError("a reader's value spans lines")
        encoded = {name: value.encode() for name, value in values.items()}
        if not self.chunks or self._too_long(encoded) or self.boundary in together.encode():
            return seal(build_message(self.sender, headers, self._fill(self.text, values), self._fill(self.html, values), self.date), signer)
        message_id = make_msgid(domain=self.sender.domain or "localhost")
        reader = b"".join(_header_line(name, value) for name, value in (("To", headers.to), ("Message-ID", message_id), ("List-Unsubscribe", _unsubscribe(headers))))
        joined: list[bytes] = [reader] * (2 * len(self.chunks))
        joined[1::2] = self.chunks
        joined[2::2] = [encoded[slot] for slot in self.slots]
        data = b"".join(joined)
        if signer is not None:
            data = signer.sign(data)
        return Letter(self.sender.addr_spec, headers.to.addr_spec, message_id, data)

    def _too_long(self, encoded: Mapping[str, bytes]) -> bool:
        """Whether a line would pass MAX_LINE once filled; mostly answered by the widest line and longest value."""
        if self.widest + self.most * max(map(len, encoded.values()), default=0) <= MAX_LINE:
            return False
        return any(base + sum(len(encoded[name]) for name in found) > MAX_LINE for base, found in self.lines)

    def _fill(self, content: str, values: Mapping[str, str]) -> str:
        return self.pattern.sub(lambda m: values[m.group()], content)


@lru_cache(maxsize=8)
def _skeleton(sender: str, list_id: str) -> tuple[bytes, bytes, bytes, bytes]:
    """A digest message's headers and MIME frame with slots for subject, date and the two bodies, as head,
    middle and tail bytes and the boundary line: made once per sender and list, not once per digest.

    Every digest of a send shares the boundary; Stationery checks it occurs in no body.
    """
    msg = EmailMessage()
    msg["From"] = sender
    msg["Subject"] = _SUBJECT_SLOT
    msg["Date"] = _DATE_SLOT
    msg["List-Id"] = list_id
    _mark_bulk(msg)
    msg.set_content(_TEXT_SLOT, charset="utf-8", cte="8bit")
    msg.add_alternative(_HTML_SLOT, subtype="html", charset="utf-8", cte="8bit")
    data = msg.as_bytes(policy=WIRE)
    head, _, rest = data.partition(_TEXT_SLOT.encode() + b"\r\n")
    middle, _, tail = rest.partition(_HTML_SLOT.encode() + b"\r\n")
    assert middle and tail and _SUBJECT_LINE in head and _DATE_LINE in head, "each slot appears once"
    return head, middle, tail, f"--{msg.get_boundary()}".encode()


def _header_line(name: str, value: object) -> bytes:
    """One header as it goes on the wire. Printable ASCII that fits one line is written as is (the common,
    fast case); anything else goes through EmailMessage, which encodes non-ASCII and refuses CR/LF."""
    text = str(value)
    if text.isascii() and text.isprintable() and len(name) + 2 + len(text) <= MAX_LINE:
        return f"{name}: {text}\r\n".encode("ascii")
    msg = EmailMessage()
    msg[name] = value
    return msg.as_bytes(policy=WIRE)[:-2]


def _body_8bit(content: str) -> bytes | None:
    """The body as 8bit lines with CRLF, or None when a line is too long to go unencoded."""
    data = content.encode("utf-8")
    if b"\r" in data:  # bare CRs are line ends too: normalise the slow way
        data = b"\n".join(data.splitlines())
    if max(map(len, data.split(b"\n"))) > MAX_LINE:
        return None
    data = data.replace(b"\n", b"\r\n")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _unsubscribe(headers: Headers) -> str:
    value = f"<{headers.unsubscribe_url}>"
    if headers.unsubscribe_mailto:
        value += f", <mailto:{headers.unsubscribe_mailto}?subject=unsubscribe>"
    return value


@dataclass(frozen=True)
class Letter:
    """A message ready for the wire: envelope addresses and the (signed) bytes with CRLF line ends."""

    sender: str
    recipient: str
    message_id: str
    data: bytes


class Signer:
    """DKIM signing with a key read once; the signature covers both List-Unsubscribe headers."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode()
        self.domain = domain.encode()
        self.private_key = private_key

    @classmethod
    def from_env(cls, env: Env) -> Signer | None:
        """The configured signer, or None when DKIM_* are unset."""
        if not (env.dkim_selector and env.dkim_domain and env.dkim_private_key_path):
            return None
        return cls(env.dkim_selector, env.dkim_domain, env.dkim_private_key_path.read_bytes())

    def sign(self, data: bytes) -> bytes:
        return dkim.sign(data, self.selector, self.domain, self.private_key, include_headers=list(SIGNED_HEADERS)) + data


def seal(msg: EmailMessage, signer: Signer | None = None) -> Letter:
    """Serialise once, with CRLF as on the wire, and sign those exact bytes."""
    data = msg.as_bytes(policy=WIRE)
    if signer is not None:
        data = signer.sign(data)
    return Letter(msg["From"].addresses[0].addr_spec, msg["To"].addresses[0].addr_spec, msg["Message-ID"], data)


def seven_bit(data: bytes, signer: Signer | None) -> bytes:
    """The message as a server without 8BITMIME may take it (RFC 6152): each 8bit part re-encoded as
    quoted-printable, and signed again, since the old signature covered the 8bit body."""
    msg = email.message_from_bytes(data, policy=WIRE)
    del msg["DKIM-Signature"]
    for part in msg.walk():
        if not part.is_multipart() and str(part.get("Content-Transfer-Encoding", "")).lower() == "8bit":
            text = part.get_content()
            raw_data_manager.set_content(part, text, subtype=part.get_content_subtype(), charset=part.get_content_charset() or "utf-8", cte="quoted-printable")
    out = msg.as_bytes(policy=WIRE)
    return signer.sign(out) if signer is not None else out


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
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
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

    def __init__(self, env: Env) -> None:
        assert env.smtp_host
        self.env = env
        self.signer = Signer.from_env(env)  # to sign again what a server without 8BITMIME needs re-encoded
        self._conn: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.env.smtp_tls_verify:  # SMTP_TLS_VERIFY=false: an explicit choice for a self-signed test server
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        env = self.env
        where = f"{env.smtp_host}:{env.smtp_port}"
        try:
            conn: smtplib.SMTP
            if env.smtp_security == "ssl":
                conn = smtplib.SMTP_SSL(env.smtp_host or "", env.smtp_port, timeout=env.smtp_timeout, context=self._context())
            else:
                conn = smtplib.SMTP(env.smtp_host or "", env.smtp_port, timeout=env.smtp_timeout)
            conn.ehlo()
            if env.smtp_security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise DeliveryError(f"{where} does not offer STARTTLS; refusing to send in plaintext", temporary=False, server=True)
                conn.starttls(context=self._context())
                conn.ehlo()
            if env.smtp_username:
                conn.login(env.smtp_username, env.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"login refused by {where}: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}", temporary=False, server=True) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"TLS certificate of {where} not trusted: {exc.verify_message} (SMTP_TLS_VERIFY=false accepts it, for a test server only)",
                temporary=False,
                server=True,
            ) from exc
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS with {where} failed: {exc}", temporary=False, server=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where} refused the session: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}", temporary=exc.smtp_code < 500, server=True) from exc
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
        eight_bit = conn.has_extn("8bitmime")
        data = letter.data if eight_bit or letter.data.isascii() else seven_bit(letter.data, self.signer)
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
            code, text = conn.data(data)
        except smtplib.SMTPDataError as exc:
            self._after_refusal(conn, exc.smtp_code)
            raise DeliveryError(_reply(exc.smtp_code, exc.smtp_error), temporary=exc.smtp_code < 500) from exc
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.close()
            raise DeliveryError(f"connection lost while sending: {exc}", temporary=True) from exc
        if code != 250:
            self._after_refusal(conn, code)
            raise DeliveryError(_reply(code, text), temporary=code < 500)
        return _reply(code, text)

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


class _Stale(Exception):
    """The connection died before the message's DATA began: nothing was handed over."""


def _reply(code: int, text: bytes | str) -> str:
    return f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"


class RateLimiter:
    """At most `rate` messages per second over all connections, spaced evenly; None means no limit."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


@dataclass(frozen=True)
class Job:
    """One claimed ledger row's message, handed to a worker; `tag` lets the caller find its row again."""

    tag: object
    letter: Letter


@dataclass(frozen=True)
class Result:
    """What the server said about one job: a reply line, or the error."""

    job: Job
    reply: str
    error: DeliveryError | None = None


class Pool:
    """A few worker threads, each with its own connection, sending jobs from one queue under one rate limit.

    Only the caller's thread touches the database: workers take jobs and give back results, nothing else.
    """

    def __init__(self, make: Callable[[], Transport], size: int, rate: float | None) -> None:
        self.make = make
        self.size = size
        self.rate = rate
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=size)  # few claimed rows wait: fewer uncertain after a crash
        self._results: queue.Queue[Result] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def put(self, job: Job) -> None:
        if not self._threads:
            limiter = RateLimiter(self.rate)
            self._threads = [threading.Thread(target=self._work, args=(limiter,), name=f"smtp-{i}", daemon=True) for i in range(self.size)]
            for thread in self._threads:
                thread.start()
        self._jobs.put(job)

    def get(self, timeout: float | None = None) -> Result | None:
        """The next result, or None if none came within `timeout` (0 = do not wait)."""
        try:
            return self._results.get(block=timeout != 0, timeout=timeout or None)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop the workers after the queued jobs; each closes its connection. The pool can be used again."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _work(self, limiter: RateLimiter) -> None:
        transport = self.make()
        try:
            while (job := self._jobs.get()) is not None:
                limiter.wait()
                try:
                    self._results.put(Result(job, transport.send(job.letter)))
                except DeliveryError as exc:
                    self._results.put(Result(job, exc.reply, exc))
                except Exception as exc:  # a bug must not strand the row in `sending` while the run waits for it
                    self._results.put(Result(job, f"unexpected {type(exc).__name__}: {exc}", DeliveryError(str(exc), temporary=True, server=True)))
        finally:
            transport.close()


def connection(env: Env) -> Transport:
    """One way out for a single message (a confirmation, a welcome): SMTP when SMTP_HOST is set, else the outbox."""
    return Smtp(env) if env.smtp_host else Outbox(env.outbox)


def transport(env: Env) -> Pool:
    """SMTP_CONNECTIONS connections to SMTP_HOST at SMTP_RATE, or one writer into the outbox folder."""
    if env.smtp_host:
        return Pool(lambda: connection(env), env.smtp_connections, env.smtp_rate)
    return Pool(lambda: connection(env), 1, None)