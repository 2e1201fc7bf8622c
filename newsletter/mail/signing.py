"""DKIM signing with a key read once; the signature covers both List-Unsubscribe headers (RFC 8058), over-signed.

Canonicalisation is relaxed headers, simple body (dkimpy's default, as it always was): `relaxed_headers` makes the
header block's canonical form as dkimpy would, dkimpy selects, hashes and folds the header fields; the RSA
step is OpenSSL's through `cryptography` (about 0.5 ms a message, where dkimpy's own pure-Python RSA took 12-14 ms,
and with the GIL released), and only the header block is parsed, since the simple body is hashed as it is.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from newsletter.errors import EnvError
from newsletter.mail.message import seven_bit

# Headers the DKIM signature covers; RFC 8058 §4 asks for both List-Unsubscribe headers, which dkimpy leaves out by default.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip

# Headers listed in h= once more than the message has them (RFC 6376 §8.15, "over-signing"): a verifier then
# counts the missing extra instance as signed-empty, so a From, Subject or unsubscribe link prepended on the way
# breaks the signature instead of being what the reader's client shows (it shows the topmost).
OVERSIGNED = (b"from", b"subject", b"list-unsubscribe", b"list-unsubscribe-post")

_WSP = re.compile(rb"[\t ]+")
_CANON = CanonicalizationPolicy.from_c_value(b"relaxed/simple")  # dkimpy's default, and what it signed with before
_FIELD = b"DKIM-Signature"


@dataclass(frozen=True)
class DkimSettings:
    """Which key signs, under which selector of which domain (DKIM_SELECTOR, DKIM_DOMAIN, DKIM_PRIVATE_KEY_PATH)."""

    selector: str
    domain: str
    private_key_path: Path


class Signer:
    """DKIM signing with a key read once; the signature covers both List-Unsubscribe headers. Safe to share between threads."""

    def __init__(self, selector: str, domain: str, private_key: rsa.RSAPrivateKey) -> None:
        self.selector = selector.encode()
        self.domain = domain.encode()
        self.private_key = private_key

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled with its key (DER), for the sending processes: read and checked once, by the process that starts them."""
        der = self.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return (_from_der, (self.selector.decode(), self.domain.decode(), der))

    @classmethod
    def from_settings(cls, settings: DkimSettings | None) -> Signer | None:
        """The signer these settings describe, its key read now; None when there are none (no DKIM)."""
        if settings is None:
            return None
        where = f"DKIM_PRIVATE_KEY_PATH {settings.private_key_path}"
        try:
            key = serialization.load_pem_private_key(settings.private_key_path.read_bytes(), password=None)
        except OSError as exc:
            raise EnvError(f"{where}: {exc.strerror or exc}") from None
        except (ValueError, TypeError) as exc:  # not PEM, encrypted, or a format OpenSSL does not read
            raise EnvError(f"{where}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise EnvError(f"{where}: a {type(key).__name__.removeprefix('_')} key; DKIM signs with RSA (rsa-sha256)")
        return cls(settings.selector, settings.domain, key)

    def sign(self, data: bytes) -> bytes:
        """The message (CRLF line ends) with its DKIM-Signature on top. An 8bit message is re-encoded 7bit first
        (RFC 6376 §5.3), so no later hop without 8BITMIME has to change the signed body."""
        if not data.isascii():
            data = seven_bit(data)
        head, _, body = data.partition(b"\r\n\r\n")
        present = _by_name(relaxed_headers(head))
        include = _included(present)
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", _CANON.to_c_value()),
            (b"d", self.domain),
            (b"i", b"@" + self.domain),
            (b"q", b"dns/txt"),
            (b"s", self.selector),
            (b"t", str(int(time.time())).encode()),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(hashlib.sha256(_CANON.canonicalize_body(body)).digest())),
            (b"b", b"0" * 60),  # as dkimpy does: b= folds onto lines of its own, so filling it in moves no other tag
        ]
        unsigned = dkim.RE_BTAG.sub(rb"\1", dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_FIELD)))
        hasher = hashlib.sha256()
        for name in include:  # each name takes the lowest instance not taken yet (RFC 6376 §5.4.2); an over-signed one finds none
            if values := present.get(name):
                hasher.update(name + b":" + values.pop())
        hasher.update(b"dkim-signature:" + _WSP.sub(b" ", unsigned.replace(b"\r\n", b"")).strip())  # relaxed, without its CRLF (§3.7)
        signature = self.private_key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        header: bytes = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", namelen=len(_FIELD))
        return _FIELD + b": " + header + data


def _from_der(selector: str, domain: str, der: bytes) -> Signer:
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return Signer(selector, domain, key)


def relaxed_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header block's fields in relaxed canonical form (RFC 6376 §3.4.2), as dkimpy's rfc822_parse and relaxed
    canonicalize_headers make them: whitespace runs squeezed over the whole block at once (a field folded onto more
    lines once more), where dkimpy goes through `re`'s module functions line by line, five times as long."""
    fields: list[tuple[bytes, bytes]] = []
    for line in _WSP.sub(b" ", head).split(b"\r\n"):
        if line[:1] == b" " and fields:  # a folded field's next line (its tab or spaces now one space)
            name, value = fields[-1]
            fields[-1] = (name, _WSP.sub(b" ", value + line))
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return [(name.lower().rstrip(), value.strip() + b"\r\n") for name, value in fields]


def signed_headers(head: bytes) -> list[bytes]:
    """h= for a message with this header block: SIGNED_HEADERS, with each of OVERSIGNED once more than it carries it."""
    return _included(_by_name(relaxed_headers(head)))


def _by_name(fields: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """Each field name's canonical values, top to bottom."""
    present: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        present.setdefault(name, []).append(value)
    return present


def _included(present: dict[bytes, list[bytes]]) -> list[bytes]:
    return [*SIGNED_HEADERS, *(name for name in OVERSIGNED for _ in present.get(name, ()))]
