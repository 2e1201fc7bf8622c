"""What a message that came back is: a bounce (hard or soft), a complaint, an auto-reply, or other mail.

Standard reports are read by their parts: RFC 3464 delivery-status notifications per recipient (Action,
Status, Diagnostic-Code) and RFC 5965 feedback reports. Everything else that looks like a bounce goes to
flufl.bounce, GNU Mailman's detectors for the formats of Postfix, Exim, Sendmail, qmail, Exchange, Yahoo and
others, for its recipients; its text decides hard or soft. A bounce is hard only on evidence that the address
itself is dead (no such user or domain, mailbox disabled): a full mailbox, a policy or spam block, a sender
reason or anything unclear is soft, since a false hard bounce silently drops a reader.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from typing import Literal

from flufl.bounce import all_failures

# flufl.bounce logs a traceback for each detector that trips over a malformed message before re-raising; the
# caller below turns that into "no recipients found", so the traceback would only reach the operator's terminal.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

Kind = Literal["hard_bounce", "soft_bounce", "complaint", "auto_reply", "unsubscribe", "command", "other"]


@dataclass(frozen=True)
class Report:
    """One message read: its kind, the addresses it is about, and what ties it to mail we sent.

    Everything in it comes from the message: untrusted, but printable (no control characters reach a log or `status`)."""

    kind: Kind
    recipients: tuple[str, ...] = ()  # lower-cased addresses the report is about
    reason: str = ""  # the status and diagnostic, one line, for the log and the pause reason
    message_ids: tuple[str, ...] = ()  # Message-IDs of the original mail quoted in the report
    addressed_to: tuple[str, ...] = ()  # where this message was delivered (Delivered-To, X-Original-To, To, ...), lower-cased
    quoted_senders: tuple[str, ...] = ()  # Return-Path of the quoted original (a VERP address, when it was ours)


# enhanced status codes (RFC 3463) whose subject is the address itself
_HARD_STATUS = re.compile(r"^5\.(1\.[0-6]|1\.10|2\.1)$")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_CODE = re.compile(r"(?<![\d.])([45])\d\d(?=[ -]\S)")

# what says the address is dead, and what says the refusal is about the sender, the message or the moment
_HARD_TEXT = re.compile(
    r"user unknown|unknown user|no such (user|recipient|mailbox|address|person|account|domain)|user (is )?not found|"
    r"recipient (address )?(not found|unknown|does not exist|invalid)|unknown (recipient|address|local[- ]part|mailbox)|invalid (recipient|mailbox|address)|"
    r"(mailbox|address|account|user|recipient|e-?mail) (does not|doesn'?t|did not) exist|does not exist|"
    r"mailbox (not found|unavailable|disabled|is disabled|inactive)|no mailbox|not a valid (user|mailbox|recipient)|bad destination mailbox|"
    r"address (unknown|not known|not found|is invalid)|unrouteable address|host (or domain name )?(unknown|not found)|domain (not found|does not exist|unknown)|"
    r"account (has been |is |was )?(disabled|closed|deactivated|suspended|terminated|deleted|expired)|"
    r"(account|mailbox|user|address)\b[^.;]{0,40}\b(is|was|has been) (disabled|deactivated|inactive)|no longer (active|available|valid)|"
    r"not our customer|no such local user|is not a known user|not listed in|unknown or illegal alias|addressee unknown|undeliverable address|"
    r"user account is unavailable|mailbox (has been )?(closed|removed|deleted)|recipient rejected|invalid address|unknown email address|"
    r"(does not|doesn'?t) have an? [\w.-]+ account|invalid (final delivery )?user ?id|n'existe pas|existiert nicht|no existe|non esiste|"
    r"(empf(ä|ae)nger|benutzer|adresse|mailbox|postfach) (ist )?unbekannt|inexistente|sconosciuto|user not known|not a valid user|"
    r"unknown (host|domain)|(recipient|name|address) (is )?not recognized|does not have a final (e-?mail )?delivery point|no matches to nameserver query|did not (exactly )?match an? [\w.-]+ (e-?mail )?address",
    re.IGNORECASE,
)
_SOFT_TEXT = re.compile(
    r"\b(mailbox (is )?full|(disk |mail ?box |storage )?quota|over ?quota|insufficient (system )?storage|storage (space|allocation)|"
    r"not enough (space|storage)|space not enough|too (many|large|big|much)|exceed(s|ed)? (the )?(maximum|max|size|storage|limit)|message size|size limit|"
    r"temporar(y|ily)|try (again )?later|again later|not found, try again|deferred|greylist(ed|ing)?|gr[ae]y[- ]list|"
    r"spam|junk|blocked|block ?list(ed)?|black ?list(ed)?|\brbl|dnsbl|spamhaus|reputation|policy|policies|"
    r"content (rejected|filter)|virus|malware|dmarc|spf|dkim|not authenticated|unauthenticated|authentication|"
    r"relay(ing)? (denied|not permitted|access denied)|not permitted|prohibited|banned|abuse|suspicious|rate limit(ed)?|throttl(ed|ing)|"
    r"sender (address )?(rejected|denied|blocked|verify failed)|not accepting mail from|access denied|connection (refused|timed out|reset)|timed? ?out|"
    r"mail loop|loops? (back|detected)|too many hops|system (busy|not accepting)|insufficient resources)",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesen|vacation|away from|absence|r[ée]ponse automatique|"
    r"respuesta autom[aá]tica|risposta automatica|autosvar|automaattinen|fuori sede|on leave|i am away|i'?m away|auto:|autoreply)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|failed|report|problem|notification)|returned mail|return(ed|ing) (message|mail)|"
    r"mail delivery (failed|failure|system|subsystem)|failure notice|could not be delivered|not delivered|non[- ]?delivery|delivery has failed|"
    r"mail error|mail system error|nondeliverable|unable to deliver|rejected|bounce|warning: could not send|delayed mail|delivery (is )?delayed|"
    r"message (not|could not be) delivered|delivery warning|mensaje no entregado|unzustellbar|non remis|non recapitabile|failed mail|permanent error",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(mailer-daemon|mail-daemon|mailerdaemon|postmaster|mail\.?delivery|mdaemon|mailer|bounce[s]?|ndr|noreply-ndr)\b", re.IGNORECASE)
_ORIGINAL_STARTS = re.compile(
    r"^[ \t*|=>-]*(-+|\*+|=+|\|-+)?[ \t]*(.{0,20}original message|(start of |the )?returned (mail|message)|.{0,30}copy of (the|your|this) (original )?message|"
    r"(the )?(original )?message (text|header|headers|body) (is )?follow|(the )?header of the (source|original)|unsent message|included is a copy|"
    r"original message (follows|attached)|mensaje original|below this line|attachment is a copy|begin included)",
    re.IGNORECASE | re.MULTILINE,
)


def parse(data: bytes) -> EmailMessage:
    """The message, as the email package's default policy reads it."""
    return email.message_from_bytes(data, policy=email.policy.default)


