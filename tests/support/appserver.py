"""`newsletter serve` as an operator starts it, in a process of its own on a free 127.0.0.1 port, for tests that
follow a mail's links over real HTTP.

Typical use::

    with ServedApp(environ) as app:          # environ: the command's environment; NEWSLETTER_BASE_URL is set to app.url
        page = app.get(link_from_a_mail)     # an httpx response
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from types import TracebackType

import httpx

from support.smtpserver import free_port


class ServedApp:
    """The app served by `newsletter serve`; links in mails made with the same environment point at it."""

    def __init__(self, environ: Mapping[str, str], timeout: float = 30.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environ = {**os.environ, **environ, "NEWSLETTER_BASE_URL": self.url}
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed on exit) its output: a pipe nobody reads would fill and stall it
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)

    def __enter__(self) -> ServedApp:
        command = [sys.executable, "-m", "newsletter", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=self.environ, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                out = self.log.read().decode(errors="replace")
                raise RuntimeError(f"`newsletter serve` exited with {self.process.returncode}: {out}")
            try:
                self.client.get(f"{self.url}/style.css")
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"`newsletter serve` did not answer on {self.url} within {self.timeout:.0f} s")

    def get(self, url: str) -> httpx.Response:
        """GET a link as a mail gives it (absolute, at this app)."""
        assert url.startswith(self.url + "/"), f"{url} is not a link to the served app at {self.url}"
        return self.client.get(url)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
