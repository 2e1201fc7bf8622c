"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what arrives and can refuse recipients on cue."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    """aiosmtpd cannot bind port 0 (aio-libs/aiosmtpd#388), so ask the OS for a free one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sink:
    """aiosmtpd handler: keeps every accepted message; `reply` may answer a recipient with an SMTP error line."""

    messages: list[EmailMessage] = field(default_factory=list)
    reply: Callable[[str], str | None] = lambda rcpt: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        answer = self.reply(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """Messages whose To header names this address."""
        return [m for m in self.messages if m["To"].addresses[0].addr_spec.lower() == address.lower()]


class SMTPServer:
    """Context manager running a Sink on a free loopback port."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink or Sink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[EmailMessage]:
        return self.sink.messages

    def env(self) -> dict[str, str]:
        """Environment variables that point newsletter at this server, plaintext (it is loopback)."""
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_SECURITY": "none"}

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.controller.stop()