def classify(data: bytes) -> Report:
    """Read one message (bytes as delivered) and say what it is; never raises on malformed mail."""
    report = _classify(data)
    clean = "".join(c if c.isprintable() else " " for c in report.reason)
    return Report(report.kind, tuple(_printable(a) for a in report.recipients), clean, report.message_ids, report.addressed_to, report.quoted_senders)


def _printable(address: str) -> str:
    return "".join(c for c in address if c.isprintable() and not c.isspace())


def _classify(data: bytes) -> Report:
    msg = parse(data)
    addressed = _delivered_to(msg)
    ids, senders = _quoted_original(msg)
    report_type = _param(msg, "report-type").lower() if msg.get_content_type() == "multipart/report" else ""
    if report_type == "feedback-report" or _part(msg, "message/feedback-report") is not None:
        return Report("complaint", _complained_about(msg), "abuse report", ids, addressed, senders)
    status = _part(msg, "message/delivery-status")
    if status is not None:
        found = _dsn(status)
        if found is not None:
            kind, recipients, reason = found
            return Report(kind, recipients, reason, ids, addressed, senders)
    if _is_auto_reply(msg):
        return Report("auto_reply", (), "auto-reply", ids, addressed, senders)
    if status is not None or _looks_bounced(msg):
        kind, recipients, reason = _legacy_bounce(data, msg)
        return Report(kind, recipients, reason, ids, addressed, senders)
    return Report("other", (), "", ids, addressed, senders)


def permanence(status: str, text: str) -> Literal["hard", "soft"]:
    """Hard only for a 5.x.x status about the address itself (or, without a specific one, its words), with nothing softer in the text."""
    if _SOFT_TEXT.search(text) and not re.search(r"\b5\.1\.1\b|user unknown|no such user", text, re.IGNORECASE):
        return "soft"
    if not status.startswith("5"):
        return "soft"
    if _HARD_STATUS.match(status):
        return "hard"
    if status.startswith(("5.7.", "5.2.2", "5.2.3", "5.3.4", "5.6.")) or status in ("5.1.7", "5.1.8"):
        return "soft"
    return "hard" if _HARD_TEXT.search(text) else "soft"


# RFC 3464


