"""Mail that comes back, end to end: digests sent into a real SMTP server, reports about them read by
`newsletter inbound`, and the next send, the YAML and the replies checked."""

from __future__ import annotations

import dataclasses
import json
import mailbox
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient
from support import imapserver, postfixserver
from support.smtpserver import Sink, SMTPServer

from newsletter import config as config_mod
from newsletter import environment, subscriptions
from newsletter.cli import cli
from newsletter.config.load import load
from newsletter.errors import MailboxError, StorageError
from newsletter.inbound import imap
from newsletter.mail import tokens
from newsletter.mail.verp import TAG_CHARS
from newsletter.scheduler.daemon import Daemon
from newsletter.storage.store import Store
from newsletter.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
JOURNALS = ROOT / "tests" / "fixtures" / "other_feeds" / "journals"
FEEDS = [
    JOURNALS / name for name in ("translated_rss__nature_current_issue_rss10_rdf.xml", "biorss__wiley_taxon_toc_rss.xml", "biorss__oup_zool_j_linn_soc_rss.xml")
]
SECRET = "inbound-test-secret"
READERS = ("ada@example.org", "bob@example.net", "cy@example.com")
CONFIG = f"""\
# who gets the digest, kept by hand
settings:
  max_papers_per_topic: 2   # short mails
sources:
  - name: journal
    type: feed
    url: {FEEDS[0]}
topics:
  trending:
    title: Trending
subscribers:
  # the first reader
  - email: ada@example.org
    topics: [trending]
  - email: bob@example.net   # bob, on another domain
    topics: [trending]
  - email: cy@example.com
    topics: [trending]
"""


@dataclass
class World:
    """Three readers, a ledger file, a local SMTP server and the inbound settings, driven through the CLI."""

    folder: Path
    server: SMTPServer
    env: dict[str, str]
    sends: int = 0

    @property
    def yaml(self) -> Path:
        return self.folder / "subscribers.yaml"

    def run(self, *args: str, stdin: bytes | None = None, **extra: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.yaml), *args], env={**self.env, **extra}, input=stdin, catch_exceptions=False)

    def send(self, **extra: str) -> Counter[str]:
        """One day's send, of another journal's papers each time (so everyone is owed a digest); who got one."""
        text = self.yaml.read_text(encoding="utf-8")
        now = next(f for f in FEEDS if str(f) in text)
        self.yaml.write_text(text.replace(str(now), str(FEEDS[(FEEDS.index(now) + self.sends) % len(FEEDS)])), encoding="utf-8")
        self.sends = 1
        before = self.server.sink.count()
        for reader in load(self.yaml).subscribers:  # each forced with --to: `send` alone mails a reader once a day
            result = self.run("send", "--to", reader.email, **extra)
            assert result.exit_code == 0, result.output
        return Counter(m["To"].addresses[0].addr_spec for m in self.server.messages[before:])

    def inbound(self, *messages: EmailMessage | bytes, **extra: str) -> list[dict[str, object]]:
        """`newsletter inbound --json` over these messages written as .eml files; its objects."""
        paths = []
        for n, msg in enumerate(messages):
            path = self.folder / f"in-{len(list(self.folder.glob('in-*')))}-{n}.eml"
            path.write_bytes(msg if isinstance(msg, bytes) else msg.as_bytes())
            paths.append(str(path))
        result = self.run("inbound", "--json", *paths, **extra)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    def digest_to(self, reader: str) -> tuple[EmailMessage, str]:
        """The last digest this reader got, and its envelope sender."""
        index = max(i for i, m in enumerate(self.server.messages) if m["To"].addresses[0].addr_spec == reader)
        return self.server.messages[index], self.server.sink.senders[index]

    def paused(self) -> set[str]:
        with Store(self.folder / "state.db") as store:
            return set(store.paused())


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    (tmp_path / "subscribers.yaml").write_text(CONFIG, encoding="utf-8")
    with SMTPServer() as server:
        yield World(
            tmp_path,
            server,
            {
                **server.env(),
                "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
                "NEWSLETTER_SECRET_KEY": SECRET,
                "NEWSLETTER_DB": str(tmp_path / "state.db"),
                "NEWSLETTER_BASE_URL": "http://localhost",
                "NEWSLETTER_BOUNCE_ADDRESS": "bounces@example.org",
                "NEWSLETTER_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
                "NEWSLETTER_COMMAND_ADDRESS": "digest-request@example.org",
                "INBOUND_AUTHSERV_ID": "mx.example.org",
                "NEWSLETTER_PAUSE_AFTER_FAILURES": "2",
                "SMTP_CONNECTIONS": "1",
            },
        )


