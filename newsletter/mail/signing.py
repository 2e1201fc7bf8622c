"""DKIM signing with a key read once; the signature covers both List-Unsubscribe headers (RFC 8058)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dkim

# Headers the DKIM signature covers; RFC 8058 §4 asks for both List-Unsubscribe headers, which dkimpy leaves out by default.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip


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
        return cls(settings.selector, settings.domain, settings.private_key_path.read_bytes())

    def sign(self, data: bytes) -> bytes:
        signature: bytes = dkim.sign(data, self.selector, self.domain, self.private_key, include_headers=list(SIGNED_HEADERS))
        return signature + data
