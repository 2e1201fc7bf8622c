"""Shared pytest fixtures."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.httpserver import LocalHTTPServer


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A fresh 127.0.0.1 HTTP server serving tests/fixtures, for tests that fetch over real sockets."""
    with LocalHTTPServer(Path(__file__).parent / "fixtures") as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium for browser checks, installed with apt-get when missing (CI runs as root on a fresh
    machine); no test tool downloads a browser of its own. Skipped only where installing is impossible."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900, env=env)
    if install.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env)
        install = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900, env=env)
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"chromium could not be installed: {install.stderr.strip()[-300:]}")
    return found