def dsn(original: EmailMessage, to: str, recipient: str, status: str, diagnostic: str, action: str = "failed") -> bytes:
    """A delivery-status notification as Postfix writes one (RFC 3464), quoting the original's headers."""
    quoted = "".join(f"{k}: {v}\n" for k, v in original.items() if k.lower() in ("from", "to", "subject", "date", "message-id"))
    return f"""\
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"
Message-Id: {make_msgid(domain="mx.example.net")}

--B0UND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

<{recipient}>: host mx said: {diagnostic}

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--B0UND
Content-Type: text/rfc822-headers

{quoted}
--B0UND--
""".encode()


def arf(original: EmailMessage, reader: str) -> bytes:
    """An abuse report (RFC 5965) from a mailbox provider's feedback loop, the digest attached (the reader redacted, as many do)."""
    quoted = "".join(f"{k}: {v}\n" for k, v in original.items() if k.lower() in ("from", "subject", "date", "message-id"))
    return f"""\
From: Feedback Loop <fbl@mail.example.com>
To: abuse@example.org
Subject: Abuse report
MIME-Version: 1.0
Message-ID: {make_msgid(domain="mail.example.com")}
Content-Type: multipart/report; report-type=feedback-report; boundary="part1"

--part1
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received on a mailbox of ours.

--part1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@example.org>

--part1
Content-Type: message/rfc822
Content-Disposition: inline

{quoted}To: redacted@{reader.partition("@")[2]}

(body removed)

--part1--
""".encode()


def letter(sender: str, to: str, subject: str, body: str = "", auth: str | None = None, **headers: str) -> EmailMessage:
    """A person's mail to one of our addresses, as our MTA delivers it (Return-Path, and Authentication-Results on top)."""
    msg = EmailMessage()
    if auth is not None:
        msg["Authentication-Results"] = auth
    msg["Return-Path"] = f"<{sender}>"
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.partition("@")[2])
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body or "\n")
    return msg


# VERP and attribution


def test_every_digest_has_its_own_signed_bounce_address(world: World) -> None:
    assert world.send() == Counter(READERS)
    senders = world.server.sink.senders
    assert len(set(senders)) == 3 and all(re.fullmatch(rf"bounces\+[a-z2-7]{{{TAG_CHARS}}}@example\.org", s) for s in senders), senders
    assert all(m["From"].addresses[0].addr_spec == "digest@example.org" for m in world.server.messages), "the From stays as it is"


def test_a_hard_bounce_pauses_the_reader_and_the_next_send_skips_them(world: World) -> None:
    world.send()
    digest, verp = world.digest_to("ada@example.org")
    (out,) = world.inbound(dsn(digest, verp, "ada@example.org", "5.1.1", "550 5.1.1 <ada@example.org>: Recipient address rejected: User unknown"))
    assert out == {"source": out["source"], "kind": "hard_bounce", "recipients": ["ada@example.org"], "action": out["action"]}
    assert str(out["action"]).startswith("paused ada@example.org: hard bounce")
    assert world.paused() == {"ada@example.org"}
    status = world.run("status").output
    assert "paused   ada@example.org since" in status and "hard bounce of send-" in status and "User unknown" in status
    assert world.send() == Counter({"bob@example.net": 1, "cy@example.com": 1}), "ada is skipped, the others get new papers"
    assert world.run("status", "--resume", "ada@example.org").exit_code == 0
    assert world.send()["ada@example.org"] == 1, "resumed, she gets mail again"


