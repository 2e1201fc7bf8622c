"""Mail addresses in one spelling: an internationalised domain as IDNA (punycode), which every SMTP server takes."""

from __future__ import annotations

import idna

LOCAL_PART_NOT_ASCII = (
    "has characters beyond ASCII before the @; such addresses need SMTPUTF8 mail, which the newsletter does not send. Please use another address"
)


def ascii_address(email: str) -> str:
    """`user@bücher.de` as `user@xn--bcher-kva.de`, the domain lowercased; an ASCII address comes back as it was.

    Raises ValueError when the domain is not a valid internationalised name."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at or domain.isascii():
        return email
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError as exc:
        raise ValueError(f"the domain {domain!r} is not a valid internationalised domain name ({exc})") from None


def same_address(a: str, b: str) -> bool:
    """The same mailbox as far as the newsletter cares: case-insensitive, Unicode and punycode domains alike."""
    return address_key(a) == address_key(b)


def address_key(email: str) -> str:
    """What `same_address` compares, so addresses can be looked up in a dict: the ASCII form lowercased
    (an invalid domain as written, lowercased)."""
    try:
        return ascii_address(email).lower()
    except ValueError:
        return email.strip().lower()
