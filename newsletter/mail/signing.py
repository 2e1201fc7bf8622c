"""DKIM signing with a key read once; the signature covers both List-Unsubscribe headers (RFC 8058), over-signed."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dkim

from newsletter.errors import EnvError

# Headers the DKIM signature covers; RFC 8058 §4 asks for both List-Unsubscribe headers, which dkimpy leaves out by default.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip

# Headers listed in h= once more than the message has them (RFC 6376 §8.15, "over-signing"): a verifier then
# counts the missing extra instance as signed-empty, so a From, Subject or unsubscribe link prepended on the way
# breaks the signature instead of being what the reader's client shows (it shows the topmost).
OVERSIGNED = (b"from", b"subject", b"list-unsubscribe", b"list-unsubscribe-post")

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)


@dataclass(frozen=True)
class DkimSettings:
    """Which key signs, under which selector of which domain (DKIM_SELECTOR, DKIM_DOMAIN, DKIM_PRIVATE_KEY_PATH)."""

    selector: str
    domain: str
    private_key_path: Path


class Signer:
    """DKIM signing with a key read once; the signature covers both List-Unsubscribe headers."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode()
        self.domain = domain.encode()
        self.private_key = private_key

    @classmethod
    def from_settings(cls, settings: DkimSettings | None) -> Signer | None:
        """The signer these settings describe, its key read now; None when there are none (no DKIM)."""
        if settings is None:
            return None
        try:
            key = settings.private_key_path.read_bytes()
        except OSError as exc:
            raise EnvError(f"DKIM_PRIVATE_KEY_PATH {settings.private_key_path}: {exc.strerror or exc}") from None
        return cls(settings.selector, settings.domain, key)

    def sign(self, data: bytes) -> bytes:
        signature: bytes = dkim.sign(data, self.selector, self.domain, self.private_key, include_headers=signed_headers(data))
        return signature + data


def signed_headers(data: bytes) -> list[bytes]:
    """h= for this message: SIGNED_HEADERS, with each of OVERSIGNED once more than the message carries it."""
    head = data.split(b"\r\n\r\n", 1)[0]
    counts = Counter(name.lower() for name in _HEADER_NAME.findall(head))
    return [*SIGNED_HEADERS, *(name for name in OVERSIGNED for _ in range(counts[name]))]
