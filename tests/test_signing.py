"""DKIM: signatures made with OpenSSL over dkimpy's canonicalisation verify with OpenDKIM, Mail::DKIM and dkimpy,
break when the message changes, cover both List-Unsubscribe headers (over-signed), and are made by the sending threads."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy
from markupsafe import escape
from support.dkimverifiers import DkimKey, mail_dkim, opendkim
from support.smtpserver import Sink, SMTPServer

from newsletter import environment
from newsletter.errors import EnvError
from newsletter.mail.message import Headers, Letter, Stationery, build_message, seal
from newsletter.mail.pool import Job, Pool
from newsletter.mail.signing import DkimSettings, Signer, relaxed_headers
from newsletter.mail.transports import Outbox, Signed, Smtp, SmtpSettings

SENDER = Address("Paper Digest", "digest", "example.org")
NO_DOTENV = Path("/nonexistent")
ALL_PASS = {"opendkim": True, "mail-dkim": True, "dkimpy": True}
ALL_FAIL = {"opendkim": False, "mail-dkim": False, "dkimpy": False}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    return DkimKey.make(tmp_path_factory.mktemp("dkim"))


def signer_for(key: DkimKey) -> Signer:
    signer = Signer.from_settings(environment.load(key.settings, dotenv=NO_DOTENV).dkim)
    assert signer is not None
    return signer


def env_for(server: SMTPServer) -> SmtpSettings:
    settings = environment.load(server.env(), dotenv=NO_DOTENV).smtp
    assert settings is not None
    return settings


def digest(name: str = "Ådá Łovelace", token: str = "tok") -> Letter:
    """A reader's digest as the send makes it: stationery filled in, non-ASCII name, long unsubscribe link, mailto too."""
    text = "Hello __NAME__ (__EMAIL__), grüße · ▲ 12.\n.\nFrom here on\n\n\nLeave: https://news.example.org/u/__TOKEN__\n\n\n"
    html = '<p>Hello __HNAME__ &amp; <b>é</b></p>\n<a href="https://news.example.org/u/__TOKEN__">leave</a>\n'
    headers = Headers(
        Address(name, "ada", "example.org"),
        "Paper digest · 25 Nov · 2 new",
        f"https://news.example.org/unsubscribe/{token}",
        "Digest <d.example.org>",
        "leave@example.org",
    )
    stationery = Stationery(SENDER, headers.subject, headers.list_id, text, html, ("__NAME__", "__HNAME__", "__EMAIL__", "__TOKEN__"))
    return stationery.letter(headers, {"__NAME__": name, "__HNAME__": str(escape(name)), "__EMAIL__": "ada@example.org", "__TOKEN__": token})