def test_soft_bounces_do_not_pause_until_several_digests_in_a_row_bounce(world: World) -> None:
    world.send()
    digest, verp = world.digest_to("bob@example.net")
    (out,) = world.inbound(dsn(digest, verp, "bob@example.net", "4.2.2", "452 4.2.2 Mailbox full", action="delayed"))
    assert (out["kind"], out["action"]) == ("soft_bounce", "counted soft bounce for bob@example.net: 1 of 2 in a row")
    assert world.inbound(dsn(digest, verp, "bob@example.net", "4.2.2", "452 4.2.2 Mailbox full"))[0]["action"].endswith("(this report was seen before)")
    assert world.send()["bob@example.net"] == 1, "one soft bounce pauses nobody"
    digest, verp = world.digest_to("bob@example.net")
    (out,) = world.inbound(dsn(digest, verp, "bob@example.net", "5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering"))
    assert (out["kind"], out["action"]) == ("soft_bounce", "paused bob@example.net: 2 soft bounces in a row"), "a 5.7.1 policy block is soft"
    assert world.send() == Counter({"ada@example.org": 1, "cy@example.com": 1})
    assert world.run("status", "--resume", "bob@example.net").exit_code == 0
    assert world.send()["bob@example.net"] == 1
    digest, verp = world.digest_to("bob@example.net")
    (out,) = world.inbound(dsn(digest, verp, "bob@example.net", "4.2.2", "452 4.2.2 Mailbox full"))
    assert out["action"] == "counted soft bounce for bob@example.net: 1 of 2 in a row", "bounces from before the resume no longer count"


def test_a_digest_that_arrived_between_soft_bounces_breaks_the_row(world: World) -> None:
    world.send()
    first = world.digest_to("cy@example.com")
    world.send()  # this one arrives: no bounce
    world.send()
    third = world.digest_to("cy@example.com")
    for digest, verp in (first, third):
        world.inbound(dsn(digest, verp, "cy@example.com", "4.4.7", "delivery time expired"))
    assert world.paused() == set()


def test_forged_reports_change_nothing(world: World) -> None:
    world.send()
    forged_id = EmailMessage()
    forged_id["Message-ID"] = make_msgid(domain="example.org")
    forged_id["To"] = "ada@example.org"
    other_secret = environment.load({"NEWSLETTER_SECRET_KEY": "someone-else"}, dotenv=Path("/nonexistent"))
    from newsletter.mail import verp as verp_mod

    foreign = verp_mod.address("bounces@example.org", str(other_secret.secret_key), "send-x", "ada@example.org")
    outs = world.inbound(
        dsn(forged_id, "bounces+" + "a" * TAG_CHARS + "@example.org", "ada@example.org", "5.1.1", "550 5.1.1 User unknown"),  # an unsigned tag
        dsn(forged_id, foreign, "ada@example.org", "5.1.1", "550 5.1.1 User unknown"),  # a tag signed with another key, an unknown Message-ID
        dsn(forged_id, "bounces@example.org", "ada@example.org", "5.1.1", "550 5.1.1 User unknown"),  # no tag at all
        arf(forged_id, "ada@example.org"),
    )
    assert [o["kind"] for o in outs] == ["hard_bounce", "hard_bounce", "hard_bounce", "complaint"]
    assert all(str(o["action"]).startswith("unattributed") for o in outs), outs
    assert world.paused() == set() and "ada@example.org" in world.yaml.read_text(encoding="utf-8")
    assert world.send() == Counter(READERS)
    assert "4 unattributed" in world.run("status").output


def test_without_verp_the_quoted_message_id_ties_a_bounce_to_its_delivery(world: World) -> None:
    world.send(NEWSLETTER_BOUNCE_ADDRESS="")
    digest, envelope = world.digest_to("cy@example.com")
    assert envelope == "digest@example.org", "no VERP without NEWSLETTER_BOUNCE_ADDRESS"
    (out,) = world.inbound(dsn(digest, "digest@example.org", "cy@example.com", "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled"))
    assert out["action"] == "paused cy@example.com: hard bounce of " + str(out["action"]).rpartition(" ")[2]
    assert world.paused() == {"cy@example.com"}


def test_a_hard_bounce_about_another_address_counts_only_as_soft(world: World) -> None:
    world.send()
    digest, verp = world.digest_to("ada@example.org")
    (out,) = world.inbound(dsn(digest, verp, "ada.forward@elsewhere.example", "5.1.1", "550 5.1.1 User unknown"))
    assert out["action"] == "counted soft bounce for ada@example.org: 1 of 2 in a row" and world.paused() == set()


# complaints and unsubscribe mails


