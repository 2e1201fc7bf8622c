"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what arrives and can refuse recipients on cue."""

from __future__ import annotations

import contextlib
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    """aiosmtpd cannot bind port 0 (aio-libs/aiosmtpd#388), so ask the OS for a free one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def greylisting(reply: str = "451 4.7.1 greylisted, try again later") -> Callable[[str], str | None]:
    """A `Sink.reply` that refuses each address's first RCPT and accepts every later one, as greylisting servers do."""
    seen: set[str] = set()  # handlers run on the server's one event loop thread

    def answer(rcpt: str) -> str | None:
        if rcpt.lower() in seen:
            return None
        seen.add(rcpt.lower())
        return reply

    return answer


def drop_once(who: set[str]) -> Callable[[str], bool]:
    """A `Sink.drop_after_data` that hangs up after the final dot of each listed address's first message only."""
    dropped: set[str] = set()

    def drop(rcpt: str) -> bool:
        if rcpt.lower() not in who or rcpt.lower() in dropped:
            return False
        dropped.add(rcpt.lower())
        return True

    return drop


@dataclass
class Sink:
    """aiosmtpd handler: keeps every accepted message; `reply` may answer a recipient with an SMTP error line."""

    messages: list[EmailMessage] = field(default_factory=list)
    reply: Callable[[str], str | None] = lambda rcpt: None
    drop_every: int | None = None  # close the connection at the MAIL after this many messages on it
    raw: bool = False  # keep the bytes exactly as received (for DKIM checks)
    eight_bit: bool = True  # announce 8BITMIME (RFC 6152), as nearly every server does
    pipelining: bool = True  # announce PIPELINING (RFC 2920), as Postfix does; aiosmtpd takes pipelined commands but does not say so
    mail_options: list[list[str]] = field(default_factory=list)  # of each MAIL FROM
    received: list[bytes] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)  # each kept message's envelope sender (MAIL FROM), in arrival order
    on_data: Callable[[EmailMessage], None] | None = None  # called with each message as it is kept, before the server replies
    drop_after_data: Callable[[str], bool] = lambda rcpt: False  # True: keep the message, then hang up instead of replying to the final dot
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0  # greeted (EHLO) and not yet said QUIT
    most_sessions: int = 0  # the most there were at once

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.sessions += 1
            self.most_sessions = max(self.most_sessions, self.sessions)
        kept = [r for r in responses if self.eight_bit or r != "250-8BITMIME"]
        return [kept[0], "250-PIPELINING", *kept[1:]] if self.pipelining else kept

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.sessions -= 1
        return "221 Bye"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]) -> str:
        with self.lock:
            self.mail_options.append(list(mail_options))
        if self.drop_every is not None and getattr(session, "accepted", 0) >= self.drop_every:
            server.transport.close()
            return "421 4.3.2 closing connection"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        answer = self.reply(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        session.accepted = getattr(session, "accepted", 0) + 1
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
            self.senders.append(envelope.mail_from)
            if self.raw:
                self.received.append(envelope.original_content)
        if self.on_data is not None:
            self.on_data(msg)
        if any(self.drop_after_data(rcpt) for rcpt in envelope.rcpt_tos):  # the server has it, but the client never hears so
            server.transport.abort()
            return "250 never sent: the connection is gone"
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def recipients(self) -> list[str]:
        """The To address of every accepted message, in arrival order."""
        with self.lock:
            return [m["To"].addresses[0].addr_spec.lower() for m in self.messages]

    def to(self, address: str) -> list[EmailMessage]:
        """Messages whose To header names this address."""
        return [m for m in self.messages if m["To"].addresses[0].addr_spec.lower() == address.lower()]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 that no trust store knows: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class SMTPServer:
    """Context manager running a Sink on a free loopback port; `tls` = "starttls" or "ssl" with a (cert, key) pair."""

    def __init__(self, sink: Sink | None = None, tls: str | None = None, cert: tuple[Path, Path] | None = None) -> None:
        self.sink = sink or Sink()
        self.port = free_port()
        self.tls = tls
        options: dict[str, Any] = {}
        if tls:
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            options = {"tls_context": context, "require_starttls": True} if tls == "starttls" else {"ssl_context": context}
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **options)

    @property
    def messages(self) -> list[EmailMessage]:
        return self.sink.messages

    def env(self) -> dict[str, str]:
        """Environment variables that point newsletter at this server, plaintext (it is loopback)."""
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_SECURITY": self.tls or "none"}

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.controller.stop()


class RefusingSMTPServer:
    """A loopback port that answers every session's greeting with one line (421 by default) and hangs up,
    as a server that is up but refusing mail does; `sessions` counts the connections it answered."""

    def __init__(self, greeting: bytes = b"421 4.3.2 service not available, closing channel\r\n") -> None:
        self.greeting = greeting
        self.sessions = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                with self._lock:
                    self.sessions += 1
                with contextlib.suppress(OSError):  # the client may hang up first
                    conn.sendall(self.greeting)

    def count(self) -> int:
        with self._lock:
            return self.sessions

    def __enter__(self) -> RefusingSMTPServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()
