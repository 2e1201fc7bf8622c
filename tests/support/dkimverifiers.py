"""Independent DKIM verifiers, each given the public key instead of asking DNS: OpenDKIM's libopendkim (Debian
opendkim-tools brings it) and Mail::DKIM (Debian libmail-dkim-perl); .ci/run installs both when they are missing.

OpenDKIM is driven through its C API (ctypes) with its file query method (DKIM_QUERY_FILE: key records read from a
"name record" file), the DNS-less mode its own test suite uses. `opendkim-testmsg` would do the same from the
command line but cannot: in Debian 12's 2.11.0~beta2 it stops at "dkim_chunk(): Syntax error" on every message,
even when signing one itself. Mail::DKIM takes a resolver object, so the perl script hands it one that answers
the key's TXT query and nothing else.
"""

from __future__ import annotations

import base64
import ctypes
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# From OpenDKIM's dkim.h.
_SETOPT, _OPTS_QUERYMETHOD, _OPTS_QUERYINFO, _QUERY_FILE = 1, 6, 7, 1

MAIL_DKIM = r"""
use strict; use warnings;
use Mail::DKIM::Verifier; use Net::DNS;
package KeyOnly;
sub new { my ($class, $name, $txt) = @_; return bless { name => lc $name, txt => $txt }, $class }
sub send {
    my ($self, $name, $type) = @_;
    my $packet = Net::DNS::Packet->new($name, $type);
    $packet->header->qr(1);
    if (lc $name eq $self->{name} && $type eq 'TXT') {
        $packet->push(answer => Net::DNS::RR->new(name => $name, type => 'TXT', txtdata => [unpack('(A255)*', $self->{txt})]));
    } else {
        $packet->header->rcode('NXDOMAIN');
    }
    return $packet;
}
sub errorstring { 'NOERROR' }
package main;
Mail::DKIM::DNS::resolver(KeyOnly->new($ENV{DKIM_NAME}, $ENV{DKIM_TXT}));
binmode STDIN;
while (my $length = <STDIN>) {  # each message as its length in bytes on a line, then the bytes
    read(STDIN, my $message, $length) == $length or die "short read";
    my $dkim = Mail::DKIM::Verifier->new();
    $dkim->PRINT($message);
    $dkim->CLOSE;
    print $dkim->result_detail, "\n";
}
"""


@dataclass(frozen=True)
class DkimKey:
    """A fresh 2048-bit key for selector `news` of example.org, written as PEM, and the TXT record that publishes it."""

    path: Path
    txt: str
    name: str = "news._domainkey.example.org"

    @classmethod
    def make(cls, folder: Path) -> DkimKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = folder / "dkim.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(path, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode())

    @property
    def settings(self) -> dict[str, str]:
        """The .env lines that sign with this key."""
        return {"DKIM_SELECTOR": "news", "DKIM_DOMAIN": "example.org", "DKIM_PRIVATE_KEY_PATH": str(self.path)}

    def dns(self, name: bytes, timeout: int = 5) -> bytes:
        """dkimpy's `dnsfunc`: the record, for this key's name only."""
        assert name == self.name.encode() + b"."
        return self.txt.encode()

    def verdicts(self, *messages: bytes) -> list[dict[str, bool]]:
        """For each message, whether each independent verifier, and dkimpy, passes its signature."""
        import dkim

        perl = mail_dkim(list(messages), self.name, self.txt)
        return [
            {"opendkim": opendkim(message, self.name, self.txt).passed, "mail-dkim": by_perl.passed, "dkimpy": bool(dkim.verify(message, dnsfunc=self.dns))}
            for message, by_perl in zip(messages, perl, strict=True)
        ]


@dataclass(frozen=True)
class Verdict:
    """A verifier's word on a message: did its signature pass, and what the verifier said."""

    passed: bool
    said: str


def mail_dkim(messages: list[bytes], name: str, txt: str) -> list[Verdict]:
    """Mail::DKIM::Verifier on each message, with the key record `txt` published at `name` (selector._domainkey.domain);
    one perl for them all, since loading Mail::DKIM takes half a second."""
    feed = b"".join(b"%d\n%s" % (len(message), message) for message in messages)
    run = subprocess.run(["perl", "-e", MAIL_DKIM], input=feed, capture_output=True, env={**os.environ, "DKIM_NAME": name, "DKIM_TXT": txt}, check=True)
    return [Verdict(said == "pass", said) for said in run.stdout.decode().splitlines()]


def opendkim(message: bytes, name: str, txt: str) -> Verdict:
    """libopendkim's dkim_eom on `message` (CRLF line ends), the key record `txt` read from a file as published at `name`."""
    lib = _libopendkim()
    with tempfile.TemporaryDirectory(prefix="opendkim-") as tmp:
        keys = Path(tmp) / "keys"
        keys.write_text(f"{name} {txt}\n")
        handle = lib.dkim_init(None, None)
        try:
            method = ctypes.c_int(_QUERY_FILE)
            assert lib.dkim_options(handle, _SETOPT, _OPTS_QUERYMETHOD, ctypes.byref(method), ctypes.sizeof(method)) == 0
            path = ctypes.create_string_buffer(str(keys).encode())
            assert lib.dkim_options(handle, _SETOPT, _OPTS_QUERYINFO, path, len(path.value)) == 0
            status = ctypes.c_int(0)
            dkim = lib.dkim_verify(handle, b"newsletter-test", None, ctypes.byref(status))
            assert dkim, f"dkim_verify: {lib.dkim_getresultstr(status.value)!r}"
            try:
                head, _, body = message.partition(b"\r\n\r\n")
                steps = [lib.dkim_header(dkim, field, len(field)) for field in re.split(rb"\r\n(?![ \t])", head)]
                steps += [lib.dkim_eoh(dkim), lib.dkim_body(dkim, body, len(body))]
                result = lib.dkim_eom(dkim, None) if not any(steps) else next(s for s in steps if s)
                error = lib.dkim_geterror(dkim)
            finally:
                lib.dkim_free(dkim)
        finally:
            lib.dkim_close(handle)
    said = lib.dkim_getresultstr(result).decode() + (f": {error.decode()}" if error else "")
    return Verdict(result == 0, said)


def _libopendkim() -> ctypes.CDLL:
    """The C library with the prototypes of the calls used here (dkim.h)."""
    lib = ctypes.CDLL("libopendkim.so.11")
    p, i, s, z = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t
    for name, restype, argtypes in (
        ("dkim_init", p, [p, p]),
        ("dkim_close", None, [p]),
        ("dkim_options", i, [p, i, i, p, z]),
        ("dkim_verify", p, [p, s, p, ctypes.POINTER(i)]),
        ("dkim_header", i, [p, s, z]),
        ("dkim_eoh", i, [p]),
        ("dkim_body", i, [p, s, z]),
        ("dkim_eom", i, [p, p]),
        ("dkim_geterror", s, [p]),
        ("dkim_getresultstr", s, [i]),
        ("dkim_free", i, [p]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib
