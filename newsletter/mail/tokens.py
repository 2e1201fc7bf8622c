"""Signed, purpose-bound tokens for links in mails, so nobody can unsubscribe or edit someone else."""

from __future__ import annotations

from functools import lru_cache

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"


def sign(secret: str, purpose: str, email: str) -> str:
    """A URL-safe token carrying the address, valid only for one purpose.

    What URLSafeTimedSerializer.dumps does, with its parts kept: every digest mail signs two tokens for
    one address, and building the serializer, its signer and the payload each time was most of a mail's cost.
    """
    return _signer(secret, purpose).sign(_payload(email.lower())).decode("ascii")


def verify(secret: str, purpose: str, token: str, max_age: int | None = None) -> str | None:
    """The address inside a valid token for this purpose, else None."""
    try:
        return str(_serializer(secret, purpose).loads(token, max_age=max_age))
    except BadSignature:
        return None


@lru_cache(maxsize=8)
def _serializer(secret: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=purpose)


@lru_cache(maxsize=8)
def _signer(secret: str, purpose: str) -> TimestampSigner:
    signer = _serializer(secret, purpose).make_signer(purpose)
    assert isinstance(signer, TimestampSigner), "a timed serializer makes timestamp signers"
    return signer


@lru_cache(maxsize=64)
def _payload(email: str) -> bytes:
    """The address as the serializer encodes it; the same for every secret and purpose."""
    return _serializer("", "").dump_payload(email)
