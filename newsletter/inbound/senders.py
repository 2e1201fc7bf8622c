"""Who wrote a message, whether the receiving MTA vouches for it, and whether it may be answered at all."""

from __future__ import annotations

import re
from email.message import Message
from email.utils import getaddresses, parseaddr

from newsletter.environment import aligned

_NO_REPLY_LOCAL = re.compile(
    r"^(mailer-daemon|mail-daemon|postmaster|no-?reply|do-?not-?reply|bounces?|listserv|majordomo|owner-.*|.*-(owner|request|bounces))$", re.I
)


def sender(msg: Message) -> str | None:
    """The one From address, lower-cased; None when there is none or several."""
    found = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("From", [])]) if "@" in addr]
    return found[0].lower() if len(found) == 1 else None


def authenticated(msg: Message, authserv_id: str | None, address: str) -> bool:
    """Whether our own MTA (the topmost Authentication-Results, RFC 8601, whose authserv-id is INBOUND_AUTHSERV_ID)
    says DKIM or SPF passed for a domain aligned with the From address's.

    Only the topmost header counts: that is the one our MTA added last; any below it came with the message and may be forged."""
    if not authserv_id:
        return False
    headers = msg.get_all("Authentication-Results", [])
    if not headers:
        return False
    top = " ".join(str(headers[0]).split())
    server, _, results = top.partition(";")
    if server.lower().split()[:1] != [authserv_id.lower()]:  # the authserv-id, optionally followed by a version
        return False
    domain = address.rpartition("@")[2]
    for result in results.split(";"):
        method = re.match(r"\s*(dkim|spf)\s*=\s*(\w+)", result, re.I)
        if not method or method.group(2).lower() != "pass":
            continue
        props = dict((k.lower(), v.strip().strip('"')) for k, v in re.findall(r"([\w.]+)\s*=\s*(\"[^\"]*\"|\S+)", result[method.end() :]))
        if method.group(1).lower() == "dkim":
            signer = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
        else:
            signer = props.get("smtp.mailfrom", "").rpartition("@")[2] or props.get("smtp.helo", "")
        if signer and aligned(signer.rstrip(";"), domain):
            return True
    return False


def answerable(msg: Message) -> bool:
    """Whether a reply may go back: never to auto-submitted mail (RFC 3834), bounces, lists or bulk mail (no loops)."""
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if auto and not auto.startswith("no"):
        return False
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "list", "junk", "auto_reply"):
        return False
    if any(msg.get(h) is not None for h in ("List-Id", "List-Unsubscribe", "List-Post", "X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")):
        return False
    return_path = msg.get("Return-Path")
    if return_path is not None and "@" not in parseaddr(str(return_path))[1]:
        return False  # a null reverse-path (<>) marks a bounce or an auto-reply
    address = sender(msg)
    return address is not None and not _NO_REPLY_LOCAL.match(address.partition("@")[0])
