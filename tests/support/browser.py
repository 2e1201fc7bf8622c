"""The one browser client of the suite: Debian's /usr/bin/chromium, headless, driven by Playwright.

Nothing here installs or downloads a browser: `.ci/run` installs Debian's chromium with apt-get when it
is missing, and a test that needs it fails, naming what to do, when it is not there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parent.parent.parent / "test-output" / "browser"  # gitignored, for a person to look at


def require_chromium() -> str:
    """The browser's path; fails the test (never skips it) when Debian's chromium is not installed."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: browser tests need Debian's chromium (.ci/run installs it; or `apt-get install -y chromium`, "
            'or deselect them with -m "not browser")',
            pytrace=False,
        )
    return str(CHROMIUM)


@contextmanager
def chromium_browser(path: str | None = None) -> Iterator[Browser]:
    """Headless Chromium under Playwright, closed on the way out."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path or require_chromium(), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """The app under uvicorn on a loopback port, for the browser to open; its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
