"""A real Dovecot IMAP server on 127.0.0.1 with its own config in a temporary folder (Debian's dovecot-imapd)."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from support.smtpserver import free_port, self_signed_cert

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-test-password"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = {ssl}
{certs}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""


def available() -> bool:
    return Path(DOVECOT).is_file() and os.geteuid() == 0


class ImapServer:
    """Dovecot in the foreground, on a free plain port and a free TLS port (a self-signed certificate), one user, in a folder of its own."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: that is root's alone (0700), and the mail processes run as nobody.
        self.root = root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
        self.port, self.tls_port = free_port(), free_port()
        owner = pwd.getpwnam("nobody")
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("mail", "home"):
            os.chown(root / sub, owner.pw_uid, owner.pw_gid)
        os.chmod(root, 0o755)
        cert, key = self_signed_cert(root)
        certs = f"ssl_cert = <{cert}\nssl_key = <{key}"
        (root / "dovecot.conf").write_text(
            CONFIG.format(
                root=root, ssl="yes", certs=certs, password=PASSWORD, uid=owner.pw_uid, gid=owner.pw_gid, imap_port=self.port, imaps_port=self.tls_port
            ),
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def env(self, tls: bool = False) -> dict[str, str]:
        """Environment variables that point the daemon at this mailbox."""
        return {
            "INBOUND_IMAP_HOST": "127.0.0.1",
            "INBOUND_IMAP_PORT": str(self.tls_port if tls else self.port),
            "INBOUND_IMAP_USER": USER,
            "INBOUND_IMAP_PASSWORD": PASSWORD,
            "INBOUND_IMAP_TLS": "true" if tls else "false",
            "INBOUND_IMAP_TLS_VERIFY": "false",
        }

    def client(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(USER, PASSWORD)
        return conn

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        conn = self.client()
        try:
            for data in messages:
                typ, answer = conn.append(folder, "", imaplib.Time2Internaldate(time.time()), data)
                assert typ == "OK", answer
        finally:
            conn.logout()

    def count(self, folder: str) -> int:
        conn = self.client()
        try:
            typ, data = conn.select(f'"{folder}"', readonly=True)
            return int(data[0] or 0) if typ == "OK" else -1
        finally:
            conn.logout()

    def __enter__(self) -> ImapServer:
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "dovecot.log").read_text(errors="replace") if (self.root / "dovecot.log").exists() else ""
                raise RuntimeError(f"dovecot exited: {self.process.stderr.read().decode(errors='replace') if self.process.stderr else ''}{log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dovecot did not start listening within 20 s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
