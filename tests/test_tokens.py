"""Link tokens: opaque, bound to one purpose and one secret, aging out, revocable by version; tokens of the
earlier readable format still open for the same ages, so links in mails already sent keep working."""

from __future__ import annotations

import base64
import time
from datetime import date, timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer

from newsletter.mail import tokens
from newsletter.model.digest import Layout, Shelf


def test_a_token_opens_only_for_its_purpose_and_secret() -> None:
    token = tokens.sign("s3cret", tokens.UNSUBSCRIBE, "Ada@Example.org")
    claim = tokens.verify("s3cret", tokens.UNSUBSCRIBE, token)
    assert claim is not None and (claim.value, claim.version) == ("ada@example.org", 0)
    assert tokens.verify("s3cret", tokens.PREFERENCES, token) is None
    assert tokens.verify("other", tokens.UNSUBSCRIBE, token) is None
    assert tokens.verify("s3cret", tokens.UNSUBSCRIBE, token[:-2] + ("xx" if token[-2:] != "xx" else "yy")) is None
    assert tokens.verify("s3cret", tokens.UNSUBSCRIBE, "") is None and tokens.verify("s3cret", tokens.UNSUBSCRIBE, "ü.x") is None


def test_a_token_shows_nothing_of_the_address_in_any_spelling() -> None:
    """Links land in access logs, referrers and forwarded mails: the old ones carried the address in base64."""
    email = "ada.lovelace@example.org"
    token = tokens.sign("s3cret", tokens.PREFERENCES, email)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for spelling in (email.encode(), base64.urlsafe_b64encode(email.encode()).rstrip(b"="), b"ada", b"example"):
        assert spelling not in raw and spelling.decode() not in token
    assert tokens.sign("s3cret", tokens.PREFERENCES, email) != token, "a fresh nonce every time: two links never look alike"


def test_the_version_it_was_made_at_travels_inside() -> None:
    claim = tokens.verify("s3cret", tokens.PREFERENCES, tokens.sign("s3cret", tokens.PREFERENCES, "bob@example.org", 7))
    assert claim is not None and claim.version == 7


@pytest.mark.parametrize(("purpose", "days"), [(tokens.UNSUBSCRIBE, 365), (tokens.PREFERENCES, 90), (tokens.CONFIRM, 2)])
def test_a_token_ages_out(monkeypatch: pytest.MonkeyPatch, purpose: str, days: int) -> None:
    real = time.time
    token = tokens.sign("s3cret", purpose, "ada@example.org")
    monkeypatch.setattr(time, "time", lambda: real() + (days - 0.01) * 86400)
    assert tokens.verify("s3cret", purpose, token) is not None
    monkeypatch.setattr(time, "time", lambda: real() + (days + 0.01) * 86400)
    assert tokens.verify("s3cret", purpose, token) is None
    assert tokens.verify("s3cret", purpose, token, max_age=timedelta(days=days + 1)) is not None


def test_a_token_from_the_future_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    token = tokens.sign("s3cret", tokens.UNSUBSCRIBE, "ada@example.org")
    monkeypatch.setattr(time, "time", real)
    assert tokens.verify("s3cret", tokens.UNSUBSCRIBE, token) is None


def test_links_in_mails_sent_before_opaque_tokens_keep_working_for_the_same_ages(monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = URLSafeTimedSerializer("s3cret", salt=tokens.UNSUBSCRIBE).dumps("ada@example.org")
    claim = tokens.verify("s3cret", tokens.UNSUBSCRIBE, legacy)
    assert claim is not None and (claim.value, claim.version) == ("ada@example.org", 0), "as version 0: a revocation voids them too"
    assert tokens.verify("s3cret", tokens.PREFERENCES, legacy) is None, "still bound to their purpose"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 366 * 86400)
    assert tokens.verify("s3cret", tokens.UNSUBSCRIBE, legacy) is None


def test_a_previews_token_carries_its_whole_layout_unaltered_and_opens_for_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(date(2026, 7, 31), (Shelf("agents", "LLM Agents", ("2411.00001", "HF:Ab"), ("2411.00002",)),))
    token = tokens.preview("s3cret", "Ada@Example.org", layout, 4)
    assert tokens.read_preview("s3cret", token) == tokens.PreviewLink("ada@example.org", layout, 4), "ids and titles keep their case"
    assert tokens.read_preview("other", token) is None
    assert tokens.read_edition("s3cret", token, 7) is None and tokens.verify("s3cret", tokens.EDITION, token) is None
    assert tokens.read_preview("s3cret", tokens.edition("s3cret", "ada@example.org", layout.key, 4)) is None
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-1] ^= 1
    assert tokens.read_preview("s3cret", base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()) is None
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + tokens.MAX_AGE[tokens.PREVIEW].total_seconds() + 1)
    assert tokens.read_preview("s3cret", token) is None, "it ages out"
