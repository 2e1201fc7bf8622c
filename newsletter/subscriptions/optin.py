"""Double opt-in: an unconfirmed subscription, and the signed link that confirms it once, within 48 hours."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from newsletter.mail import tokens
from newsletter.model.signup import Choice, Pending
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

CONFIRM = "confirm"  # token purpose of the double opt-in link
CONFIRM_MAX_AGE = timedelta(hours=48)


def add_pending(store: Store, email: str, choice: Choice, now: datetime | None = None) -> Pending:
    """Record (or replace) an unconfirmed subscription; a new nonce voids every earlier confirmation link."""
    now = now or utcnow()
    pending = Pending(email, secrets.token_hex(8), choice, now)
    store.add_pending(pending, expire_before=now - CONFIRM_MAX_AGE)
    return pending


def confirm_token(secret: str, pending: Pending) -> str:
    """The confirmation link's token: address and nonce only; the choice stays in the database."""
    return tokens.sign(secret, CONFIRM, f"{pending.email} {pending.nonce}")


def find_pending(store: Store, secret: str, token: str, now: datetime | None = None) -> Pending | None:
    """The pending subscription a confirmation token points at, if the token is valid, fresh and the latest one."""
    payload = tokens.verify(secret, CONFIRM, token, max_age=int(CONFIRM_MAX_AGE.total_seconds()))
    if payload is None or payload.count(" ") != 1:
        return None
    email, nonce = payload.split(" ")
    pending = store.pending(email, nonce)
    if pending is None or (now or utcnow()) - pending.created > CONFIRM_MAX_AGE:
        return None
    return pending