def _dsn(part: Message) -> tuple[Kind, tuple[str, ...], str] | None:
    """Per recipient: failed with a hard verdict, or else soft for failed and delayed ones; None when every one was delivered."""
    hard: list[str] = []
    soft: list[str] = []
    reasons: list[str] = []
    blocks = list(_recipient_blocks(part))
    if not any("final-recipient" in b or "original-recipient" in b for b in blocks):
        return None  # a report without per-recipient fields: read as a bounce in its own words
    for fields in blocks:
        action = fields.get("action", "").lower().strip()
        recipient = _typed_address(fields.get("original-recipient", "")) or _typed_address(fields.get("final-recipient", ""))
        status = _status(fields)
        diagnostic = " ".join(fields.get("diagnostic-code", "").split())
        if action in ("delivered", "relayed", "expanded"):
            continue
        if action.startswith(("fail", "error")) or (action not in ("delayed",) and status.startswith("5")):
            verdict = permanence(status, diagnostic)
        elif action == "delayed" or status.startswith("4"):
            verdict = "soft"
        else:
            continue
        (hard if verdict == "hard" else soft).append(recipient)
        reasons.append(f"{action or 'failed'} {status} {diagnostic}".strip())
    if not hard and not soft:
        return "other", (), "delivery report: delivered or relayed"
    kind: Kind = "hard_bounce" if hard and not soft else "soft_bounce"
    recipients = tuple(dict.fromkeys(r for r in (hard if kind == "hard_bounce" else hard + soft) if r))
    return kind, recipients, "; ".join(dict.fromkeys(reasons))[:500]


def _status(fields: dict[str, str]) -> str:
    """The recipient's enhanced status, from Status (or, if that is not one, the Diagnostic-Code)."""
    for name in ("status", "diagnostic-code"):
        found = _STATUS.search(fields.get(name, ""))
        if found:
            return found.group(0)
    return ""


def _recipient_blocks(part: Message) -> Iterator[dict[str, str]]:
    """The per-recipient field groups of a delivery-status part (the email package gives them as messages; a
    broken one is read from its text)."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append({k.lower(): _str(v) for k, v in block.items()})
    if not any("action" in b or "final-recipient" in b for b in blocks):
        text = part.get_payload(decode=True)
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(payload)
        blocks = []
        for chunk in re.split(r"\r?\n\s*\r?\n", raw):
            fields: dict[str, str] = {}
            for line in re.sub(r"\r?\n[ \t]+", " ", chunk).splitlines():
                name, colon, value = line.partition(":")
                if colon and name.strip():
                    fields[name.strip().lower()] = value.strip()
            blocks.append(fields)
    for fields in blocks:
        if "final-recipient" in fields or "original-recipient" in fields or "action" in fields:
            yield fields


def _typed_address(value: str) -> str:
    """`rfc822; user@example.org` (or a bare address) as `user@example.org`."""
    _, _, address = value.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address.lower() if "@" in address else ""


# RFC 5965


def _complained_about(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    feedback = _part(msg, "message/feedback-report")
    if feedback is not None:
        for fields in _recipient_blocks_any(feedback):
            for name in ("original-rcpt-to", "removal-recipient"):
                if fields.get(name):
                    found.append(fields[name].strip().strip("<>").lower())
    original = _original(msg)
    if not found and original is not None:
        found.extend(addr.lower() for _, addr in getaddresses([_str(v) for v in original.get_all("To", [])]) if "@" in addr)
    return tuple(dict.fromkeys(found))


def _recipient_blocks_any(part: Message) -> Iterator[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                yield {k.lower(): _str(v) for k, v in block.items()}
        return
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    fields: dict[str, str] = {}
    for line in re.sub(r"\r?\n[ \t]+", " ", text).splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip())
    yield fields


# everything else


def _is_auto_reply(msg: Message) -> bool:
    """RFC 3834 Auto-Submitted: auto-replied, the X- headers of vacation programs and Exchange, or a vacation subject."""
    auto = _header(msg, "Auto-Submitted").lower()
    if auto.startswith("auto-replied") and not _looks_bounced(msg):
        return True
    if any(_header(msg, h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation")):
        return True
    if _header(msg, "X-Auto-Response-Suppress") and _AUTO_SUBJECT.search(_header(msg, "Subject")):
        return True
    if _header(msg, "Precedence").lower() in ("auto_reply", "auto-reply") or _header(msg, "X-Precedence").lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(_header(msg, "Subject")))


def _looks_bounced(msg: Message) -> bool:
    sender = parseaddr(_header(msg, "From"))
    local = sender[1].partition("@")[0] or sender[0]
    return bool(_DAEMON.match(local) or _DAEMON.match(sender[0].replace(" ", "")) or _BOUNCE_SUBJECT.search(_header(msg, "Subject")))


def _legacy_bounce(data: bytes, msg: Message) -> tuple[Kind, tuple[str, ...], str]:
    """A bounce in some MTA's own format: flufl.bounce finds who; the words before the quoted original say how."""
    legacy = email.message_from_bytes(data)  # flufl.bounce's detectors expect the compat32 API
    try:
        temporary, permanent = all_failures(legacy)
    except Exception:  # a detector tripping over a malformed message: no recipients, the text still decides
        temporary, permanent = frozenset(), frozenset()
    text = _explanation(msg)
    found = re.search(r"(?<![\d.])[45]\.\d{1,3}\.\d{1,3}(?![\d.])", text)  # in prose, only failure classes: "2.0.12" is a version
    status = found.group(0) if found else ""
    if not status and (code := _REPLY_CODE.search(text)):
        status = f"{code.group(1)}.0.0"
    line = " ".join(text.split())[:300]
    recipients = tuple(dict.fromkeys(a.decode("utf-8", "replace").lower() for a in sorted(permanent | temporary)))
    if not temporary and permanence(status or "5.0.0", text) == "hard":
        return "hard_bounce", recipients, line
    return "soft_bounce", recipients, line