def test_a_complaint_unsubscribes_at_once_keeping_the_yaml_comments(world: World) -> None:
    world.send()
    digest, _ = world.digest_to("bob@example.net")
    (out,) = world.inbound(arf(digest, "bob@example.net"))
    assert (out["kind"], out["action"]) == ("complaint", "unsubscribed bob@example.net: complaint about " + str(out["action"]).rpartition(" ")[2])
    text = world.yaml.read_text(encoding="utf-8")
    assert "bob@example.net" not in text
    assert "# who gets the digest, kept by hand" in text and "# the first reader" in text and "# short mails" in text
    assert world.send() == Counter({"ada@example.org": 1, "cy@example.com": 1})


def test_an_authenticated_mail_to_the_unsubscribe_address_unsubscribes_its_sender(world: World) -> None:
    auth = "mx.example.org; dkim=pass header.d=example.org header.s=mail; spf=pass smtp.mailfrom=ada@example.org"
    (out,) = world.inbound(letter("Ada@Example.org", "unsubscribe@example.org", "unsubscribe", auth=auth))
    assert out == {
        "source": out["source"],
        "kind": "unsubscribe",
        "recipients": ["ada@example.org"],
        "action": "unsubscribed ada@example.org: authenticated mail",
    }
    text = world.yaml.read_text(encoding="utf-8")
    assert "ada@example.org" not in text and "# the first reader" in text
    assert world.send() == Counter({"bob@example.net": 1, "cy@example.com": 1})


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "mx.attacker.example; dkim=pass header.d=example.net",  # another server's word
        "mx.example.org; dkim=pass header.d=attacker.example; spf=fail smtp.mailfrom=bob@example.net",  # signed by a domain not the From's
        "mx.example.org; dkim=fail header.d=example.net",
    ],
)
def test_an_unauthenticated_unsubscribe_mail_is_answered_with_a_confirmation_link(world: World, auth: str | None) -> None:
    (out,) = world.inbound(letter("bob@example.net", "unsubscribe@example.org", "unsubscribe", auth=auth))
    assert out["action"] == "replied to bob@example.net with a one-click unsubscribe link: not authenticated"
    assert "bob@example.net" in world.yaml.read_text(encoding="utf-8"), "nothing changes until they press the button"
    (reply,) = world.server.messages
    assert reply["To"].addresses[0].addr_spec == "bob@example.net" and reply["Auto-Submitted"] == "auto-replied"
    match = re.search(r"http://localhost/unsubscribe/(\S+)", reply.get_content())
    assert match and tokens.verify(SECRET, tokens.UNSUBSCRIBE, match.group(1)) is not None
    assert tokens.verify(SECRET, tokens.UNSUBSCRIBE, match.group(1)).value == "bob@example.net"  # type: ignore[union-attr]


def test_an_automatic_unsubscribe_mail_acts_when_authenticated_and_is_never_answered_otherwise(world: World) -> None:
    """Mail clients' unsubscribe buttons may send it as automatic mail: acting sends nothing, so that is safe; a reply would not be."""
    auth = "mx.example.org; dkim=pass header.d=example.com"
    outs = world.inbound(
        letter("bob@example.net", "unsubscribe@example.org", "unsubscribe", Auto_Submitted="auto-generated"),
        letter("cy@example.com", "unsubscribe@example.org", "unsubscribe", auth=auth, Auto_Submitted="auto-generated"),
    )
    assert [o["action"] for o in outs] == [
        "ignored: not authenticated, and automatic mail is never answered (no loop)",
        "unsubscribed cy@example.com: authenticated mail",
    ]
    assert world.server.messages == [] and "cy@example.com" not in world.yaml.read_text(encoding="utf-8")


def test_a_forged_authentication_header_below_our_own_is_not_believed(world: World) -> None:
    msg = letter("cy@example.com", "unsubscribe@example.org", "unsubscribe", auth="mx.example.org; dkim=none")
    msg["Authentication-Results"] = "mx.example.org; dkim=pass header.d=example.com"  # added by the sender, so below ours
    (out,) = world.inbound(msg)
    assert out["action"].startswith("replied to cy@example.com") and "cy@example.com" in world.yaml.read_text(encoding="utf-8")


# commands by mail


