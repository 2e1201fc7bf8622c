"""Double opt-in: an unconfirmed subscription, and the signed link that confirms it once, within 48 hours."""

from __future__ import annotations

import secrets
from datetime import datetime

from newsletter.mail import tokens
from newsletter.model.signup import Choice, Pending
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

CONFIRM_MAX_AGE = tokens.MAX_AGE[tokens.CONFIRM]


def add_pending(store: Store, email: str, choice: Choice, now: datetime | None = None) -> Pending:
    """Record (or replace) an unconfirmed subscription; a new nonce voids every earlier confirmation link."""
    now = now or utcnow()
    pending = Pending(email, secrets.token_hex(8), choice, now)
    store.add_pending(pending, expire_before=now - CONFIRM_MAX_AGE)
    return pending


def confirm_token(secret: str, pending: Pending) -> str:
    """The confirmation link's token: address and nonce only; the choice stays in the database."""
    return tokens.sign(secret, tokens.CONFIRM, f"{pending.email} {pending.nonce}")


def find_pending(store: Store, secret: str, token: str, now: datetime | None = None) -> Pending | None:
    """The pending subscription a confirmation token points at, if the token is valid, fresh and the latest one."""
    claim = tokens.verify(secret, tokens.CONFIRM, token)
    if claim is None or claim.value.count(" ") != 1:
        return None
    email, nonce = claim.value.split(" ")
    pending = store.pending(email, nonce)
    if pending is None or (now or utcnow()) - pending.created > CONFIRM_MAX_AGE:
        return None
    return pending
