"""Building the MIME message, and filling one prepared message per reader as bytes."""

from __future__ import annotations

import binascii
import email.policy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.contentmanager import raw_data_manager
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from newsletter.errors import InvalidInput


@dataclass(frozen=True)
class Headers:
    """What differs between messages: who, what, and the links to leave."""

    to: Address
    subject: str
    unsubscribe_url: str
    list_id: str
    unsubscribe_mailto: str | None = None


def build_message(sender: Address, headers: Headers, text: str, html: str, now: datetime | None = None) -> EmailMessage:
    """multipart/alternative (text first, then HTML), both quoted-printable so that what is signed is 7bit
    and no hop has to re-encode it; EmailMessage refuses CR/LF smuggled into headers."""
    msg = EmailMessage(policy=BODIES)
    msg["From"] = sender
    msg["To"] = headers.to
    msg["Subject"] = headers.subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
    msg["List-Id"] = headers.list_id
    msg["List-Unsubscribe"] = _unsubscribe(headers)
    _mark_bulk(msg)
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg


def _mark_bulk(msg: EmailMessage) -> None:
    """The headers every digest carries, whichever way it is built: one-click unsubscribe (RFC 8058), and no auto-replies."""
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"


MAX_LINE = 998  # octets per line on the wire (RFC 5321 §4.5.3.1.6)
QP_LINE = 76  # characters per quoted-printable line, soft break included (RFC 2045 §6.7)

# What bodies are encoded with: the email package writes quoted-printable lines up to the policy's max_line_length.
BODIES = email.policy.default.clone(max_line_length=QP_LINE)


# CRLF line ends, and header lines up to the hard limit: folding a long List-Unsubscribe URL at 78 columns
# would turn it into RFC 2047 encoded-words, which no mail client reads as a link.
WIRE = email.policy.SMTP.clone(max_line_length=MAX_LINE)


_TEXT_SLOT, _HTML_SLOT = "newsletter-text-body-slot", "newsletter-html-body-slot"


_SUBJECT_SLOT, _DATE_SLOT = "newsletter-subject-slot", format_datetime(datetime(2000, 1, 1, tzinfo=UTC))  # Date must parse


_SUBJECT_LINE, _DATE_LINE = f"Subject: {_SUBJECT_SLOT}\r\n".encode(), f"Date: {_DATE_SLOT}\r\n".encode()


class Stationery:
    """One rendered digest's message minus the reader: serialised once, then filled per reader as bytes.

    The bodies still hold the reader placeholders; the whole message is encoded once (quoted-printable,
    CRLF) and cut at them, so a reader's copy is their three header lines (To, Message-ID, List-Unsubscribe,
    which still pass through EmailMessage unless plain ASCII) and the chunks joined with their encoded
    values. Each placeholder stands on lines of its own, between soft line breaks, so a value of any length
    is encoded alone and no line passes 76 characters. Date is when the stationery was made, the digest's
    composition. Building whole costs about 9 ms of CPU, filling about 0.1 ms.
    """

    def __init__(self, sender: Address, subject: str, list_id: str, text: str, html: str, placeholders: Iterable[str], now: datetime | None = None) -> None:
        self.sender = sender
        self.date = now or datetime.now(UTC)
        names = sorted(placeholders, key=len, reverse=True)  # longest first, should one contain another
        assert names, "stationery without placeholders is one message: build it with build_message"
        pattern = re.compile("|".join(map(re.escape, names)))
        head, middle, tail = _skeleton(str(sender), list_id)
        head = head.replace(_SUBJECT_LINE, _header_line("Subject", subject), 1).replace(_DATE_LINE, _header_line("Date", format_datetime(self.date)), 1)
        self.chunks: list[bytes] = []  # the message cut at the placeholders
        self.slots: list[str] = []  # the placeholder between chunks[i] and chunks[i + 1]
        chunk = head
        for body, after in ((text, middle), (html, tail)):
            body = _lf_lines(body)
            for piece, slot in zip(pattern.split(body), [*pattern.findall(body), None], strict=True):
                if slot is None:
                    chunk += _qp(piece.encode("utf-8")) + after
                else:
                    self.chunks.append(chunk + _qp(piece.encode("utf-8"), soft_end=True))
                    self.slots.append(slot)
                    chunk = b""
        self.chunks.append(chunk)

    def letter(self, headers: Headers, values: Mapping[str, str]) -> Letter:
        """This reader's message, ready for the wire (the transport signs it); `values` fill the placeholders and are one line each."""
        return self.fill(self.draft("", headers, values))

    def draft(self, key: str, headers: Headers, values: Mapping[str, str]) -> Draft:
        """What this reader's copy adds to the stationery known as `key`, checked and with its header lines made:
        a small thing, so the sending process that keeps the stationery fills it in (`fill`), not the caller."""
        together = "".join(values.values())
        if "\r" in together or "\n" in together:
            raise InvalidInput("a reader's value spans lines")
        message_id = make_msgid(domain=self.sender.domain or "localhost")
        reader = b"".join(
            _header_line(name, value) for name, value in (("To", headers.to), ("Message-ID", message_id), ("List-Unsubscribe", _unsubscribe(headers)))
        )
        return Draft(key, self.sender.addr_spec, headers.to.addr_spec, message_id, reader, tuple(values.items()))

    def fill(self, draft: Draft) -> Letter:
        """The draft's message as bytes: the stationery's chunks joined with the reader's header lines and encoded values."""
        encoded = {name: _qp(value.encode("utf-8"), soft_end=True) for name, value in draft.values}
        joined: list[bytes] = [draft.reader] * (2 * len(self.chunks))
        joined[1::2] = self.chunks
        joined[2::2] = [encoded[slot] for slot in self.slots]
        return Letter(draft.sender, draft.recipient, draft.message_id, b"".join(joined))


