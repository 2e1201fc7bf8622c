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
from email.policy import SMTP
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
    msg = _headed(sender, headers, now)
    msg.set_content(short_lines(text), cte="8bit")
    msg.add_alternative(short_lines(html), subtype="html", cte="8bit")
    return msg


def _headed(sender: Address, headers: Headers, now: datetime | None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = headers.to
    msg["Subject"] = headers.subject
    msg["Date"] = format_datetime(now or datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
    msg["List-Id"] = headers.list_id
    msg["List-Unsubscribe"] = f"<{headers.unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    return msg


MIME_LINE_BYTES = 500  # RFC 5322 allows 998; the margin leaves room for the values filled in later


@dataclass(frozen=True)
class Body:
    """One digest's multipart/alternative, serialised once, split where each reader's values go.

    Both parts are 8bit UTF-8 with short lines, so filling a slot with a value (one line, no CR/LF)
    leaves a valid body; quoted-printable or base64 would not survive substitution.
    """

    chunks: tuple[bytes, ...]
    slots: tuple[str, ...]

    def fill(self, values: Mapping[str, str]) -> bytes:
        """The body for one reader: joins of bytes, no MIME generation."""
        out = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:]):
            out.append(values[slot].replace("\r", " ").replace("\n", " ").encode("utf-8"))
            out.append(chunk)
        return b"".join(out)


def prepare_body(text: str, html: str, slots: Iterable[str]) -> Body:
    """Serialise the two parts once per distinct digest (CRLF, as sent over SMTP), keeping the slots findable."""
    msg = EmailMessage()
    msg.set_content(short_lines(text), cte="8bit")
    msg.add_alternative(short_lines(html), subtype="html", cte="8bit")
    raw = msg.as_bytes(policy=SMTP)
    names = sorted(slots, key=len, reverse=True)
    pieces = re.split(b"(" + b"|".join(re.escape(n.encode("ascii")) for n in names) + b")", raw)
    return Body(tuple(pieces[0::2]), tuple(p.decode("ascii") for p in pieces[1::2]))


def message_bytes(sender: Address, headers: Headers, body: Body, values: Mapping[str, str], now: datetime | None = None) -> bytes:
    """The whole message for one reader: its headers built as build_message does, then the prepared body."""
    head = _headed(sender, headers, now)
    return b"".join(SMTP.fold_binary(name, value) for name, value in head.items()) + body.fill(values)


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
