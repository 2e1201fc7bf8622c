"""Shared pytest fixtures; the helpers behind them are in tests/support/."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import require_chromium
from support.httpserver import LocalHTTPServer
from support.postgres import PostgresServer


@pytest.fixture(autouse=True)
def config_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own cache of validated configs ($XDG_CACHE_HOME), so none reads or fills the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A fresh 127.0.0.1 HTTP server serving tests/fixtures, for tests that fetch over real sockets."""
    with LocalHTTPServer(Path(__file__).parent / "fixtures") as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's /usr/bin/chromium for browser checks. The session never installs it (.ci/run does): a missing
    browser fails the test with a message saying so."""
    return require_chromium()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (started on first use); each test asks it for a database of its own."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store lives, once per engine: a fresh SQLite file, then a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.database()
