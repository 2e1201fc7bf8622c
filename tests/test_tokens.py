"""Link tokens: bound to one purpose, and the same format itsdangerous writes, so links in mails already sent keep working."""

from __future__ import annotations

from itsdangerous import URLSafeTimedSerializer

from newsletter.mail import tokens


def test_a_token_opens_only_for_its_purpose_and_secret() -> None:
    token = tokens.sign("s3cret", tokens.UNSUBSCRIBE, "Ada@Example.org")
    assert tokens.verify("s3cret", tokens.UNSUBSCRIBE, token) == "ada@example.org"
    assert tokens.verify("s3cret", tokens.PREFERENCES, token) is None
    assert tokens.verify("other", tokens.UNSUBSCRIBE, token) is None
    assert tokens.verify("s3cret", tokens.UNSUBSCRIBE, token[:-2] + "xx") is None


def test_tokens_are_itsdangerous_timed_tokens_both_ways() -> None:
    serializer = URLSafeTimedSerializer("s3cret", salt=tokens.PREFERENCES)
    assert serializer.loads(tokens.sign("s3cret", tokens.PREFERENCES, "bob@example.org")) == "bob@example.org"
    assert tokens.verify("s3cret", tokens.PREFERENCES, serializer.dumps("bob@example.org")) == "bob@example.org"


def test_two_purposes_for_one_address_give_two_different_tokens() -> None:
    first = tokens.sign("s3cret", tokens.UNSUBSCRIBE, "ada@example.org")
    second = tokens.sign("s3cret", tokens.PREFERENCES, "ada@example.org")
    assert first != second and first.split(".")[0] == second.split(".")[0], "the same payload, signed for each purpose"