def test_a_subscribe_mail_leads_to_a_working_confirmation(world: World) -> None:
    (out,) = world.inbound(letter("newbie@example.net", "digest-request@example.org", "SUBSCRIBE trending"))
    assert (out["kind"], out["action"]) == ("command", "confirmation link mailed to newbie@example.net: nothing changes until they confirm")
    assert "newbie" not in world.yaml.read_text(encoding="utf-8")
    (mail,) = world.server.messages
    match = re.search(r"http://localhost(/confirm/\S+)", mail.get_content())
    assert match, mail.get_content()
    env = environment.load(world.env, dotenv=Path("/nonexistent"))
    client = TestClient(create_app(env, world.yaml), base_url="http://localhost")
    page = client.get(match.group(1))
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token
    assert "You are subscribed" in client.post(match.group(1), data={"csrf": token.group(1)}).text
    assert "  - email: newbie@example.net\n" in world.yaml.read_text(encoding="utf-8")


def test_help_topics_and_unknown_commands_are_answered_from_the_address_written_to(world: World) -> None:
    outs = world.inbound(
        letter("x@example.net", "digest-request@example.org", "help"),
        letter("x@example.net", "digest-request@example.org", "Re: anything", body="\n\ntopics\nplease"),
        letter("y@example.net", "digest-request@example.org", "subscribe nosuchtopic"),
    )
    assert [o["action"] for o in outs] == [
        "replied to x@example.net with help",
        "replied to x@example.net with the topics",
        "replied to y@example.net: unknown topic nosuchtopic",
    ]
    help_mail, topics_mail, unknown = world.server.messages
    assert all(m["From"].addresses[0].addr_spec == "digest-request@example.org" for m in world.server.messages)
    assert "trending — Trending" in topics_mail.get_content() and "subscribe TOPIC" in help_mail.get_content()
    assert "There is no topic nosuchtopic" in unknown.get_content()


def test_no_reply_goes_to_automatic_mail_and_replies_are_rate_limited(world: World) -> None:
    outs = world.inbound(
        letter("x@example.net", "digest-request@example.org", "help", Auto_Submitted="auto-replied"),
        letter("x@example.net", "digest-request@example.org", "help", List_Id="<some.list.example.net>"),
        letter("x@example.net", "digest-request@example.org", "help", Precedence="bulk"),
        letter("MAILER-DAEMON@example.net", "digest-request@example.org", "help"),
        *[letter("z@example.net", "digest-request@example.org", "help") for _ in range(5)],
    )
    assert [(o["kind"], o["action"]) for o in outs[:4]] == [
        ("auto_reply", "ignored: auto-reply"),
        ("command", "ignored: automatic mail or no single sender (no reply, no loop)"),
        ("command", "ignored: automatic mail or no single sender (no reply, no loop)"),
        ("soft_bounce", "unattributed: names no mail we sent; logged, nothing changed"),  # from MAILER-DAEMON: a bounce of our own reply
    ]
    assert [o["action"] for o in outs[4:]] == ["replied to z@example.net with help"] * 3 + [
        "not answered: z@example.net had 3 replies within 1 day, 0:00:00"
    ] * 2
    assert len(world.server.messages) == 3


# reading


def test_maildir_mbox_and_stdin_are_read_and_unreadable_paths_named_with_exit_2(world: World) -> None:
    auto = letter("x@example.net", "someone@example.org", "Out of Office: back Monday", Auto_Submitted="auto-replied")
    folder = mailbox.Maildir(world.folder / "Maildir", create=True)
    folder.add(auto.as_bytes())
    folder.add(letter("x@example.net", "someone@example.org", "hello").as_bytes())
    box = mailbox.mbox(world.folder / "box.mbox")
    box.add(auto.as_bytes())
    box.add(auto.as_bytes())
    box.close()
    result = world.run(
        "inbound", "--json", str(world.folder / "Maildir"), str(world.folder / "box.mbox"), str(world.folder / "missing.eml"), "-", stdin=auto.as_bytes()
    )
    assert result.exit_code == 2
    outs = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(o["kind"] for o in outs) == ["auto_reply"] * 4 + ["other"]
    assert [o["source"] for o in outs][2:] == [f"{world.folder / 'box.mbox'}:1", f"{world.folder / 'box.mbox'}:2", "-"]
    assert f"cannot read {world.folder / 'missing.eml'}" in result.stderr


# the daemon's mailbox, on a real Dovecot


@pytest.fixture
def dovecot() -> Iterator[imapserver.ImapServer]:
    """A Dovecot of the test's own; without Debian's dovecot-imapd the test fails saying so (CI installs it)."""
    if not imapserver.available():
        pytest.fail(f"{imapserver.DOVECOT} is missing: apt-get install dovecot-imapd (as root), as .ci/run does")
    with imapserver.ImapServer() as server:
        yield server


