"""Classification of mail that comes back, on 117 real bounces from many MTAs and on the standard report formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.inbound.classify import classify, permanence

SAMPLES = Path(__file__).parent / "fixtures" / "bounces"

# Read from each message: (kind, the addresses it is about). "soft" where the MTA gives no reason, or a reason
# about the mailbox's state, the sender, the message or the network; "hard" only where it says the address is dead.
H, S = "hard_bounce", "soft_bounce"
EXPECTED: dict[str, tuple[str, list[str]]] = {
    "aol_01": (S, ["screenname@aol.com"]),  # not accepting mail from this sender
    "bounce_01": (S, []),  # "mail box space not enough", local part only
    "bounce_02": (H, ["userx@example.com"]),  # 550 mailbox unavailable
    "bounce_03": (S, ["userx@example.uk"]),  # not collected after 30 days
    "caiwireless_01": (S, ["userx@example.com"]),  # no reason given
    "dsn_01": (S, ["userx@example.com"]),  # 5.0.0 recipient reached disk quota
    "dsn_02": (S, ["zzzzz@example.uk"]),  # failed 4.4.7 maximum time expired
    "dsn_03": (S, ["userx@example.be"]),  # 553 exceeded maximum inbound message size
    "dsn_04": (S, ["userx@example.ch"]),  # failed 5.0.0, no diagnostic
    "dsn_05": (S, ["userx@example.cz"]),  # delayed
    "dsn_06": (S, ["userx@example.com"]),  # delayed
    "dsn_07": (S, ["userx@example.nz"]),  # delayed
    "dsn_08": (S, ["userx@example.de"]),  # delayed, virus scanner down
    "dsn_09": (S, ["userx@example.com"]),  # X.400 unable-to-transfer, unknown diagnostic
    "dsn_10": (H, ["anne.person@dom.ain"]),  # 550 User unknown
    "dsn_11": (H, ["joem@example.com"]),  # 5.1.1
    "dsn_12": (H, ["userx@example.jp"]),  # 5.1.1 bad destination mailbox
    "dsn_13": (H, ["userx@example.com"]),  # 5.1.1
    "dsn_14": (H, ["userx@example.com.dk"]),  # 550 5.1.1 User unknown
    "dsn_15": (H, ["userx@example.com"]),  # 5.1.1
    "dsn_16": (H, ["userx@example.com"]),  # 550 unknown user
    "dsn_17": (S, ["userx@example.fi"]),  # delayed, quota exceeded
    "dsn_18": (S, ["email@replaced.net"]),  # error 5.0.0, no diagnostic
    "dumbass_01": (S, []),  # exceeded maximum delivery attempts
    "exim_01": (H, ["userx@its.example.nl"]),  # 553 5.1.1 unknown or illegal user
    "groupwise_01": (H, ["userx@example.edu"]),  # recipient name is not recognized
    "groupwise_02": (H, ["userx@example.com"]),  # recipient name is not recognized
    "groupwise_03": ("other", []),  # a person's reply
    "hotpop_01": (S, ["userx@example.com"]),  # over disk quota
    "llnl_01": (H, ["user1@example.gov"]),  # did not match an LLNL address
    "microsoft_01": (H, ["userx@example.com"]),  # recipient name is not recognized
    "microsoft_02": (H, ["userx@example.com"]),  # recipient name is not recognized
    "microsoft_03": (S, ["userx@example.com"]),  # a list's "awaits moderator approval"
    "microsoft_04": (H, ["userx@example.com"]),  # recipient name is not recognized
    "netscape_01": (S, ["aaaaa@corel.com", "bbbbb@corel.com"]),  # host not responding for 2 days
    "newmailru_01": (S, ["zzzzz@newmail.ru"]),  # exceeding quota
    "postfix_01": (H, ["xxxxx@local.ie"]),  # 550 5.1.1 User unknown
    "postfix_02": (S, ["yyyyy@digicool.com"]),  # Host not found, try again (DNS)
    "postfix_03": (S, ["ttttt@ggggg.com"]),  # local filter crashed
    "postfix_04": (S, ["userx@mail1.example.com"]),  # mail quota exceeded
    "postfix_05": (S, ["userx@example.net"]),  # 554 No Resent-From field
    "qmail_01": (S, ["userx@example.de"]),  # permanent, no reason given
    "qmail_02": (S, ["userx@example.com"]),  # mailfolder is full
    "qmail_03": (H, ["userx@example.jp"]),  # no mailbox here by that name (#5.1.1)
    "qmail_04": (H, ["userx@example.au"]),  # 550 No such user
    "qmail_05": (H, ["userx@example.com"]),  # 550 User unknown in virtual alias table
    "qmail_06": (S, ["ntl@xxx.com"]),  # disk quota exceeded
    "qmail_07": (S, ["user@example.net"]),  # mailfolder is full
    "qmail_08": ("auto_reply", []),  # Precedence: auto_reply
    "sendmail_01": (S, ["zzzzz@nfg.nl", "zzzzz@shaft.coal.nl"]),  # too many hops (a loop)
    "simple_01": (S, ["bbbsss@example.com"]),  # 552 would exceed mailbox quota
    "simple_02": (S, ["userx@example.net"]),  # processing error, resend
    "simple_03": (S, ["userx@example.za"]),  # delayed 24 hours
    "simple_04": (H, ["userx@example.com"]),  # unknown host
    "simple_05": (H, ["userx@example.net"]),  # user doesn't have an account
    "simple_06": (H, ["userx@example.com"]),  # user doesn't have an account
    "simple_07": (S, ["userx@example.net"]),  # mailbox is full
    "simple_08": (H, ["userx@example.de"]),  # 550 user unknown
    "simple_09": (S, ["userx@example.de"]),  # quota exceeded
    "simple_10": (S, ["userx@example.com"]),  # failed, no reason given
    "simple_11": (H, ["userx@example.com"]),  # not listed in Domino Directory
    "simple_12": (H, ["userx@example.ac.jp"]),  # invalid final delivery userid
    "simple_13": (H, ["userx@example.fr"]),  # "n'existe pas"
    "simple_14": (S, ["userx@example.com", "usery@example.com"]),  # 552 quota violation
    "simple_15": (H, ["userx@example.be"]),  # 550 5.1.1 unknown user
    "simple_16": (S, ["userx@example.com"]),  # undisclosed address, no reason
    "simple_17": (S, ["userx@example.com"]),  # Google: failed permanently, no reason given
    "simple_18": (S, ["userx@example.com"]),  # 554 message looping
    "simple_19": (H, ["userx@example.com.ar"]),  # no mailbox here by that name (#5.1.1)
    "simple_20": (S, ["userx@example.com"]),  # not delivered, no reason
    "simple_21": (S, ["userx@example.com"]),  # warning: not yet delivered
    "simple_22": (S, ["user@example.org"]),  # attempts continue for 5 days
    "simple_23": (H, ["userx@example.it"]),  # User not known
    "simple_24": (S, ["userx@example.com"]),  # did not reach, no reason
    "simple_25": (H, ["userx@example.com"]),  # No such user
    "simple_26": (H, ["userx@example.it"]),  # wrong or no longer valid
    "simple_27": (H, ["userx@example.net.py"]),  # no such user here
    "simple_28": (S, ["userx@example.com"]),  # Google: delayed
    "simple_29": (H, ["userx@example.com"]),  # 550 unknown user
    "simple_30": (H, ["userx@example.com"]),  # 553 5.3.0 No such user here
    "simple_31": (S, ["userx@example.fr"]),  # failed permanently, no reason given
    "simple_32": (S, ["userx@example.com"]),  # could not find a gateway, aborted after 5 hours
    "simple_33": (H, ["userx@example.com"]),  # 553 5.3.0 No such user here
    "simple_34": (H, ["roland@example.com"]),  # 550 5.1.1 User unknown
    "simple_35": (S, ["calvin@example.com"]),  # postponed: full mailbox
    "simple_36": (H, ["userx@example.com"]),  # 550 unknown user
    "simple_37": (H, ["user@example.edu"]),  # no final email delivery point
    "simple_38": (S, ["userx@example.com"]),  # quota exceeded
    "simple_39": (H, ["userx@example.ru"]),  # invalid mailbox: user not found
    "simple_40": (S, ["user@example.com"]),  # delayed 2 days
    "simple_41": (H, ["userx@example.com"]),  # 550 mailbox unavailable or not local
    "simple_42": (S, ["david...@gmail.com"]),  # 550-5.7.1 Gmail's spam verdict
    "simple_43": (H, []),  # not a valid user; the address itself is not given
    "simple_44": (S, ["user@example.com"]),  # 4.4.4 temporary server error
    "simple_45": (S, ["subscriber@earthlink.net"]),  # account is overquota
    "sina_01": (S, ["userx@sina.com", "usery@sina.com"]),  # unavoidable external error
    "smtp32_01": (S, ["userx@example.ph"]),  # failed 20 attempts
    "smtp32_02": (S, ["userx@example.com"]),  # failed 20 attempts
    "smtp32_03": (S, ["userx@example.com"]),  # undeliverable, no reason
    "smtp32_04": (H, ["after_another@example.net", "one_bad_address@example.net"]),  # Addressee unknown
    "smtp32_05": (S, ["userx@example.com"]),  # undeliverable, no reason
    "smtp32_06": (H, ["absolute_garbage_addr@example.net"]),  # Addressee unknown
    "smtp32_07": (H, ["userx@example.com"]),  # invalid final delivery userid
    "yahoo_01": (S, ["userx@example.com"]),  # no SMTP connection (#4.4.1)
    "yahoo_02": (S, ["userx@example.es"]),  # over quota
    "yahoo_03": (H, ["userx@example.com"]),  # account disabled or discontinued
    "yahoo_04": (S, ["userx@example.es", "usery@example.uk"]),  # over quota
    "yahoo_05": (H, ["userx@example.com", "usery@example.com"]),  # disabled
    "yahoo_06": (H, ["usera@example.com", "userx@example.com", "usery@example.com", "userz@example.com"]),
    "yahoo_07": (H, ["userw@example.com", "userx@example.com", "usery@example.com", "userz@example.com"]),
    "yahoo_08": (H, [f"user{c}@example.com" for c in "abcdef"]),
    "yahoo_09": (H, ["userx@example.com", "usery@example.com"]),
    "yahoo_10": (H, ["userx@example.com", "usery@example.com", "userz@example.com"]),  # no such account / disabled
    "yahoo_11": (H, ["bad_user@aol.com"]),  # 550 5.1.1
    "yahoo_12": (S, ["user@yahoo.com"]),  # permanent, no reason given
    "yahoo_13": (H, ["bogus-address@example.net"]),  # 5.1.1 User unknown
    "yale_01": (H, ["userx@cs.yale.edu", "userx@yale.edu"]),  # no matches to nameserver query
}


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.stem for p in SAMPLES.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_bounce(name: str) -> None:
    kind, recipients = EXPECTED[name]
    report = classify((SAMPLES / f"{name}.txt").read_bytes())
    assert (report.kind, sorted(report.recipients)) == (kind, sorted(recipients)), report.reason


@pytest.mark.parametrize(
    ("status", "text", "verdict"),
    [
        ("5.1.1", "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", "hard"),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", "hard"),
        ("5.1.2", "Host or domain name not found", "hard"),
        ("5.7.1", "550 5.7.1 Service unavailable; client host blocked using Spamhaus", "soft"),
        ("5.7.26", "550 5.7.26 This mail is unauthenticated (DMARC)", "soft"),
        ("5.2.2", "552 5.2.2 The email account that you tried to reach is over quota", "soft"),
        ("5.0.0", "550 Message rejected: sender address blocked for policy reasons", "soft"),
        ("5.0.0", "", "soft"),
        ("5.0.0", "550 5.0.0 Relaying is disabled for this domain", "soft"),  # about the sending server, not the reader
        ("5.1.0", "550 5.1.0 Sender rejected: verify failed", "soft"),
        ("4.2.2", "452 4.2.2 mailbox full", "soft"),
        ("5.1.1", "550 5.1.1 Blocked by spam filter: user unknown", "hard"),  # 5.1.1 names the address whatever else is said
    ],
)
def test_permanence(status: str, text: str, verdict: str) -> None:
    assert permanence(status, text) == verdict


# the standard formats, as providers send them

GMAIL_DSN = b"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces+abc@example.org
Subject: Delivery Status Notification (Failure)
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000"; report-type=delivery-status

--000
Content-Type: text/plain; charset="UTF-8"

Address not found: Your message wasn't delivered to gone@gmail.com because the address couldn't be found.

--000
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Tue, 01 Dec 2026 10:00:00 -0800 (PST)

Final-Recipient: rfc822; gone@gmail.com
Action: failed
Status: %(status)s
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.1.26, the server for the domain gmail.com.)
Diagnostic-Code: smtp; %(diagnostic)s
Last-Attempt-Date: Tue, 01 Dec 2026 10:00:01 -0800 (PST)

--000
Content-Type: message/rfc822

Message-ID: <digest-1@example.org>
From: Paper Digest <digest@example.org>
To: gone@gmail.com
Subject: Your digest

body
--000--
"""


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "550-5.1.1 The email account that you tried to reach does not exist.", "hard_bounce"),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled.", "hard_bounce"),
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "hard_bounce"),  # Office 365
        ("5.4.1", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "soft_bounce"),  # Office 365 edge block
        ("5.7.1", "550-5.7.1 [1.2.3.4] Our system has detected that this message is likely unsolicited mail.", "soft_bounce"),
        ("5.7.26", "550-5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy.", "soft_bounce"),
        ("5.2.2", "552-5.2.2 The recipient's inbox is out of storage space.", "soft_bounce"),
        ("4.2.2", "452-4.2.2 The recipient's inbox is out of storage space.", "soft_bounce"),
        ("5.0.0", "554 5.0.0 Service unavailable", "soft_bounce"),  # no reason about the address
    ],
)
def test_a_dsn_is_judged_by_its_status_and_diagnostic(status: str, diagnostic: str, kind: str) -> None:
    report = classify(GMAIL_DSN % {b"status": status.encode(), b"diagnostic": diagnostic.encode()})
    assert (report.kind, report.recipients, report.message_ids) == (kind, ("gone@gmail.com",), ("<digest-1@example.org>",))
    assert report.addressed_to == ("bounces+abc@example.org",)


