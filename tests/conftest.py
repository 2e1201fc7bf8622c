"""Shared pytest fixtures."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import LocalHTTPServer


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A fresh 127.0.0.1 HTTP server serving tests/fixtures, for tests that fetch over real sockets."""
    with LocalHTTPServer(Path(__file__).parent / "fixtures") as server:
        yield server
