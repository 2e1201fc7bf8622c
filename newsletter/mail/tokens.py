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
import os
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadSignature, URLSafeTimedSerializer

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"  # the double opt-in link
EDITION = "edition"  # one edition's page, for one reader: the value is the address and the edition's layout key
FEED = "feed"  # the reader's private Atom feed of their editions
# How long a link works. One-click unsubscribe must keep working in old mails; preferences less so (every
# digest carries a fresh link); a confirmation is for the next two days only. An edition's page works at least
# as long as its papers are candidates (`horizon_days`) plus EDITION_MARGIN: see edition_max_age.
MAX_AGE = {
    UNSUBSCRIBE: timedelta(days=365),
    PREFERENCES: timedelta(days=90),
    CONFIRM: timedelta(hours=48),
    EDITION: timedelta(days=90),
    FEED: timedelta(days=365),
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
    header = _HEADER.pack(_FORMAT, int(time.time()))
    nonce = os.urandom(_NONCE)
    sealed = _aead(secret).encrypt(nonce, f"{value.lower()}\0{version}".encode(), header + purpose.encode())
    return base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode("ascii")


def verify(secret: str, purpose: str, token: str, max_age: timedelta | None = None) -> Claim | None:
    """The claim of a valid, unexpired token for this purpose, else None (revocation is the caller's check)."""
    age = max_age or MAX_AGE[purpose]
    raw = _unpadded_b64(token)
    if raw is None or len(raw) < _HEADER.size + _NONCE + _TAG or raw[0] != _FORMAT:
        return _legacy(secret, purpose, token, age)
    header, nonce, sealed = raw[: _HEADER.size], raw[_HEADER.size : _HEADER.size + _NONCE], raw[_HEADER.size + _NONCE :]
    try:
        body = _aead(secret).decrypt(nonce, sealed, header + purpose.encode()).decode()
    except (InvalidTag, UnicodeDecodeError):
        return None
    issued = _HEADER.unpack(header)[1]
    now = time.time()
    if issued > now + _SKEW or now - issued > age.total_seconds():
        return None
    value, _, version = body.rpartition("\0")
    return Claim(value, int(version), datetime.fromtimestamp(issued, UTC))


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