@dataclass(frozen=True)
class Draft:
    """One reader's copy of a Stationery message before it is filled in: the envelope, the Message-ID, their header
    lines and the placeholders' values, to go with the stationery known as `stationery`."""

    stationery: str
    sender: str
    recipient: str
    message_id: str
    reader: bytes
    values: tuple[tuple[str, str], ...]


@lru_cache(maxsize=8)
def _skeleton(sender: str, list_id: str) -> tuple[bytes, bytes, bytes]:
    """A digest message's headers and MIME frame with slots for subject, date and the two bodies, as head,
    middle and tail bytes: made once per sender and list, not once per digest.

    Every digest of a send shares the boundary; no quoted-printable body can hold it, since it starts "--==".
    """
    msg = EmailMessage()
    msg["From"] = sender
    msg["Subject"] = _SUBJECT_SLOT
    msg["Date"] = _DATE_SLOT
    msg["List-Id"] = list_id
    _mark_bulk(msg)
    msg.set_content(_TEXT_SLOT, charset="utf-8", cte="quoted-printable")
    msg.add_alternative(_HTML_SLOT, subtype="html", charset="utf-8", cte="quoted-printable")
    data = msg.as_bytes(policy=WIRE)
    head, _, rest = data.partition(_TEXT_SLOT.encode() + b"\r\n")
    middle, _, tail = rest.partition(_HTML_SLOT.encode() + b"\r\n")
    assert middle and tail and _SUBJECT_LINE in head and _DATE_LINE in head, "each slot appears once"
    return head, middle, tail


def _header_line(name: str, value: object) -> bytes:
    """One header as it goes on the wire. Printable ASCII that fits one line is written as is (the common,
    fast case); anything else goes through EmailMessage, which encodes non-ASCII and refuses CR/LF."""
    text = str(value)
    if text.isascii() and text.isprintable() and len(name) + 2 + len(text) <= MAX_LINE:
        return f"{name}: {text}\r\n".encode("ascii")
    msg = EmailMessage()
    msg[name] = value
    return msg.as_bytes(policy=WIRE)[:-2]


def _lf_lines(content: str) -> str:
    """The body with LF line ends (bare CRs are line ends too) and a final one."""
    if "\r" in content:
        content = "\n".join(content.splitlines())
    return content if content.endswith("\n") else content + "\n"


def _qp(data: bytes, soft_end: bool = False) -> bytes:
    """Quoted-printable with CRLF, lines at most QP_LINE long; `soft_end` ends it with a soft line break
    (unless it ends a line already), so that what follows starts a line of its own."""
    encoded = binascii.b2a_qp(data, istext=True)  # LF in, LF out; encodes trailing whitespace, soft-breaks at 76
    if soft_end and not encoded.endswith(b"\n"):
        last = encoded.rfind(b"\n") + 1
        if len(encoded) - last >= QP_LINE:  # no room for the "=": break once more, not inside an =XX escape
            cut = last + QP_LINE - 1
            if encoded[cut - 1 : cut] == b"=":
                cut -= 1
            elif encoded[cut - 2 : cut - 1] == b"=":
                cut -= 2
            encoded = encoded[:cut] + b"=\n" + encoded[cut:]
        encoded += b"=\n"
    return encoded.replace(b"\n", b"\r\n")


def _unsubscribe(headers: Headers) -> str:
    value = f"<{headers.unsubscribe_url}>"
    if headers.unsubscribe_mailto:
        value += f", <mailto:{headers.unsubscribe_mailto}?subject=unsubscribe>"
    return value


@dataclass(frozen=True)
class Letter:
    """A message ready for the wire: envelope addresses and the bytes with CRLF line ends; a DKIM transport signs them as it sends."""

    sender: str
    recipient: str
    message_id: str
    data: bytes


def seal(msg: EmailMessage) -> Letter:
    """Serialise once, with CRLF as on the wire: the transport signs those exact bytes (or their 7bit form)."""
    return Letter(msg["From"].addresses[0].addr_spec, msg["To"].addresses[0].addr_spec, msg["Message-ID"], msg.as_bytes(policy=WIRE))


def seven_bit(data: bytes) -> bytes:
    """The message as a server without 8BITMIME may take it (RFC 6152), and as DKIM signs it (RFC 6376 §5.3):
    each 8bit part re-encoded as quoted-printable (lines of at most 76)."""
    msg = email.message_from_bytes(data, policy=WIRE)
    for part in msg.walk():
        if not part.is_multipart() and str(part.get("Content-Transfer-Encoding", "")).lower() == "8bit":
            text = part.get_content()
            part.policy = BODIES  # the email package writes quoted-printable lines as long as the part's policy allows
            raw_data_manager.set_content(part, text, subtype=part.get_content_subtype(), charset=part.get_content_charset() or "utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=WIRE)
