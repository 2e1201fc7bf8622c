"""Messages are well-formed, refuse header injection, TLS is verified, and SMTP replies map to retry or give up."""

from __future__ import annotations

import email
import email.policy
import itertools
import os
import signal
import time
from email.headerregistry import Address
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest
from markupsafe import escape
from support.smtpserver import Sink, SMTPServer, free_port, self_signed_cert

from newsletter import environment
from newsletter.errors import DeliveryError
from newsletter.mail import lane
from newsletter.mail import pool as pool_module
from newsletter.mail.message import Headers, Letter, Stationery, build_message, seal
from newsletter.mail.pool import RAMP, Job, Pool, PoolSettings, RateLimiter, transport
from newsletter.mail.transports import Outbox, Smtp, SmtpSettings

SENDER = Address("Paper Digest", "digest", "example.org")
NO_DOTENV = Path("/nonexistent")


def message(to: Address | None = None, mailto: str | None = None) -> EmailMessage:
    headers = Headers(
        to or Address("Ada", "ada", "example.org"),
        "Paper digest · 25 Nov 2026 · 2 new papers",
        "https://news.example.org/unsubscribe/tok",
        "Paper digest <digest.example.org>",
        mailto,
    )
    return build_message(SENDER, headers, "plain body\n", "<p>html body</p>")


def letter(user: str = "ada") -> Letter:
    return seal(message(Address(user.title(), user, "example.org")))


def env_for(server: SMTPServer, **extra: str) -> SmtpSettings:
    """The SMTP settings a deployment pointed at this server (plus `extra` variables) would have."""
    settings = environment.load({**server.env(), **extra}, dotenv=NO_DOTENV).smtp
    assert settings is not None
    return settings


