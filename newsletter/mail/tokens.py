"""Opaque, purpose-bound, expiring and revocable tokens for the links in mails, so nobody can unsubscribe or
edit someone else, and an address never shows in a link (links end up in access logs and referrers).

A token is AES-GCM (the `cryptography` package's AEAD) over the address and the reader's link version, with
the purpose and the time it was made as associated data: it reads as random bytes, cannot be altered or moved
to another purpose, and ages out. Bumping a reader's link version (storage: `revoke_links`) voids every link
made before. Tokens of the earlier, readable itsdangerous format are still accepted for the same ages, as
version 0, so links in mails sent before this release keep working until they age out or are revoked.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadSignature, URLSafeTimedSerializer

from newsletter.model.digest import Layout

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"  # the double opt-in link
EDITION = "edition"  # one edition's page, for one reader: the value is the address and the edition's layout key
FEED = "feed"  # the reader's private Atom feed of their editions
PREVIEW = "preview"  # the page of a digest `newsletter preview` showed: the value is the address and the whole layout (none is stored)
# How long a link works. One-click unsubscribe must keep working in old mails; preferences less so (every
# digest carries a fresh link); a confirmation is for the next two days only. An edition's page works at least
# as long as its papers are candidates (`horizon_days`) plus EDITION_MARGIN: see edition_max_age.
MAX_AGE = {
    UNSUBSCRIBE: timedelta(days=365),
    PREFERENCES: timedelta(days=90),
    CONFIRM: timedelta(hours=48),
    EDITION: timedelta(days=90),
    FEED: timedelta(days=365),
    PREVIEW: timedelta(days=30),
}
EDITION_MARGIN = timedelta(days=30)
_FORMAT = 1  # first byte of every token
_HEADER = struct.Struct(">BI")  # format, issued (Unix seconds)
_NONCE = 12
_TAG = 16
_SKEW = 300  # seconds a token may seem to come from the future (clocks of several machines)


@dataclass(frozen=True)
class Claim:
    """What a valid token says."""

    value: str  # the address (for a confirmation: the address and the pending request's nonce)
    version: int  # the reader's link version when it was made; a lower one than the current was revoked
    issued: datetime


def sign(secret: str, purpose: str, value: str, version: int = 0) -> str:
    """A URL-safe token for `value` (lower-cased) that opens only for `purpose` and ages out after MAX_AGE."""
    return _seal(secret, purpose, f"{value.lower()}\0{version}".encode())


def verify(secret: str, purpose: str, token: str, max_age: timedelta | None = None) -> Claim | None:
    """The claim of a valid, unexpired token for this purpose, else None (revocation is the caller's check)."""
    age = max_age or MAX_AGE[purpose]
    raw = _sealed(token)
    if raw is None:
        return _legacy(secret, purpose, token, age)
    opened = _open(secret, purpose, raw, age)
    if opened is None:
        return None
    try:
        value, _, version = opened[0].decode().rpartition("\0")
    except UnicodeDecodeError:
        return None
    return Claim(value, int(version), opened[1])


def _seal(secret: str, purpose: str, body: bytes) -> str:
    header = _HEADER.pack(_FORMAT, int(time.time()))
    nonce = os.urandom(_NONCE)
    sealed = _aead(secret).encrypt(nonce, body, header + purpose.encode())
    return base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode("ascii")


def _sealed(token: str) -> bytes | None:
    """The token's bytes when it has the shape `_seal` makes (else it is a legacy token, or none of ours)."""
    raw = _unpadded_b64(token)
    return None if raw is None or len(raw) < _HEADER.size + _NONCE + _TAG or raw[0] != _FORMAT else raw


def _open(secret: str, purpose: str, raw: bytes, age: timedelta) -> tuple[bytes, datetime] | None:
    """The body a token of this purpose seals and when it was made, unless it was altered, is another purpose's or aged out."""
    header, nonce, sealed = raw[: _HEADER.size], raw[_HEADER.size : _HEADER.size + _NONCE], raw[_HEADER.size + _NONCE :]
    try:
        body = _aead(secret).decrypt(nonce, sealed, header + purpose.encode())
    except InvalidTag:
        return None
    issued = _HEADER.unpack(header)[1]
    now = time.time()
    if issued > now + _SKEW or now - issued > age.total_seconds():
        return None
    return body, datetime.fromtimestamp(issued, UTC)


def edition_max_age(horizon_days: int) -> timedelta:
    """How long an edition's link opens: MAX_AGE[EDITION], or longer when the horizon is long."""
    return max(MAX_AGE[EDITION], timedelta(days=horizon_days) + EDITION_MARGIN)


def edition_value(email: str, layout_key: str) -> str:
    """What an edition link's token seals: the reader and the edition, so the link opens that page for that reader only."""
    return f"{email}\0{layout_key}"


def edition(secret: str, email: str, layout_key: str, version: int) -> str:
    """The token of one reader's link to one edition's page, at their link version: mails and feeds make it alike."""
    return sign(secret, EDITION, edition_value(email, layout_key), version)


@dataclass(frozen=True)
class EditionLink:
    """What an edition link's token says: whose it is, which edition, at which link version."""

    email: str
    layout_key: str
    version: int


def read_edition(secret: str, token: str, horizon_days: int) -> EditionLink | None:
    """The reader and edition a link made by `edition` opens, or None when it is forged, expired or not an edition's."""
    claim = verify(secret, EDITION, token, edition_max_age(horizon_days))
    email, sep, key = claim.value.partition("\0") if claim else ("", "", "")
    if claim is None or not sep:
        return None
    return EditionLink(email, key, claim.version)


@dataclass(frozen=True)
class PreviewLink:
    """What a preview's link says: whose digest it showed, as which layout, at which link version."""

    email: str
    layout: Layout
    version: int


def preview(secret: str, email: str, layout: Layout, version: int) -> str:
    """The link token of a digest `newsletter preview` showed: it carries the layout itself (compressed), since a
    preview records nothing, so its "View in your browser" and "…and N more" links open exactly what it showed."""
    body = json.dumps([email.lower(), version, layout.to_dict()], ensure_ascii=False, separators=(",", ":"))
    return _seal(secret, PREVIEW, zlib.compress(body.encode("utf-8"), 9))


def read_preview(secret: str, token: str) -> PreviewLink | None:
    """The reader and layout a link made by `preview` opens, or None when it is forged, expired or not a preview's."""
    raw = _sealed(token)
    opened = None if raw is None else _open(secret, PREVIEW, raw, MAX_AGE[PREVIEW])
    if opened is None:
        return None
    email, version, layout = json.loads(zlib.decompress(opened[0]))  # sealed by us: well formed
    return PreviewLink(email, Layout.from_dict(layout), version)


def _legacy(secret: str, purpose: str, token: str, age: timedelta) -> Claim | None:
    """A token of the readable format mailed before opaque tokens: honoured as version 0 for the same age."""
    try:
        value, issued = URLSafeTimedSerializer(secret, salt=purpose).loads(token, max_age=int(age.total_seconds()), return_timestamp=True)
    except BadSignature:
        return None
    return Claim(str(value), 0, issued)


def _unpadded_b64(token: str) -> bytes | None:
    if not token or not token.isascii() or "." in token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None


@lru_cache(maxsize=8)
def _aead(secret: str) -> AESGCM:
    """One key per secret, derived so the secret itself never keys the cipher directly."""
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"newsletter link tokens v1").derive(secret.encode()))