def test_a_dsn_that_says_delivered_or_relayed_is_no_bounce() -> None:
    delivered = GMAIL_DSN.replace(b"Action: failed", b"Action: delivered") % {b"status": b"2.0.0", b"diagnostic": b"250 2.0.0 OK"}
    relayed = GMAIL_DSN.replace(b"Action: failed", b"Action: relayed") % {b"status": b"2.0.0", b"diagnostic": b"250 OK"}
    assert classify(delivered).kind == classify(relayed).kind == "other"


def test_a_delayed_dsn_is_soft_never_hard() -> None:
    delayed = GMAIL_DSN.replace(b"Action: failed", b"Action: delayed") % {b"status": b"4.4.1", b"diagnostic": b"connection timed out"}
    assert classify(delayed).kind == "soft_bounce"


ARF = b"""\
From: <abuse@mail.example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: Earn money
To: <abuse@example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.  For more information
about this format please see http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <somespammer@example.net>
Original-Rcpt-To: <user@example.com>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Reporting-MTA: dns; mail.example.com
Source-IP: 192.0.2.1
Authentication-Results: mail.example.com;
               spf=fail smtp.mail=somespammer@example.com
Reported-Domain: example.net
Reported-Uri: http://example.net/earn_money.html
Reported-Uri: mailto:user@example.com
Removal-Recipient: user@example.com

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: <somespammer@example.net>
Received: from mailserver.example.net (mailserver.example.net
        [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;
        Thu, 08 Mar 2005 14:00:00 -0400
Return-Path: <bounces+tag@example.net>
To: <Undisclosed Recipients>
Subject: Earn money
MIME-Version: 1.0
Content-type: text/plain
Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net
Date: Thu, 02 Sep 2004 12:31:03 -0500

Spam Spam Spam
Spam Spam Spam
Spam Spam Spam
Spam Spam Spam
--part1_13d.2e68ed54_boundary--
"""


def test_an_arf_report_is_a_complaint_about_its_original_recipient() -> None:
    """The example report of RFC 5965 appendix B.2."""
    report = classify(ARF)
    assert (report.kind, report.recipients) == ("complaint", ("user@example.com",))
    assert report.quoted_senders == ("bounces+tag@example.net",), "the original's Return-Path: a VERP address ties it to its digest"


@pytest.mark.parametrize(
    "headers",
    [
        "Auto-Submitted: auto-replied\nSubject: Re: Your digest",
        "X-Autoreply: yes\nSubject: Re: Your digest",
        "Subject: Out of Office: back on Monday",
        "Subject: Automatic reply: Your digest\nX-Auto-Response-Suppress: All",
        "Subject: Abwesenheitsnotiz",
        "Precedence: auto_reply\nSubject: Thanks",
    ],
)
def test_auto_replies_are_recognised(headers: str) -> None:
    raw = f"From: reader@example.org\nTo: bounces@example.org\n{headers}\n\nI am away until Monday.\n".encode()
    assert classify(raw).kind == "auto_reply"


def test_a_broken_message_is_other_not_an_error() -> None:
    assert classify(b"\xff\xfe garbage without headers").kind == "other"
    assert classify(b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n").kind in ("soft_bounce", "other")