def test_message_has_the_headers_and_parts_mail_clients_expect() -> None:
    msg = message()
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Auto-Submitted", "Precedence"):
        assert len(msg.get_all(name, [])) == 1, name
    assert msg["Message-ID"].endswith("@example.org>")
    assert msg["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/tok>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Precedence"] == "bulk"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_a_configured_mailto_follows_the_https_link() -> None:
    assert (
        message(mailto="leave@example.org")["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/tok>, <mailto:leave@example.org?subject=unsubscribe>"
    )


def test_a_newline_in_a_name_cannot_add_headers() -> None:
    with pytest.raises(ValueError):
        message(Address("Ada\r\nBcc: victim@example.org", "ada", "example.org"))


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


TEXT_BODY = "Hello __NAME__ (__EMAIL__), grüße.\n.\nFrom here on\nLeave: https://news.example.org/u/__TOKEN__\n"
HTML_BODY = (
    '<p>Hello __HNAME__ &amp; <b>é</b></p>\n<a href="https://news.example.org/u/__TOKEN__">leave</a> <a href="https://news.example.org/p/__TOKEN__">prefs</a>\n'
)
PLACEHOLDERS = ("__NAME__", "__HNAME__", "__EMAIL__", "__TOKEN__")
LONG_TOKEN = "InJlYWRlcjAwMDAwQGV4YW1wbGUub3JnIg.awckJA.p9vOk4G7fRwy_o0vHKyeJqx-fPA" * 3


def filled(content: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        content = content.replace(placeholder, value)
    return content


def same_message(stationery: Stationery, headers: Headers, values: dict[str, str], text: str = TEXT_BODY, html: str = HTML_BODY) -> EmailMessage:
    """The stationery's letter parses to what build_message makes of the filled-in bodies; returns the letter."""
    sealed = stationery.letter(headers, values)
    ours = parse(sealed.data)
    whole = parse(seal(build_message(SENDER, headers, filled(text, values), filled(html, values), stationery.date)).data)
    assert sorted(ours.keys()) == sorted(whole.keys())
    for name in set(whole.keys()) - {"Message-ID", "Content-Type"}:  # both differ per message: a fresh id and MIME boundary
        assert ours.get_all(name) == whole.get_all(name), name
    assert ours["Message-ID"] == sealed.message_id != whole["Message-ID"] and ours["Message-ID"].endswith("@example.org>")
    assert ours.get_content_type() == whole.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        assert ours.get_body((kind,)).get_content() == whole.get_body((kind,)).get_content(), kind  # type: ignore[union-attr]
    assert b"__" not in sealed.data, "every placeholder is filled in"
    assert b"\r\n" in sealed.data and b"\n" not in sealed.data.replace(b"\r\n", b"")
    return ours


@pytest.mark.parametrize(
    ("name", "email", "token"),
    [
        ("Ada Lovelace", "ada@example.org", "tok"),
        ("Ådá Łovelace 李", "ada@example.org", "tok"),  # non-ASCII: an encoded-word in To, UTF-8 in the bodies
        ('Lovelace, Ada "Countess"', "ada@example.org", "tok"),  # quotes and a comma: quoted in To, escaped in HTML
        ("Ada", "ada@example.org", LONG_TOKEN),
    ],
)
def test_stationery_fills_in_the_same_message_build_message_makes(name: str, email: str, token: str) -> None:
    local, _, domain = email.partition("@")
    url = f"https://news.example.org/unsubscribe/{token}"
    headers = Headers(Address(name, local, domain), "Digest · é", url, "Paper digest <digest.example.org>", "leave@example.org")
    stationery = Stationery(SENDER, headers.subject, headers.list_id, TEXT_BODY, HTML_BODY, PLACEHOLDERS)
    values = {"__NAME__": name, "__HNAME__": str(escape(name)), "__EMAIL__": email, "__TOKEN__": token}
    ours = same_message(stationery, headers, values)
    assert ours["To"].addresses[0].display_name == name
    assert f"/u/{token}" in ours.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def body_lines(data: bytes) -> list[bytes]:
    """The lines of a message after its header block (headers may run to 998; body lines may not pass 76)."""
    return data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")


def test_every_body_line_is_quoted_printable_of_at_most_76_whatever_the_values() -> None:
    """Signed bodies are 7bit (RFC 6376 §5.3) and quoted-printable lines stay within RFC 2045's 76 (#15);
    before, filled lines ran 8bit up to 998, and the quoted-printable fallback to 533."""
    text = "x" * 900 + " __TOKEN__\nshort __NAME__\n__NAME____EMAIL__ trailing space __NAME__ \n.\n" + "ü" * 40 + "__NAME__\n"
    html = "<p>" + "é" * 600 + "__HNAME__</p>\n" + "=" * 74 + "__HNAME__" + "a=b " * 30 + "__TOKEN__"
    headers = Headers(Address("Ådá", "ada", "example.org"), "s", "https://x/u/t", "l <l.example.org>")
    stationery = Stationery(SENDER, "s", "l <l.example.org>", text, html, PLACEHOLDERS)
    names = ["", "Ada", "Ådá Łovelace 李 " * 6, "= =3D =\t", "x" * 75, "x" * 74 + "é", "ends with space "]
    for name in names:
        for token in ("t", "t" * 97, LONG_TOKEN):
            values = {"__NAME__": name, "__HNAME__": str(escape(name)), "__EMAIL__": "ada@example.org", "__TOKEN__": token}
            data = stationery.letter(headers, values).data
            assert data.isascii()
            assert max(map(len, body_lines(data))) <= 76, (name, token)
            assert not any(line.endswith((b" ", b"\t")) for line in body_lines(data)), "trailing whitespace is encoded"
            ours = same_message(stationery, headers, values, text=text, html=html)
            for part in ours.iter_parts():
                assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_build_message_writes_quoted_printable_within_76_too() -> None:
    headers = Headers(Address("Ada", "ada", "example.org"), "s", "https://x/u/t", "l <l.example.org>")
    data = seal(build_message(SENDER, headers, "é" * 600 + "\n", "<p>" + "a=b " * 300 + "</p>\n")).data
    assert data.isascii() and max(map(len, body_lines(data))) <= 76


def test_a_readers_value_cannot_add_lines() -> None:
    headers = Headers(Address("Ada", "ada", "example.org"), "s", "https://x/u/t", "l <l.example.org>")
    stationery = Stationery(SENDER, "s", "l <l.example.org>", TEXT_BODY, HTML_BODY, PLACEHOLDERS)
    for bad in ("Ada\r\nBcc: victim@example.org", "Ada\n--boundary"):
        with pytest.raises(ValueError):
            stationery.letter(headers, {"__NAME__": bad, "__HNAME__": "Ada", "__EMAIL__": "a@x", "__TOKEN__": "t"})


def stationery_letter(headers: Headers) -> Letter:
    stationery = Stationery(SENDER, "s", "l <l.example.org>", "t __NAME__\n", "<p>h</p>", ("__NAME__",))
    return stationery.letter(headers, {"__NAME__": "Ada"})


def test_a_long_unsubscribe_link_stays_a_readable_url_on_the_wire() -> None:
    url = "https://news.example.org/unsubscribe/" + "InJlYWRlcjAwMDAwQGV4YW1wbGUub3JnIg.awckJA.p9vOk4G7fRwy_o0vHKyeJqx-fPA" * 2
    headers = Headers(Address("Ada", "ada", "example.org"), "s", url, "l <l.example.org>", "leave@example.org")
    for sealed in (seal(build_message(SENDER, headers, "t\n", "<p>h</p>")), stationery_letter(headers)):
        assert f"List-Unsubscribe: <{url}>, <mailto:leave@example.org?subject=unsubscribe>\r\n".encode() in sealed.data
        assert b"=?utf-8?" not in sealed.data


def test_stationery_refuses_a_newline_in_a_readers_header_too() -> None:
    headers = Headers(Address("Ada", "ada", "example.org"), "s", "https://x/u\r\nBcc: victim@example.org", "l <l.example.org>")
    with pytest.raises(ValueError):
        stationery_letter(headers)


def test_a_sealed_letter_uses_crlf_and_carries_the_envelope() -> None:
    sealed = letter()
    assert (sealed.sender, sealed.recipient) == ("digest@example.org", "ada@example.org")
    assert b"\r\n" in sealed.data and b"\n" not in sealed.data.replace(b"\r\n", b"")


def test_outbox_writes_one_parseable_eml_per_message(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "out")
    outbox.send(letter())
    outbox.send(letter())
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == 2 and not list((tmp_path / "out").glob(".tmp-*"))
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "Ada <ada@example.org>"


def test_smtp_delivers_and_reuses_one_connection() -> None:
    with SMTPServer() as server:
        smtp = Smtp(env_for(server))
        smtp.send(letter())
        first = smtp._conn
        smtp.send(letter("bob"))
        assert smtp._conn is first
        smtp.close()
    assert [m["To"] for m in server.messages] == ["Ada <ada@example.org>", "Bob <bob@example.org>"]


def test_lines_starting_with_a_dot_arrive_as_they_were_sent() -> None:
    """DATA doubles a line's leading dot (RFC 5321 4.5.2) and the server takes it off again: a line of only "." in a
    message does not end it early, and a message whose first byte is a dot keeps it too."""
    letters = [seal(message()), Letter("digest@example.org", "bob@example.org", "<x@example.org>", b".first line\r\n\r\n.\r\n..two\r\nend")]
    sent = letters[0].data.replace(b"plain body", b".\r\n.plain body\r\n..")
    letters[0] = Letter(letters[0].sender, letters[0].recipient, letters[0].message_id, sent)
    with SMTPServer(Sink(raw=True)) as server:
        smtp = Smtp(env_for(server))
        for one in letters:
            smtp.send(one)
        smtp.close()
    assert server.sink.received == [sent, letters[1].data + b"\r\n"]  # the server ends a message with a line end


def test_a_connection_dropped_between_messages_is_replaced_without_losing_the_message() -> None:
    with SMTPServer(Sink(drop_every=2)) as server:
        smtp = Smtp(env_for(server))
        for user in ("ada", "bob", "cy", "dan", "eve"):
            assert smtp.send(letter(user)).startswith("250")
        smtp.close()
    assert server.sink.recipients() == ["ada@example.org", "bob@example.org", "cy@example.org", "dan@example.org", "eve@example.org"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one by one"])
@pytest.mark.parametrize(("reply", "temporary"), [("451 4.7.1 Try again later", True), ("550 5.1.1 No such user", False)])
def test_refusals_say_whether_to_retry(reply: str, temporary: bool, pipelining: bool) -> None:
    """With PIPELINING (RFC 2920) MAIL, RCPT and DATA go in one write: the refused RCPT is the answer (not DATA's
    "need RCPT" that follows it), and the session goes on; without it, each command waits for its reply."""
    with SMTPServer(Sink(reply=lambda rcpt: reply if rcpt.startswith("ada@") else None, pipelining=pipelining)) as server:
        smtp = Smtp(env_for(server))
        assert smtp.send(letter("cy")).startswith("250")
        assert smtp._conn is not None and smtp._conn.has_extn("pipelining") is pipelining
        with pytest.raises(DeliveryError) as info:
            smtp.send(letter())
        smtp.send(letter("bob"))
        smtp.close()
    assert info.value.temporary is temporary and info.value.server is False
    assert info.value.reply.startswith(reply[:3]) and "RCPT" not in info.value.reply
    assert server.sink.recipients() == ["cy@example.org", "bob@example.org"], "the session goes on after a refused recipient"


def test_starttls_is_never_dropped_to_plaintext() -> None:
    with SMTPServer() as server, pytest.raises(DeliveryError, match="STARTTLS") as info:
        Smtp(env_for(server, SMTP_SECURITY="starttls")).send(letter())
    assert info.value.temporary is False and info.value.server is True
    assert server.messages == []


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_an_untrusted_certificate_is_refused_unless_explicitly_allowed(tmp_path: Path, security: str) -> None:
    with SMTPServer(tls=security, cert=self_signed_cert(tmp_path)) as server:
        with pytest.raises(DeliveryError, match="certificate") as info:
            Smtp(env_for(server)).send(letter())
        assert info.value.temporary is False and info.value.server is True
        assert server.messages == []
        smtp = Smtp(env_for(server, SMTP_TLS_VERIFY="false"))
        assert smtp.send(letter()).startswith("250")
        smtp.close()
    assert server.sink.recipients() == ["ada@example.org"]


def test_unreachable_server_is_a_temporary_server_failure() -> None:
    settings = SmtpSettings("127.0.0.1", free_port(), "none")
    with pytest.raises(DeliveryError) as info:
        Smtp(settings).send(letter())
    assert info.value.temporary is True and info.value.server is True


def test_rate_limiter_spaces_messages_evenly() -> None:
    clock = [100.0]
    limiter = RateLimiter(4.0, clock=lambda: clock[0])
    assert [limiter.slot() for _ in range(5)] == [100.0, 100.25, 100.5, 100.75, 101.0], "the first goes at once, then one every 1/4 s"
    clock[0] = 200.0
    assert limiter.slot() == 200.0, "an idle limiter does not make the next message wait"
    assert RateLimiter(None, clock=lambda: clock[0]).slot() == 200.0, "no rate: every message goes at once"


def test_pool_sends_over_several_connections_under_the_rate() -> None:
    with SMTPServer() as server:
        env = env_for(server)
        pool = Pool(lambda: Smtp(env), size=3, rate=50.0)
        started = time.monotonic()
        users = [f"user{i}" for i in range(20)]
        for user in users:
            pool.put(Job(user, letter(user)))
        results = [pool.get(5) for _ in users]
        elapsed = time.monotonic() - started
        pool.close()
    assert all(r is not None and r.error is None for r in results)
    assert sorted(server.sink.recipients()) == sorted(f"{u}@example.org" for u in users)
    assert elapsed >= 19 / 50, "20 messages at 50/s take at least 0.38 s"


def lane_processes() -> list[int]:
    """The pids of this process's running lane processes (`python -m newsletter.mail.lane`)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"newsletter.mail.lane" in command:
            pids.append(int(stat.parent.name))
    return pids


def test_smtp_connections_run_in_processes_of_their_own_under_the_rate(tmp_path: Path) -> None:
    """A few dozen messages go over a thread (a process takes as long to start as a hundred messages take); a long
    send goes on over processes, one more as each running one has answered RAMP messages, up to one per connection,
    and the thread's connection ends before the first process opens one."""
    with SMTPServer() as server:
        pool = transport(env_for(server), tmp_path / "outbox", PoolSettings(connections=3, rate=200.0), None)
        started = time.monotonic()
        count = 4 * RAMP
        users = iter(f"user{i}" for i in range(count))
        results, running = [], []
        for _ in range(count // 4):  # bursts that keep every lane busy, the courier's way: hand out, then take the answers
            for user in itertools.islice(users, 4):
                pool.put(Job(user, letter(user)))
            running.append(len(lane_processes()))
            results += [pool.get(10) for _ in range(4)]
        elapsed = time.monotonic() - started
        pool.close()
        assert lane_processes() == [], "closing the pool ends its processes"
    assert running[: RAMP // 4] == [0] * (RAMP // 4), "the first RAMP messages over a thread"
    assert max(running) == running[-1] == 3, "then one process per connection, never more"
    assert server.sink.most_sessions == 3 and server.sink.sessions == 0, "never more connections than SMTP_CONNECTIONS"
    assert all(r is not None and r.error is None for r in results)
    assert sorted(server.sink.recipients()) == sorted(f"user{i}@example.org" for i in range(count))
    assert elapsed >= (count - 1) / 200, "at 200 messages a second over three processes, still no faster"


def drafts(count: int, stationeries: int) -> list[tuple[Job, bytes]]:
    """`count` readers' drafts cycling over `stationeries` different messages, each with the bytes it must arrive as."""
    made = [Stationery(SENDER, f"Digest {i}", "Paper digest <digest.example.org>", TEXT_BODY, HTML_BODY, PLACEHOLDERS) for i in range(stationeries)]
    jobs = []
    for n in range(count):
        stationery = made[n % stationeries]
        to = Address(f"Reader {n}", f"reader{n}", "example.org")
        draft = stationery.draft(f"key-{n % stationeries}", Headers(to, "x", f"https://news.example.org/u/{n}", "l"), dict.fromkeys(PLACEHOLDERS, f"v{n}"))
        jobs.append((Job(draft.recipient, draft, stationery), stationery.fill(draft).data))
    return jobs


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_drafts_are_filled_in_the_lanes_from_the_stationery_each_got_once(tmp_path: Path, processes: bool) -> None:
    """A lane keeps the stationeries it was sent and the pool keeps the same record of each lane, so a draft travels
    alone once its lane has the stationery; more stationeries than a lane keeps still arrive right (the least
    recently used goes on both sides alike)."""
    jobs = drafts(lane.KEPT + 40, lane.KEPT + 20)
    jobs += jobs[:60]  # the first ones again: some still kept, some gone since
    with SMTPServer() as server:
        pool = (
            transport(env_for(server), tmp_path / "outbox", PoolSettings(connections=2), None) if processes else Pool(partial(Smtp, env_for(server)), 2, None)
        )
        for job, _ in jobs:
            pool.put(job)
        results = [pool.get(10) for _ in jobs]
        pool.close()
        arrived = {m["To"].addresses[0].addr_spec: m for m in server.sink.messages}
    assert all(r is not None and r.error is None for r in results) and len(results) == len(jobs)
    for job, data in jobs:
        assert arrived[job.letter.recipient].get_payload()[0].get_content() == parse(data).get_payload()[0].get_content()


def test_a_lane_killed_while_sending_answers_uncertain_and_the_next_message_gets_a_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server has the message when its sending process dies: uncertain, never silently lost or plainly retried."""
    monkeypatch.setattr(pool_module, "RAMP", 0)  # processes from the first message
    with SMTPServer() as server:
        server.sink.on_data = lambda msg: [os.kill(pid, signal.SIGKILL) for pid in lane_processes()]
        pool = transport(env_for(server), tmp_path / "outbox", PoolSettings(connections=1), None)
        pool.put(Job("ada", letter("ada")))
        result = pool.get(10)
        server.sink.on_data = None
        pool.put(Job("bob", letter("bob")))
        after = pool.get(10)
        pool.close()
    assert result is not None and result.error is not None
    assert result.error.uncertain and result.error.temporary
    assert "the sending process ended while it had the message" in result.reply
    assert after is not None and after.error is None, "a fresh process takes the next message"
    assert server.sink.recipients() == ["ada@example.org", "bob@example.org"]


def test_ctrl_c_and_sigterm_leave_the_lanes_to_the_send_that_started_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal's Ctrl-C and systemd's SIGTERM reach the whole process group: the send decides when to stop, and
    its lanes finish the messages they have."""
    monkeypatch.setattr(pool_module, "RAMP", 0)
    with SMTPServer() as server:
        pool = transport(env_for(server), tmp_path / "outbox", PoolSettings(connections=1), None)
        pool.put(Job("ada", letter("ada")))
        assert pool.get(10) is not None
        [pid] = lane_processes()
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        pool.put(Job("bob", letter("bob")))
        result = pool.get(10)
        pool.close()
    assert result is not None and result.error is None
    assert server.sink.recipients() == ["ada@example.org", "bob@example.org"]


@pytest.mark.timeout(20)  # the hang guard: before #15 a worker that could not build its transport died and get() waited forever
def test_a_worker_whose_transport_cannot_be_built_answers_every_job_with_a_server_error() -> None:
    def make() -> Smtp:
        raise FileNotFoundError("dkim.pem")

    pool = Pool(make, size=2, rate=None)
    users = [f"user{i}" for i in range(5)]
    for user in users:
        pool.put(Job(user, letter(user)))
    results = [pool.get(10) for _ in users]
    pool.close()
    assert sorted(str(r.job.tag) for r in results if r is not None) == sorted(users), "every job is answered"
    for result in results:
        assert result is not None and result.error is not None
        assert result.error.server and not result.error.temporary
        assert "cannot set up the connection: FileNotFoundError" in result.reply
