"""A real Postfix on 127.0.0.1 with a private config in a temporary folder (Debian's postfix): a relay that passes
each domain's mail on to a local SMTP server of its own, and, when that server refuses a recipient, returns its
own DSN to the envelope sender, as any MTA between a sender and a reader does."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from support.smtpserver import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = /dev/stdout
myhostname = mx.postfix-test.invalid
mydomain = postfix-test.invalid
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relay_domains = {domains}
disable_dns_lookups = yes
smtp_host_lookup = native
transport_maps = texthash:{root}/conf/transport
notify_classes =
"""

SERVICES = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def available() -> bool:
    return Path(POSTFIX).is_file() and os.geteuid() == 0


class PostfixServer:
    """Postfix in the foreground, relaying mail for each domain in `routes` to that loopback port."""

    def __init__(self, routes: dict[str, int]) -> None:
        self.root = root = Path(tempfile.mkdtemp(prefix="newsletter-postfix-"))  # not under tmp_path: the postfix user must reach it
        os.chmod(root, 0o755)
        self.port = free_port()
        for sub in ("conf", "queue", "data"):
            (root / sub).mkdir()
        owner = pwd.getpwnam("postfix")
        os.chown(root / "data", owner.pw_uid, owner.pw_gid)
        (root / "conf" / "transport").write_text("".join(f"{d} smtp:[127.0.0.1]:{port}\n" for d, port in routes.items()), encoding="utf-8")
        (root / "conf" / "main.cf").write_text(MAIN.format(root=root, domains=" ".join(routes)), encoding="utf-8")
        (root / "conf" / "master.cf").write_text(SERVICES.format(port=self.port), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None
        self.out: BinaryIO | None = None

    def env(self) -> dict[str, str]:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_SECURITY": "none"}

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.root / "postfix.out",) if p.exists())

    def __enter__(self) -> PostfixServer:
        self.out = (self.root / "postfix.out").open("wb")
        self.process = subprocess.Popen([POSTFIX, "-c", str(self.root / "conf"), "start-fg"], stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postfix exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not start listening within 30 s: {self.log()}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        subprocess.run([POSTFIX, "-c", str(self.root / "conf"), "stop"], capture_output=True, check=False)
        if self.process is not None:
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.out is not None:
            self.out.close()
        shutil.rmtree(self.root, ignore_errors=True)