def service_mail() -> EmailMessage:
    """A confirmation as the service builds it: EmailMessage picks 8bit for its UTF-8 text."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = SENDER, "ada@example.org", "Confirm", "<c@example.org>"
    msg.set_content("someone — hopefully you — asked\n")
    return msg


def messages() -> dict[str, bytes]:
    """Each kind of mail the newsletter signs, unsigned."""
    headers = Headers(Address("Ada", "ada", "example.org"), "Digest", "https://x/u/" + "t" * 200, "l <l.example.org>")
    return {
        "digest": digest().data,
        "long token": digest("Ada", "InJlYWRlcjAw" * 20).data,
        "whole message": seal(build_message(SENDER, headers, "Grüße\n", "<p>Grüße</p>")).data,
        "8bit service mail": seal(service_mail()).data,
    }


def test_the_signature_verifies_with_opendkim_mail_dkim_and_dkimpy(key: DkimKey) -> None:
    signed = {kind: signer_for(key).sign(data) for kind, data in messages().items()}
    assert all(data.isascii() for data in signed.values()), "signed as 7bit (RFC 6376 §5.3)"
    assert dict(zip(signed, key.verdicts(*signed.values()), strict=True)) == dict.fromkeys(signed, ALL_PASS)
    digest_signed = signed["digest"]
    assert opendkim(digest_signed, key.name, key.txt).said == "Success" and mail_dkim([digest_signed], key.name, key.txt)[0].said == "pass"


def test_the_header_block_is_canonicalised_as_dkimpy_does_it() -> None:
    """relaxed_headers stands in for dkimpy's parse and relaxed canonicalisation (same fields, same bytes), folded
    headers, tabs, runs of spaces and trailing spaces included."""
    odd = b"Subject:  a\t\tfolded\r\n \t subject  \r\nX-Thing:value  \r\nTo: <ada@example.org>\r\n\tcont\r\n\r\nbody\r\n"
    for data in [*messages().values(), odd]:
        head = data.partition(b"\r\n\r\n")[0]
        assert relaxed_headers(head) == CanonicalizationPolicy.from_c_value(b"relaxed/simple").canonicalize_headers(dkim.rfc822_parse(data)[0])


CHANGES = {
    "unsubscribe link": lambda m: m.replace(b"unsubscribe/tok", b"unsubscribe/evil"),  # a signed header
    "subject": lambda m: m.replace(b"Subject: Paper digest", b"Subject: Paper digesT"),
    "body word": lambda m: m.replace(b"From here on", b"From there on"),
    "body line": lambda m: m.replace(b"\r\n--", b"\r\nInjected line\r\n--", 1),
    "appended": lambda m: m + b"more\r\n",
    "prepended From": lambda m: b"From: Bank <security@bank.example>\r\n" + m,  # over-signed
}


def test_a_message_changed_after_signing_fails_every_verifier(key: DkimKey) -> None:
    signed = signer_for(key).sign(digest().data)
    tampered = {name: change(signed) for name, change in CHANGES.items()}
    assert all(data != signed for data in tampered.values())
    assert key.verdicts(signed) == [ALL_PASS]
    assert dict(zip(tampered, key.verdicts(*tampered.values()), strict=True)) == dict.fromkeys(tampered, ALL_FAIL)
    assert "altered" in mail_dkim([tampered["body word"]], key.name, key.txt)[0].said
    assert opendkim(tampered["subject"], key.name, key.txt).said.startswith("Bad signature")


def test_header_whitespace_and_trailing_empty_lines_may_change(key: DkimKey) -> None:
    """relaxed/simple, dkimpy's default and what it signed with before: a hop that re-spaces a header or adds empty
    lines at the end keeps the signature."""
    signed = signer_for(key).sign(digest().data)
    assert b"c=relaxed/simple;" in signed and b"a=rsa-sha256;" in signed
    respaced = re.sub(rb"\r\nList-Id: ", b"\r\nList-Id:   ", signed, count=1)
    assert respaced != signed
    assert key.verdicts(respaced, signed + b"\r\n\r\n") == [ALL_PASS, ALL_PASS]


def signed_names(data: bytes) -> list[str]:
    signature = email.message_from_bytes(data, policy=email.policy.default)["DKIM-Signature"]
    return re.search(r"h=([^;]+)", re.sub(r"\s", "", str(signature))).group(1).lower().split(":")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "prepended",
    [
        b"List-Unsubscribe: <https://evil.example/unsubscribe>\r\n",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        b"From: Bank <security@bank.example>\r\n",
        b"Subject: Your account is locked\r\n",
    ],
)
def test_a_header_prepended_after_signing_breaks_the_signature(key: DkimKey, prepended: bytes) -> None:
    """From, Subject and both unsubscribe headers are over-signed: h= names each once more than it occurs (#15)."""
    signed = signer_for(key).sign(digest().data)
    names = signed_names(signed)
    for name in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert names.count(name) == 2, name
    for name in ("to", "date", "message-id", "list-id"):
        assert names.count(name) == 1, name
    after_signature = signed.replace(b"\r\nFrom: ", b"\r\n" + prepended + b"From: ", 1)
    assert key.verdicts(prepended + signed, after_signature) == [ALL_FAIL, ALL_FAIL], "a verifier takes the prepended header as the signed one"


def test_a_mail_without_unsubscribe_headers_is_signed_against_adding_them(key: DkimKey) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, "ada@example.org", "Confirm your subscription"
    msg.set_content("Open the link.\n")
    signed = signer_for(key).sign(seal(msg).data)
    assert signed_names(signed).count("list-unsubscribe") == 1 and b"List-Unsubscribe:" not in signed
    assert key.verdicts(signed, b"List-Unsubscribe: <https://evil.example/u>\r\n" + signed) == [ALL_PASS, ALL_FAIL]


def relay_without_8bitmime(data: bytes) -> bytes:
    """What a relay does before passing a message to a server without 8BITMIME: re-encode each 8bit part."""
    if data.isascii():
        return data
    msg = email.message_from_bytes(data, policy=email.policy.SMTP)
    for part in msg.walk():
        if not part.is_multipart() and part["Content-Transfer-Encoding"] == "8bit":
            part.set_content(part.get_content(), subtype=part.get_content_subtype(), cte="quoted-printable")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_what_is_signed_is_7bit_so_a_hop_without_8bitmime_leaves_the_signature_whole(key: DkimKey) -> None:
    """RFC 6376 §5.3: signers convert to 7bit first. Before #15 digests were signed 8bit, and a relay that
    re-encoded them for a server without 8BITMIME broke the signature (the second half shows how)."""
    assert not seal(service_mail()).data.isascii()
    signed = [signer_for(key).sign(data) for data in messages().values()]
    assert all(data.isascii() and relay_without_8bitmime(data) == data for data in signed), "nothing for a relay to re-encode"

    old = EmailMessage()  # signed the way digests were before: 8bit bodies
    old["From"], old["To"], old["Subject"] = SENDER, "ada@example.org", "Digest"
    old.set_content("Grüße · ▲ 12\n", cte="8bit")
    old.add_alternative("<p>Grüße · ▲ 12</p>\n", subtype="html", cte="8bit")
    data = old.as_bytes(policy=email.policy.SMTP)
    signed_8bit = dkim.sign(data, b"news", b"example.org", key.path.read_bytes()) + data
    assert dkim.verify(signed_8bit, dnsfunc=key.dns)
    assert not dkim.verify(relay_without_8bitmime(signed_8bit), dnsfunc=key.dns), "re-encoded on the way, the 8bit-signed body no longer matches"


def test_a_server_without_8bitmime_gets_signed_mail_7bit_and_unsigned_8bit_mail_re_encoded(key: DkimKey) -> None:
    unsigned = service_mail()
    unsigned.set_content("Grüße · " + "▲ 12 " * 140 + "\n", cte="8bit")  # one line of 850 bytes
    for server_8bit in (False, True):
        with SMTPServer(Sink(raw=True, eight_bit=server_8bit)) as server:
            signing = Signed(Smtp(env_for(server)), signer_for(key))
            signing.send(digest())
            signing.send(seal(unsigned))
            signing.close()
            plain = Smtp(env_for(server))
            plain.send(seal(unsigned))
            plain.close()
        signed_digest, signed_8bit, other = server.sink.received
        assert server.sink.mail_options[0] == (["BODY=8BITMIME"] if server_8bit else [])
        assert signed_digest.isascii() and signed_8bit.isascii(), "signed 7bit, whatever the server announces"
        assert key.verdicts(signed_digest, signed_8bit) == [ALL_PASS, ALL_PASS]
        if server_8bit:
            assert other == seal(unsigned).data, "unsigned 8bit goes as it is"
        else:
            assert other.isascii() and max(len(line) for line in other.split(b"\r\n\r\n", 1)[1].split(b"\r\n")) <= 76, "re-encoded, lines within 76"
            got = email.message_from_bytes(other, policy=email.policy.default)
            assert got.get_content().replace("\r\n", "\n") == unsigned.get_content()  # type: ignore[attr-defined]


class RecordingSigner(Signer):
    """Signs as the real one does, noting which thread did each."""

    threads: list[str]

    def sign(self, data: bytes) -> bytes:
        self.threads.append(threading.current_thread().name)
        return super().sign(data)


def test_the_pool_workers_sign_each_message_off_the_callers_thread(key: DkimKey) -> None:
    signer = signer_for(key)
    recording = RecordingSigner(signer.selector.decode(), signer.domain.decode(), signer.private_key)
    recording.threads = []
    with SMTPServer(Sink(raw=True)) as server:
        settings = env_for(server)
        pool = Pool(lambda: Signed(Smtp(settings), recording), size=3, rate=None)
        users = [f"user{i}" for i in range(9)]
        for i, user in enumerate(users):
            letter = digest(user.title(), f"tok{i}")
            assert b"DKIM-Signature" not in letter.data, "the caller hands over unsigned bytes"
            pool.put(Job(user, letter))
        results = [pool.get(10) for _ in users]
        pool.close()
    assert all(r is not None and r.error is None for r in results)
    assert len(recording.threads) == len(users) and all(name.startswith("smtp-") for name in recording.threads)
    assert threading.current_thread().name not in recording.threads
    assert key.verdicts(*server.sink.received) == [ALL_PASS] * len(users)


def test_the_outbox_keeps_signed_mail_when_dkim_is_set(key: DkimKey, tmp_path: Path) -> None:
    outbox = Signed(Outbox(tmp_path / "out"), signer_for(key))
    outbox.send(digest())
    (written,) = (tmp_path / "out").glob("*.eml")
    assert key.verdicts(written.read_bytes()) == [ALL_PASS]


def write_key(path: Path, key: object, password: bytes | None = None) -> DkimSettings:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))  # type: ignore[attr-defined]
    return DkimSettings("news", "example.org", path)


def test_a_key_that_cannot_sign_is_refused_when_read_naming_the_file(tmp_path: Path) -> None:
    cases = {
        "not PEM": DkimSettings("news", "example.org", tmp_path / "junk.pem"),
        "Ed25519": write_key(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate()),
        "encrypted": write_key(tmp_path / "enc.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048), b"pw"),
        "missing": DkimSettings("news", "example.org", tmp_path / "none.pem"),
    }
    (tmp_path / "junk.pem").write_text("not a key\n")
    for case, settings in cases.items():
        with pytest.raises(EnvError, match=rf"^DKIM_PRIVATE_KEY_PATH {re.escape(str(settings.private_key_path))}: ") as caught:
            Signer.from_settings(settings)
        assert "\n" not in str(caught.value), case
    with pytest.raises(EnvError, match="DKIM signs with RSA"):
        Signer.from_settings(cases["Ed25519"])