@pytest.mark.parametrize("tls", [True, False], ids=["imaps", "plain"])
def test_the_daemon_reads_the_mailbox_acts_and_moves_each_message_never_deleting(world: World, dovecot: imapserver.ImapServer, tls: bool) -> None:
    world.send()
    digest, verp = world.digest_to("ada@example.org")
    dovecot.deliver(
        dsn(digest, verp, "ada@example.org", "5.1.1", "550 5.1.1 User unknown"),
        letter("x@example.net", "someone@example.org", "Out of Office", Auto_Submitted="auto-replied").as_bytes(),
        letter("x@example.net", "digest-request@example.org", "help").as_bytes(),
    )
    env = environment.load({**world.env, **dovecot.env(tls=tls)}, dotenv=Path("/nonexistent"))
    daemon = Daemon(config_mod.load(world.yaml), env)
    settings = subscriptions.imap_settings(env)
    assert settings is not None and settings.tls is tls
    assert daemon.read_mailbox(settings) == 3
    assert (dovecot.count("INBOX"), dovecot.count("newsletter-processed")) == (0, 3), "moved, never deleted"
    assert daemon.read_mailbox(settings) == 0, "nothing is read twice"
    assert world.paused() == {"ada@example.org"}
    assert [m["To"].addresses[0].addr_spec for m in world.server.messages[3:]] == ["x@example.net"], "the help answer"


def test_a_message_whose_handling_fails_stays_in_the_folder_for_the_next_poll(dovecot: imapserver.ImapServer) -> None:
    dovecot.deliver(b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n")
    settings = imap.ImapSettings("127.0.0.1", dovecot.port, imapserver.USER, imapserver.PASSWORD, tls=False)

    def handle(source: str, data: bytes) -> None:
        if b"two" in data:
            raise StorageError("the state database failed")

    with pytest.raises(StorageError):
        imap.poll(settings, handle)
    assert (dovecot.count("INBOX"), dovecot.count("newsletter-processed")) == (1, 1)
    assert imap.poll(settings, lambda source, data: None) == 1
    wrong = dataclasses.replace(settings, password="wrong")
    with pytest.raises(MailboxError, match=r"cannot open the mailbox at 127\.0\.0\.1:\d+"):
        imap.poll(wrong, handle)


def test_a_message_that_trips_a_detector_is_read_without_a_traceback(world: World) -> None:
    result = world.run("inbound", "--json", stdin=b"From: \nSubject: Undeliverable\n\nx\n")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["kind"] == "soft_bounce"


# a real Postfix's bounce of our own digest


def test_a_digest_bounced_by_a_real_postfix_pauses_its_reader(world: World) -> None:
    """Postfix refuses bob's domain (its error transport, as for an unknown user) and returns its own DSN to the
    digest's VERP address; the DSN, as it arrives, is read by `newsletter inbound`."""
    if not postfixserver.available():
        pytest.fail(f"{postfixserver.POSTFIX} is missing: apt-get install postfix (as root), as .ci/run does")
    refusing = SMTPServer(Sink(reply=lambda rcpt: "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"))
    with refusing, postfixserver.PostfixServer({"example.org": world.server.port, "example.com": world.server.port, "example.net": refusing.port}) as postfix:
        result = world.run("send", **postfix.env())
        assert result.exit_code == 0 and "3 sent" in result.output, result.output  # Postfix took all three
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(str(m["Subject"]).startswith("Undelivered") for m in world.server.messages):
            time.sleep(0.2)
        bounces = [i for i, m in enumerate(world.server.messages) if str(m["Subject"]).startswith("Undelivered")]
        assert bounces, postfix.log()
    (index,) = bounces
    bounce = world.server.messages[index]
    assert world.server.sink.senders[index] == "<>" and re.fullmatch(rf"bounces\+[a-z2-7]{{{TAG_CHARS}}}@example\.org", bounce["To"].addresses[0].addr_spec)
    (out,) = world.inbound(bounce.as_bytes())
    assert (out["kind"], out["recipients"]) == ("hard_bounce", ["bob@example.net"])
    assert str(out["action"]).startswith("paused bob@example.net: hard bounce")
    assert world.paused() == {"bob@example.net"}
