"""Per-message bounce addresses (VERP): `bounces+TAG@example.org`, where TAG is signed with the secret key and
names one delivery (edition and reader), so only mail this installation sent can be reported as bounced.

A tag is lower-case base32 (MTAs may fold the case of a local part): five characters that pick the edition out
of the ledger's editions, then sixteen (80 bits) of an HMAC over the edition and the reader's address. It reads
as noise, holds no address, and cannot be made for another reader or edition without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable

EDITION_CHARS = 5
MAC_CHARS = 16
TAG_CHARS = EDITION_CHARS + MAC_CHARS


def address(base: str, secret: str, edition: str, subscriber: str) -> str:
    """The envelope sender for one digest: `base` with `+TAG` added to its local part."""
    local, _, domain = base.rpartition("@")
    return f"{local}+{edition_code(secret, edition)}{_mac(secret, edition, subscriber)}@{domain}"


def tag_of(base: str, candidate: str) -> str | None:
    """The tag in an address made by `address` on `base` (any case), or None if it is not one of ours."""
    local, _, domain = base.lower().rpartition("@")
    got_local, _, got_domain = candidate.strip().strip("<>").lower().rpartition("@")
    prefix = local + "+"
    if got_domain != domain or not got_local.startswith(prefix):
        return None
    tag = got_local[len(prefix) :]
    return tag if len(tag) == TAG_CHARS and tag.isalnum() else None


def edition_code(secret: str, edition: str) -> str:
    return _b32(hmac.new(secret.encode(), b"verp-edition\0" + edition.encode(), hashlib.sha256).digest())[:EDITION_CHARS]


def resolve(secret: str, tag: str, editions: Iterable[str], subscribers_of: Callable[[str], Iterable[str]]) -> tuple[str, str] | None:
    """The (edition, subscriber) a tag was made for, searched among the ledger's editions and their readers; None if forged."""
    code, mac = tag[:EDITION_CHARS], tag[EDITION_CHARS:]
    for edition in editions:
        if not hmac.compare_digest(edition_code(secret, edition), code):
            continue
        for subscriber in subscribers_of(edition):
            if hmac.compare_digest(_mac(secret, edition, subscriber), mac):
                return edition, subscriber
    return None


def _mac(secret: str, edition: str, subscriber: str) -> str:
    message = b"verp\0" + edition.encode() + b"\0" + subscriber.lower().encode()
    return _b32(hmac.new(secret.encode(), message, hashlib.sha256).digest())[:MAC_CHARS]


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").lower()
