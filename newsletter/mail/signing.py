"""DKIM signing with a key read once; the signature covers both List-Unsubscribe headers (RFC 8058)."""

from __future__ import annotations

import dkim

from newsletter.environment import Env

# Headers the DKIM signature covers; RFC 8058 §4 asks for both List-Unsubscribe headers, which dkimpy leaves out by default.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip


class Signer:
    """DKIM signing with a key read once; the signature covers both List-Unsubscribe headers."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode()
        self.domain = domain.encode()
        self.private_key = private_key

    @classmethod
    def from_env(cls, env: Env) -> Signer | None:
        """The configured signer, or None when DKIM_* are unset."""
        if not (env.dkim_selector and env.dkim_domain and env.dkim_private_key_path):
            return None
        return cls(env.dkim_selector, env.dkim_domain, env.dkim_private_key_path.read_bytes())

    def sign(self, data: bytes) -> bytes:
        signature: bytes = dkim.sign(data, self.selector, self.domain, self.private_key, include_headers=list(SIGNED_HEADERS))
        return signature + data
