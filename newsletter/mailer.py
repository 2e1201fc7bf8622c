"""Building the MIME message and handing it to an SMTP server, or to the local outbox when none is configured."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

from .environment import Env


class DeliveryError(Exception):
    """The message was not accepted; `temporary` says whether trying later may work."""

    def __init__(self, reply: str, temporary: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary


@dataclass(frozen=True)
class Headers:
    """What differs between messages: who, what, and the links to leave."""

    to: Address
    subject: str
    unsubscribe_url: str
    list_id: str


def build_message(sender: Address, headers: Headers, text: str, html: str, now: datetime | None = None) -> EmailMessage:
    """multipart/alternative (text first, then HTML); EmailMessage refuses CR/LF smuggled into headers.

    Bodies are 8bit UTF-8 with short lines, exactly as prepare_body makes them, so both ways give one mail.
    """
    msg = EmailMessage(policy=POLICY)
    for name, value in _reader_headers(sender, headers.to, headers.unsubscribe_url, now) + _digest_headers(sender, headers.subject, headers.list_id):
        msg[name] = value
    msg.set_content(short_lines(text), cte="8bit")
    msg.add_alternative(short_lines(html), subtype="html", cte="8bit")
    return msg


def _digest_headers(sender: Address, subject: str, list_id: str) -> list[tuple[str, object]]:
    """Headers equal for every reader of one digest."""
    return [
        ("From", sender),
        ("Subject", subject),
        ("List-Id", list_id),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Auto-Submitted", "auto-generated"),
        ("Precedence", "bulk"),
    ]


def _reader_headers(sender: Address, to: Address, unsubscribe_url: str, now: datetime | None) -> list[tuple[str, object]]:
    """Headers that differ per reader (and per message)."""
    return [
        ("To", to),
        ("Date", format_datetime(now or datetime.now(timezone.utc))),
        ("Message-ID", make_msgid(domain=sender.domain or "localhost")),
        ("List-Unsubscribe", f"<{unsubscribe_url}>"),
    ]


# RFC 5322 lines may reach 998 octets; folding at 78 made the email package turn a long List-Unsubscribe
# URL (no spaces to fold at) into encoded-words, which no mail client can click or one-click-POST.
POLICY = default.clone(max_line_length=998)
WIRE = POLICY.clone(linesep="\r\n")
MIME_LINE_BYTES = 500  # RFC 5322 allows 998; the margin leaves room for the values filled in later


@dataclass(frozen=True)
class Body:
    """One digest's mail minus the per-reader headers, serialised once, split where each reader's values go.

    Both parts are 8bit UTF-8 with short lines, so filling a slot with a value (one line, no CR/LF)
    leaves a valid body; quoted-printable or base64 would not survive substitution.
    """

    sender: Address
    chunks: tuple[bytes, ...]  # the digest's own headers and the MIME body, CRLF line ends
    slots: tuple[str, ...]

    def fill(self, values: Mapping[str, str]) -> bytes:
        """The body for one reader: a join of bytes, no MIME generation."""
        out = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:]):
            out.append(values[slot].replace("\r", " ").replace("\n", " ").encode("utf-8"))
            out.append(chunk)
        return b"".join(out)


def prepare_body(sender: Address, subject: str, list_id: str, text: str, html: str, slots: Iterable[str]) -> Body:
    """Serialise a digest once (CRLF, as sent over SMTP), keeping the slots findable."""
    msg = EmailMessage(policy=POLICY)
    for name, value in _digest_headers(sender, subject, list_id):
        msg[name] = value
    msg.set_content(short_lines(text), cte="8bit")
    msg.add_alternative(short_lines(html), subtype="html", cte="8bit")
    raw = msg.as_bytes(policy=WIRE)
    names = sorted(slots, key=len, reverse=True)
    pieces = re.split(b"(" + b"|".join(re.escape(n.encode("ascii")) for n in names) + b")", raw)
    return Body(sender, tuple(pieces[0::2]), tuple(p.decode("ascii") for p in pieces[1::2]))


def message_bytes(body: Body, to: Address, unsubscribe_url: str, values: Mapping[str, str], now: datetime | None = None) -> bytes:
    """The whole message for one reader: its own headers, then the prepared digest."""
    head = b"".join(_fold(name, value) for name, value in _reader_headers(body.sender, to, unsubscribe_url, now))
    return head + body.fill(values)


def _fold(name: str, value: object) -> bytes:
    """A header line: short printable ASCII is written as is; anything else goes through the email policy,
    which encodes non-ASCII, folds long lines and refuses CR/LF."""
    text = str(value)
    if len(name) + 2 + len(text) <= WIRE.max_line_length and text.isascii() and text.isprintable():
        return f"{name}: {text}\r\n".encode("ascii")
    msg = EmailMessage(policy=WIRE)
    msg[name] = value
    return WIRE.fold_binary(name, msg[name])


def short_lines(text: str, limit: int = MIME_LINE_BYTES) -> str:
    """Break lines longer than `limit` UTF-8 bytes at a space (a newline is the same whitespace in HTML and text)."""
    out: list[str] = []
    for line in text.split("\n"):
        while len(line.encode("utf-8")) > limit:
            head = line.encode("utf-8")[:limit].decode("utf-8", "ignore")
            cut = head.rfind(" ")
            if cut > 0:
                out.append(line[:cut])
                line = line[cut + 1 :]
            else:  # a run with no space at all: only hostile text does this; break it anyway
                out.append(head)
                line = line[len(head) :]
        out.append(line)
    return "\n".join(out)


class Transport(Protocol):
    """Where messages go: an SMTP server or a folder."""

    description: str

    def send(self, msg: EmailMessage) -> str: ...

    def close(self) -> None: ...


class Outbox:
    """Writes each message as an .eml file, atomically, for the demo and for people without SMTP."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = f"outbox {folder}"

    def send(self, msg: EmailMessage) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        to = msg["To"].addresses[0].addr_spec
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in to)
        final = self.folder / f"{stamp}-{safe}.eml"
        n = 1
        while final.exists():
            n += 1
            final = self.folder / f"{stamp}-{safe}-{n}.eml"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
        with os.fdopen(fd, "wb") as fh:
            fh.write(msg.as_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return f"written {final}"

    def close(self) -> None:
        return None


class Smtp:
    """One reused SMTP connection; TLS when asked is never dropped to plaintext."""

    def __init__(self, env: Env) -> None:
        assert env.smtp_host
        self.env = env
        self.description = f"SMTP {env.smtp_host}:{env.smtp_port} ({env.smtp_security})"
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        env = self.env
        context = ssl.create_default_context()
        try:
            conn: smtplib.SMTP
            if env.smtp_security == "ssl":
                conn = smtplib.SMTP_SSL(env.smtp_host or "", env.smtp_port, timeout=env.smtp_timeout, context=context)
            else:
                conn = smtplib.SMTP(env.smtp_host or "", env.smtp_port, timeout=env.smtp_timeout)
                if env.smtp_security == "starttls":
                    conn.ehlo()
                    if not conn.has_extn("starttls"):
                        conn.close()
                        raise DeliveryError(f"{env.smtp_host} does not offer STARTTLS; refusing to send in plaintext", temporary=False)
                    conn.starttls(context=context)
                    conn.ehlo()
            if env.smtp_username:
                conn.login(env.smtp_username, env.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"login refused: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}", temporary=False) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"cannot connect to {env.smtp_host}:{env.smtp_port}: {exc}", temporary=True) from exc
        return conn

    def send(self, msg: EmailMessage) -> str:
        if self._conn is None:
            self._conn = self._connect()
        try:
            refused = self._conn.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise DeliveryError(f"{code} {text.decode(errors='replace')}", temporary=400 <= code < 500) from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:
                self.close()
            raise DeliveryError(f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}", temporary=400 <= exc.smtp_code < 500) from exc
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.close()
            raise DeliveryError(f"connection lost: {exc}", temporary=True) from exc
        if refused:
            code, text = next(iter(refused.values()))
            raise DeliveryError(f"{code} {text.decode(errors='replace')}", temporary=400 <= code < 500)
        return "250 accepted"

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                self._conn.close()
            self._conn = None


def transport(env: Env) -> Transport:
    """SMTP when SMTP_HOST is set, else the outbox folder."""
    return Smtp(env) if env.smtp_host else Outbox(env.outbox)
