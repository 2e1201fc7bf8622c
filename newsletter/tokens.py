"""Signed, purpose-bound tokens for links in mails, so nobody can unsubscribe or edit someone else."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"


def sign(secret: str, purpose: str, email: str) -> str:
    """A URL-safe token carrying the address, valid only for one purpose."""
    return URLSafeTimedSerializer(secret, salt=purpose).dumps(email.lower())


def verify(secret: str, purpose: str, token: str, max_age: int | None = None) -> str | None:
    """The address inside a valid token for this purpose, else None."""
    try:
        return str(URLSafeTimedSerializer(secret, salt=purpose).loads(token, max_age=max_age))
    except BadSignature:
        return None
