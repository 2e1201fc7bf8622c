"""Messages are well-formed, refuse header injection, and SMTP replies map to temporary or permanent failures."""

from __future__ import annotations

import email
import email.policy
from email.headerregistry import Address
from pathlib import Path

import pytest
from smtpserver import SMTPServer, Sink

from newsletter import environment
from newsletter.mailer import DeliveryError, Headers, Outbox, Smtp, build_message

SENDER = Address("Paper Digest", "digest", "example.org")


def message(to: Address | None = None):  # type: ignore[no-untyped-def]
    headers = Headers(to or Address("Ada", "ada", "example.org"), "Paper digest · 25 Nov 2026 · 2 new papers", "https://news.example.org/unsubscribe/tok", "Paper digest <digest.example.org>")
    return build_message(SENDER, headers, "plain body\n", "<p>html body</p>")


def test_message_has_the_headers_and_parts_mail_clients_expect() -> None:
    msg = message()
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert len(msg.get_all(name, [])) == 1, name
    assert msg["Message-ID"].endswith("@example.org>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_a_newline_in_a_name_cannot_add_headers() -> None:
    with pytest.raises(ValueError):
        message(Address("Ada\r\nBcc: victim@example.org", "ada", "example.org"))


def test_outbox_writes_one_parseable_eml_per_message(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out")
    outbox.send(message())
    outbox.send(message())
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == 2 and not list((tmp_path / "out").glob(".tmp-*"))
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "Ada <ada@example.org>"


def test_smtp_delivers_and_reuses_one_connection() -> None:
    with SMTPServer() as server:
        smtp = Smtp(environment.load(server.env(), dotenv=Path("/nonexistent")))
        smtp.send(message())
        first = smtp._conn
        smtp.send(message(Address("Bob", "bob", "example.org")))
        assert smtp._conn is first
        smtp.close()
    assert [m["To"] for m in server.messages] == ["Ada <ada@example.org>", "Bob <bob@example.org>"]


@pytest.mark.parametrize(("reply", "temporary"), [("451 4.7.1 Try again later", True), ("550 5.1.1 No such user", False)])
def test_refusals_say_whether_to_retry(reply: str, temporary: bool) -> None:
    with SMTPServer(Sink(reply=lambda rcpt: reply)) as server:
        smtp = Smtp(environment.load(server.env(), dotenv=Path("/nonexistent")))
        with pytest.raises(DeliveryError) as info:
            smtp.send(message())
        smtp.close()
    assert info.value.temporary is temporary
    assert info.value.reply.startswith(reply[:3])
    assert server.messages == []


def test_starttls_is_never_dropped_to_plaintext() -> None:
    with SMTPServer() as server:
        env = environment.load({**server.env(), "SMTP_SECURITY": "starttls"}, dotenv=Path("/nonexistent"))
        with pytest.raises(DeliveryError, match="STARTTLS") as info:
            Smtp(env).send(message())
    assert info.value.temporary is False
    assert server.messages == []


def test_unreachable_server_is_a_temporary_failure() -> None:
    from smtpserver import free_port

    env = environment.load({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()), "SMTP_SECURITY": "none"}, dotenv=Path("/nonexistent"))
    with pytest.raises(DeliveryError) as info:
        Smtp(env).send(message())
    assert info.value.temporary is True