def _explanation(msg: Message) -> str:
    """The bounce's own words: its text parts, up to where the returned original starts."""
    texts: list[str] = []
    for part in _walk_outside_originals(msg):
        if part.get_content_maintype() == "text":
            try:
                raw = part.get_payload(decode=True)
            except Exception:
                continue
            if isinstance(raw, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    texts.append(raw.decode(charset, "replace"))
                except LookupError:
                    texts.append(raw.decode("latin-1"))
    text = "\n".join(texts)
    cut = _ORIGINAL_STARTS.search(text)
    text = text[: cut.start()] if cut else text
    text = re.sub(r"(?im)^[ \t>]*(&nbsp;|\s)*(subject|to|cc|from|sent|date|betreff|asunto|objet|oggetto)\s*:.*$", "", text)  # the original's own lines
    text = " ".join(text.replace("&nbsp;", " ").split())
    return re.sub(r"<[^>]{0,200}>", " ", text)[:4000] if "<html" in text.lower() else text[:4000]


def _walk_outside_originals(msg: Message) -> Iterator[Message]:
    """Every part, not descending into an attached original message."""
    if msg.get_content_type() in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
        return
    if msg.is_multipart():
        for sub in msg.get_payload():
            if isinstance(sub, Message):
                yield from _walk_outside_originals(sub)
    else:
        yield msg


# where it went, and what it quotes


def _delivered_to(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Delivered-To", "To", "Cc"):
        values = [_str(v) for v in msg.get_all(name, [])]
        found.extend(addr.lower() for _, addr in getaddresses(values) if "@" in addr)
    return tuple(dict.fromkeys(found))


def _quoted_original(msg: Message) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Message-IDs and Return-Paths of the original mail a report quotes: its attached message or headers, or lines in its text."""
    ids: list[str] = []
    senders: list[str] = []
    original = _original(msg)
    if original is not None:
        ids.extend(_str(v) for v in original.get_all("Message-ID", []))
        senders.extend(_str(v).strip().strip("<>").lower() for v in original.get_all("Return-Path", []))
    own = _header(msg, "Message-ID")
    for part in _text_parts(msg):
        for found in re.finditer(r"^\s*(message-id|return-path)\s*:\s*(<[^>\s]+>)", part, re.IGNORECASE | re.MULTILINE):
            (ids if found.group(1).lower() == "message-id" else senders).append(
                found.group(2) if found.group(1).lower() == "message-id" else found.group(2).strip("<>").lower()
            )
    ids = [i.strip() for i in ids if i.strip() and i.strip() != own]
    return tuple(dict.fromkeys(ids)), tuple(dict.fromkeys(s for s in senders if s))


def _text_parts(msg: Message) -> Iterator[str]:
    for part in msg.walk():
        if part.get_content_type() in ("text/plain", "text/rfc822-headers", "message/rfc822-headers"):
            try:
                raw = part.get_payload(decode=True)
            except Exception:
                continue
            if isinstance(raw, bytes):
                yield raw.decode("utf-8", "replace")


def _original(msg: Message) -> Message | None:
    """The returned or reported original: a message/rfc822 part, or text/rfc822-headers read as headers."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind in ("text/rfc822-headers", "message/rfc822-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return email.message_from_bytes(raw, policy=email.policy.default)
    return None


def _part(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _param(msg: Message, name: str) -> str:
    value = msg.get_param(name)
    return value if isinstance(value, str) else ""


def _header(msg: Message, name: str) -> str:
    """A header as one string; a malformed one is read as raw text rather than raising."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    return "" if value is None else _str(value)


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return ""
