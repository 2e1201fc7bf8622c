"""newsletter.fetch against a real local HTTP server: politeness, retries, limits and the address guard."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.httpserver import LocalHTTPServer, Reply, redirect
from support.smtpserver import free_port

from newsletter import __version__
from newsletter.errors import FetchError
from newsletter.ingest.fetch import (
    Fetcher,
    Policy,
    Request,
    Response,
    _parse_retry_after,
    address_kind,
    user_agent,
)

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
CONTACT = "digest-operator@example.org"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalHTTPServer]:
    """A server whose root holds one feed and one JSON document."""
    (tmp_path / "feed.xml").write_bytes(FEED)
    (tmp_path / "data.json").write_bytes(b'{"papers": []}')
    with LocalHTTPServer(tmp_path) as srv:
        yield srv


def make_policy(**overrides: Any) -> Policy:
    """A test policy: fast backoff, loopback allowed unless a test says otherwise."""
    settings: dict[str, Any] = {
        "user_agent": user_agent(CONTACT),
        "timeout": 5.0,
        "backoff": 0.01,
        "allow_private_network": True,
    }
    return Policy(**{**settings, **overrides})


def fetch(target: str | Request, **overrides: Any) -> Response:
    """Fetch one URL with a fresh Fetcher."""
    request = target if isinstance(target, Request) else Request(target)

    async def run() -> Response:
        async with Fetcher(make_policy(**overrides)) as fetcher:
            return await fetcher.get(request)

    return asyncio.run(run())


def fetch_error(target: str | Request, **overrides: Any) -> str:
    """The FetchError message fetching this target produces."""
    with pytest.raises(FetchError) as caught:
        fetch(target, **overrides)
    return str(caught.value)


# --- plain fetching and conditional GET -------------------------------------------------------


def test_200_returns_body_type_and_validators(server: LocalHTTPServer) -> None:
    response = fetch(server.url("/feed.xml"))
    assert response.status == 200
    assert response.body == FEED
    assert response.content_type == "application/xml"
    assert response.etag and response.etag.startswith('"')
    assert response.last_modified and response.last_modified.endswith("GMT")
    assert response.url == response.final_url == server.url("/feed.xml")
    assert not response.not_modified


def test_user_agent_names_software_and_contact(server: LocalHTTPServer) -> None:
    fetch(server.url("/feed.xml"))
    sent = server.requests_to("/feed.xml")[0].headers["user-agent"]
    assert sent == f"newsletter/{__version__} (self-hosted paper digest; contact {CONTACT})"
    assert user_agent(None) == user_agent("") == f"newsletter/{__version__} (self-hosted paper digest)"
    assert user_agent("a@b.example\r\nX-Evil: 1").endswith("; contact a@b.example X-Evil: 1)")
    assert user_agent("José <jose@example.org>").endswith("; contact Jose <jose@example.org>)")


def test_304_via_etag_costs_no_body(server: LocalHTTPServer) -> None:
    first = fetch(server.url("/feed.xml"))
    second = fetch(Request(server.url("/feed.xml"), etag=first.etag))
    assert second.not_modified and second.status == 304 and second.body == b""
    assert second.etag == first.etag
    assert server.requests_to("/feed.xml")[1].headers["if-none-match"] == first.etag


def test_304_via_last_modified(server: LocalHTTPServer) -> None:
    first = fetch(server.url("/feed.xml"))
    second = fetch(Request(server.url("/feed.xml"), last_modified=first.last_modified))
    assert second.not_modified and second.body == b""
    assert second.last_modified == first.last_modified
    sent = server.requests_to("/feed.xml")[1].headers
    assert sent["if-modified-since"] == first.last_modified and "if-none-match" not in sent


def test_changed_etag_gets_full_body(server: LocalHTTPServer) -> None:
    response = fetch(Request(server.url("/feed.xml"), etag='"stale"'))
    assert response.status == 200 and response.body == FEED


def test_client_error_is_not_retried(server: LocalHTTPServer) -> None:
    assert fetch_error(server.url("/missing.xml")) == "HTTP 404 Not Found"
    assert len(server.requests_to("/missing.xml")) == 1


def test_client_error_keeps_the_head_of_its_body(server: LocalHTTPServer) -> None:
    server.route("/bad", Reply(400, b"<feed>why</feed>"), Reply(400, b"x" * 65536, repeat=4))
    with pytest.raises(FetchError) as small:
        fetch(server.url("/bad"))
    assert small.value.body == b"<feed>why</feed>"
    with pytest.raises(FetchError) as large:
        fetch(server.url("/bad"))
    assert large.value.body == b"x" * 65536


# --- retries ----------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(429, headers={"Retry-After": "1"}), Reply(static=True))
    started = time.monotonic()
    response = fetch(server.url("/feed.xml"))
    assert time.monotonic() - started >= 0.95  # backoff alone would be 0.01 s
    assert response.body == FEED
    assert len(server.requests_to("/feed.xml")) == 2


@pytest.mark.timeout(30)  # a hang guard only: waiting out the 3600 s would hang here
def test_retry_after_beyond_cap_gives_up_at_once(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(503, headers={"Retry-After": "3600"}))
    message = fetch_error(server.url("/feed.xml"))
    assert message == "HTTP 503 Service Unavailable: server asked to retry after 3600 s (more than 120 s)"
    assert len(server.requests_to("/feed.xml")) == 1


def test_500_then_success(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(500), Reply(static=True))
    assert fetch(server.url("/feed.xml")).body == FEED
    assert len(server.requests_to("/feed.xml")) == 2


def test_500_forever_gives_up_after_retries_with_doubling_backoff(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(500))
    started = time.monotonic()
    message = fetch_error(server.url("/feed.xml"), retries=2, backoff=0.1)
    assert time.monotonic() - started >= 0.1 + 0.2
    assert message == "HTTP 500 Internal Server Error (after 2 retries)"
    assert len(server.requests_to("/feed.xml")) == 3


def test_connection_refused_is_a_fetch_error() -> None:
    message = fetch_error(f"http://127.0.0.1:{free_port()}/feed.xml", retries=1)
    assert message.startswith("connection failed: ") and message.endswith("(after 1 retry)")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 120 ", 120.0),
        ("Wed, 01 Jan 2025 00:00:30 GMT", 30.0),
        ("Tue, 31 Dec 2024 23:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("-1", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert _parse_retry_after(value, now) == seconds


# --- timeouts and size limits -----------------------------------------------------------------


@pytest.mark.timeout(30)  # a hang guard only
def test_slow_server_times_out(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(200, FEED, delay=3))
    message = fetch_error(server.url("/feed.xml"), timeout=0.5, retries=1)
    assert message == "timed out after 0.5 s (after 1 retry)"
    assert len(server.requests_to("/feed.xml")) == 2  # the first try and one retry, each given up before the 3 s reply


def test_timeout_covers_a_slow_drip_body(server: LocalHTTPServer) -> None:
    # every chunk arrives well within the timeout, but the whole body does not
    server.route("/feed.xml", Reply(200, b"x" * 100, chunk_size=10, chunk_delay=0.2))
    assert fetch_error(server.url("/feed.xml"), timeout=0.5, retries=0) == "timed out after 0.5 s"


@pytest.mark.parametrize("content_length", [True, False])
def test_oversize_body_is_refused(server: LocalHTTPServer, content_length: bool) -> None:
    server.route("/big.xml", Reply(200, b"x" * 65536, repeat=64, content_length=content_length))
    message = fetch_error(server.url("/big.xml"), max_bytes=64 * 1024)
    assert message == "body larger than 64 KiB"


def test_body_at_the_limit_is_fine(server: LocalHTTPServer) -> None:
    server.route("/exact.xml", Reply(200, b"x" * 1000, content_length=False))
    assert len(fetch(server.url("/exact.xml"), max_bytes=1000).body) == 1000


def test_gzip_body_is_decoded(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(200, FEED, gzip=True))
    assert fetch(server.url("/feed.xml")).body == FEED
    assert "gzip" in server.requests_to("/feed.xml")[0].headers["accept-encoding"]


def test_size_limit_applies_after_decompression(server: LocalHTTPServer) -> None:
    # 2 MiB of zeros compress to a few KiB on the wire
    server.route("/bomb.xml", Reply(200, b"\0" * 65536, repeat=32, gzip=True))
    assert fetch_error(server.url("/bomb.xml"), max_bytes=1024 * 1024) == "body larger than 1 MiB"


# --- redirects --------------------------------------------------------------------------------


def test_redirects_are_followed(server: LocalHTTPServer) -> None:
    server.route("/old", redirect("/older", 301))
    server.route("/older", redirect(server.url("/feed.xml"), 307))
    response = fetch(Request(server.url("/old"), etag='"stale"'))
    assert response.body == FEED
    assert response.url == server.url("/old")
    assert response.final_url == server.url("/feed.xml")
    assert server.requests_to("/feed.xml")[0].headers["if-none-match"] == '"stale"'


def test_redirect_loop_is_too_many_redirects(server: LocalHTTPServer) -> None:
    server.route("/a", redirect("/b"))
    server.route("/b", redirect("/a"))
    assert fetch_error(server.url("/a")) == "too many redirects (more than 5)"
    assert len(server.requests) == 6


def test_redirect_limit_is_configurable(server: LocalHTTPServer) -> None:
    server.route("/a", redirect("/b"))
    server.route("/b", redirect("/feed.xml"))
    assert fetch_error(server.url("/a"), max_redirects=1) == "too many redirects (more than 1)"
    assert fetch(server.url("/a"), max_redirects=2).body == FEED


def test_redirect_to_a_file_is_never_followed(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.route("/sneaky", redirect((tmp_path / "feed.xml").as_uri()))
    assert fetch_error(server.url("/sneaky")) == "refused: redirect to unsupported scheme 'file'"


def test_redirect_without_location(server: LocalHTTPServer) -> None:
    server.route("/r", Reply(302))
    assert fetch_error(server.url("/r")) == "HTTP 302 redirect without a Location"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("javascript:alert(1)", "invalid redirect location: "),
        ("javascript://x/%0aalert(1)", "refused: redirect to unsupported scheme 'javascript'"),
        ("data:text/html,<script>x</script>", "invalid redirect location: "),
        ("http://[::1", "invalid redirect location: "),
    ],
)
def test_a_hostile_redirect_location_is_the_sources_failure_once_not_an_escaping_error(server: LocalHTTPServer, location: str, reason: str) -> None:
    server.route("/r", Reply(302, headers={"Location": location}))
    assert fetch_error(server.url("/r")).startswith(reason)
    assert len(server.requests_to("/r")) == 1, "a Location that cannot be followed is not retried"


# --- schemes, local files and the address guard ----------------------------------------------


@pytest.mark.parametrize("url", ["ftp://example.org/feed.xml", "gopher://example.org/1/feed"])
def test_non_http_schemes_are_refused(url: str) -> None:
    assert "unsupported URL scheme" in fetch_error(url)


def test_plain_path_and_file_url_are_read(tmp_path: Path) -> None:
    path = tmp_path / "sample feed.xml"
    path.write_bytes(FEED)
    for target in (str(path), path.as_uri()):
        response = fetch(target)
        assert response.status == 0 and response.body == FEED
        assert response.content_type == "application/xml"
        assert response.url == target and response.final_url == path.as_uri()


def test_local_file_errors(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    big.write_bytes(b"x" * 2048)
    assert fetch_error(str(big), max_bytes=1024) == "body larger than 1 KiB"
    assert fetch_error(str(tmp_path / "nope.xml")).startswith("cannot read ")
    assert fetch_error("file://elsewhere.example/etc/feed.xml").startswith("refused: file URL on another host")


def test_loopback_literal_refused_without_a_request(server: LocalHTTPServer) -> None:
    message = fetch_error(server.url("/feed.xml"), allow_private_network=False)
    assert message == "refused: 127.0.0.1 is a loopback address (set settings.allow_private_network to allow)"
    assert server.requests == []


def test_hostname_resolving_to_loopback_refused(server: LocalHTTPServer) -> None:
    message = fetch_error(f"http://localhost:{server.port}/feed.xml", allow_private_network=False)
    assert message.startswith("refused: localhost resolves to ")
    assert "a loopback address" in message
    assert server.requests == []


def test_allowed_host_passes_but_its_redirect_to_loopback_does_not(server: LocalHTTPServer) -> None:
    server.route("/hop", redirect(server.url("/feed.xml")))  # localhost -> 127.0.0.1
    guarded = {"allow_private_network": False, "allowed_hosts": frozenset({"localhost"})}
    assert fetch(f"http://localhost:{server.port}/feed.xml", **guarded).body == FEED
    message = fetch_error(f"http://localhost:{server.port}/hop", **guarded)
    assert message.startswith("refused: 127.0.0.1 is a loopback address")
    assert len(server.requests_to("/hop")) == 1
    assert len(server.requests_to("/feed.xml")) == 1  # only the direct fetch above


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "non-public"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_kind(address: str, kind: str | None) -> None:
    assert address_kind(address) == kind


# --- politeness -------------------------------------------------------------------------------


def test_concurrency_bound_is_respected(server: LocalHTTPServer) -> None:
    delay = 0.3
    server.route("/slow", Reply(200, b"ok", delay=delay))

    async def run() -> list[Response]:
        async with Fetcher(make_policy(), concurrency=2) as fetcher:
            return await asyncio.gather(*(fetcher.get(Request(server.url("/slow"))) for _ in range(8)))

    responses = asyncio.run(run())
    assert [r.body for r in responses] == [b"ok"] * 8
    assert len(server.requests_to("/slow")) == 8
    assert server.peak_in_flight == 2  # the server saw two at a time: not one, not all eight


def test_host_interval_spaces_requests_to_one_host(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(static=True, delay=0.3))  # long enough for unpaced requests to overlap

    async def run(host: str) -> None:
        async with Fetcher(make_policy(host_intervals={"127.0.0.1": 0.3})) as fetcher:
            await asyncio.gather(*(fetcher.get(Request(f"http://{host}:{server.port}/feed.xml")) for _ in range(3)))

    started = time.monotonic()
    asyncio.run(run("127.0.0.1"))
    assert time.monotonic() - started >= 0.6  # a floor: load can only make it later
    server.reset_peak()
    asyncio.run(run("localhost"))  # another host name: no interval configured, so not paced
    assert len(server.requests_to("/feed.xml")) == 6
    assert server.peak_in_flight == 3, "the three unpaced requests were all at the server at once"


def test_request_timeout_overrides_the_policy(server: LocalHTTPServer) -> None:
    server.route("/feed.xml", Reply(200, FEED, delay=1))
    assert fetch_error(Request(server.url("/feed.xml"), timeout=0.3), retries=0) == "timed out after 0.3 s"
    assert fetch(Request(server.url("/feed.xml")), timeout=5.0, retries=0).body == FEED


@pytest.mark.timeout(20)  # a hang guard: opening a FIFO waits for a writer for ever
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_local_feed_path_is_read_only_from_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "feed.fifo", "device": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    reason = fetch_error(str(path))
    assert reason in (f"refused: {path} is not a regular file", f"cannot read {path}: Is a directory")
