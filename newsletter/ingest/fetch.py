"""Fetching feed documents like a good citizen: bounded, retried, conditional, size-capped and SSRF-guarded."""

from __future__ import annotations

import asyncio
import ipaddress
import mimetypes
import os
import socket
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

import httpx

from newsletter.__about__ import __version__
from newsletter.errors import FetchError, NewsletterError

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CONTENT_TYPES = {
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".json": "application/json",
}


_ALLOW_HINT = "(set settings.allow_private_network to allow)"
_ERROR_BODY_LIMIT = 64 * 1024  # bytes of an HTTP error's body kept for the source to explain it


@dataclass(frozen=True)
class Request:
    """What to fetch, with the validators remembered from the last successful fetch."""

    url: str  # http(s) URL, file:///abs/path, or a plain filesystem path
    etag: str | None = None
    last_modified: str | None = None
    timeout: float | None = None  # seconds for this document's exchanges; None: Policy.timeout


@dataclass(frozen=True)
class Response:
    """A fetched document, or the news that it has not changed since the validators were issued."""

    url: str  # the URL asked for (Request.url)
    final_url: str  # after redirects
    status: int  # 200, 304; 0 for files
    body: bytes  # b"" when not_modified
    content_type: str | None
    etag: str | None
    last_modified: str | None
    not_modified: bool = False


@dataclass(frozen=True)
class Policy:
    """How politely and how defensively to fetch; one per run, built from the settings."""

    user_agent: str
    timeout: float = 30.0  # seconds for one whole HTTP exchange, body included
    max_bytes: int = 20 * 1024 * 1024  # decoded body size
    max_redirects: int = 5
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry; doubled each retry
    max_retry_after: float = 120.0  # a server asking for a longer wait gets an error instead
    allow_private_network: bool = False
    allowed_hosts: frozenset[str] = frozenset()  # lowercase hostnames exempt from the private-network refusal
    host_intervals: Mapping[str, float] = field(default_factory=dict)  # lowercase host -> minimum seconds between starting two requests to it


def user_agent(contact: str | None) -> str:
    """Identify the software and its operator, so feed publishers know whom to contact about our traffic."""
    # one line of ASCII: HTTP headers take nothing else ("José" -> "Jose", newlines -> spaces)
    contact = unicodedata.normalize("NFKD", " ".join((contact or "").split())).encode("ascii", "ignore").decode()
    details = f"self-hosted paper digest; contact {contact}" if contact else "self-hosted paper digest"
    return f"newsletter/{__version__} ({details})"


def address_kind(address: str) -> str | None:
    """Name the kind of non-public address this IP literal is ("loopback", "private", ...), or None if public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index such as "%eth0"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            ip = embedded
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),  # e.g. 100.64.0.0/10 shared address space
    )
    return next((kind for kind, matches in checks if matches), None)


class _Retry(NewsletterError):
    """This attempt failed in a way that another attempt might not (timeouts, 429, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Fetcher:
    """One shared client for a run: connection reuse, a concurrency bound, politeness."""

    def __init__(self, policy: Policy, concurrency: int = 4) -> None:
        self._policy = policy
        self._slots = asyncio.Semaphore(concurrency)
        self._host_locks: dict[str, asyncio.Lock] = {}
        self._host_next: dict[str, float] = {}
        self._client = httpx.AsyncClient(
            follow_redirects=False,  # followed by hand so every hop passes the scheme and address checks
            timeout=httpx.Timeout(policy.timeout),
            headers={"User-Agent": policy.user_agent},
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def get(self, request: Request) -> Response:
        """Fetch one document over HTTP(S) or from a local file; raises FetchError with a readable reason."""
        path = _local_path(request.url)
        if path is not None:
            body = await asyncio.to_thread(_read_file, path, self._policy.max_bytes)
            return Response(
                url=request.url,
                final_url=path.absolute().as_uri(),
                status=0,
                body=body,
                content_type=_CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0],
                etag=None,
                last_modified=None,
            )
        return await self._get_http(request)

    async def _get_http(self, request: Request) -> Response:
        """Follow redirects by hand, checking each hop, and turn the final answer into a Response."""
        url = _parse_http_url(request.url)
        timeout = request.timeout or self._policy.timeout
        headers: dict[str, str] = {}
        if request.etag:
            headers["If-None-Match"] = request.etag
        if request.last_modified:
            headers["If-Modified-Since"] = request.last_modified
        for _ in range(self._policy.max_redirects + 1):
            await self._check_host(url, timeout)
            response, body = await self._with_retries(url, headers, timeout)
            if response.status_code in _REDIRECT_STATUSES:
                url = _redirect_target(url, response)
                continue
            not_modified = response.status_code == 304
            return Response(
                url=request.url,
                final_url=str(url),
                status=response.status_code,
                body=body,
                content_type=response.headers.get("content-type"),
                etag=response.headers.get("etag") or (request.etag if not_modified else None),
                last_modified=response.headers.get("last-modified") or (request.last_modified if not_modified else None),
                not_modified=not_modified,
            )
        raise FetchError(f"too many redirects (more than {self._policy.max_redirects})")

    async def _check_host(self, url: httpx.URL, timeout: float) -> None:
        """Refuse hosts that resolve to loopback, private, link-local or otherwise non-public addresses.

        Residual risk: this resolves, checks, and then lets httpx resolve again to connect, so a
        DNS-rebinding host (public answer now, private answer a moment later) can slip through.
        Closing that gap means pinning the checked IP for the connection (custom transport, SNI
        and Host kept on the name); not worth it for a digest fetching operator-chosen feeds.
        """
        host = url.host
        if self._policy.allow_private_network or host in self._policy.allowed_hosts:
            return
        port = url.port or (443 if url.scheme == "https" else 80)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve {host}: {exc.strerror}") from None
        except TimeoutError:
            raise FetchError(f"resolving {host} timed out after {timeout:g} s") from None
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            kind = address_kind(address)
            if kind is not None:
                article = "an" if kind[0] in "aeiou" else "a"
                subject = f"{address} is" if address == host else f"{host} resolves to {address},"
                raise FetchError(f"refused: {subject} {article} {kind} address {_ALLOW_HINT}")

    async def _with_retries(self, url: httpx.URL, headers: dict[str, str], timeout: float) -> tuple[httpx.Response, bytes]:
        """Repeat one exchange on transient failure, backing off exponentially or as Retry-After asks."""
        policy = self._policy
        attempt = 0
        while True:
            try:
                return await self._attempt(url, headers, timeout)
            except _Retry as failure:
                if attempt >= policy.retries:
                    suffix = "" if attempt == 0 else f" (after {attempt} {'retry' if attempt == 1 else 'retries'})"
                    raise FetchError(failure.reason + suffix) from None
                delay = failure.retry_after if failure.retry_after is not None else policy.backoff * 2**attempt
                await asyncio.sleep(delay)
                attempt += 1

    async def _attempt(self, url: httpx.URL, headers: dict[str, str], timeout: float) -> tuple[httpx.Response, bytes]:
        """One HTTP exchange inside the concurrency bound and the total timeout."""
        await self._pace(url.host)
        async with self._slots:
            try:
                async with asyncio.timeout(timeout):
                    async with self._client.stream("GET", url, headers=headers, timeout=timeout) as response:
                        return response, await self._read(response)
            except (TimeoutError, httpx.TimeoutException):
                raise _Retry(f"timed out after {timeout:g} s") from None
            except httpx.InvalidURL as exc:  # httpx reads a redirect's Location as it answers: a hostile one lands here
                raise FetchError(f"invalid redirect location: {exc}") from None
            except httpx.RemoteProtocolError as exc:
                if "location header" in str(exc).lower():  # the same, for a Location httpx cannot even parse: retrying cannot help
                    raise FetchError(f"invalid redirect location: {exc}") from None
                raise _Retry(f"connection failed: {exc}") from None
            except (httpx.NetworkError, OSError) as exc:
                raise _Retry(f"connection failed: {exc or type(exc).__name__}") from None
            except httpx.DecodingError:
                raise FetchError("could not decode the compressed body") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"request failed: {exc or type(exc).__name__}") from None

    async def _read(self, response: httpx.Response) -> bytes:
        """Classify the status and, for a 2xx, read the decoded body without exceeding max_bytes."""
        status = response.status_code
        if status in _REDIRECT_STATUSES or status == 304:
            return b""
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status == 429 or status >= 500:
            retry_after = _parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None and retry_after > self._policy.max_retry_after:
                raise FetchError(f"{reason}: server asked to retry after {retry_after:g} s (more than {self._policy.max_retry_after:g} s)")
            raise _Retry(reason, retry_after)
        if not 200 <= status < 300:
            raise FetchError(reason, await _head(response, _ERROR_BODY_LIMIT))
        limit = self._policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(f"body larger than {_size(limit)}")
        # httpx inflates one network read at a time, so a compressed read can briefly expand
        # beyond the limit in memory before this check sees it; the check still bounds the total.
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise FetchError(f"body larger than {_size(limit)}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _pace(self, host: str) -> None:
        """Wait until the host's interval has passed since the last request to it was started."""
        interval = self._policy.host_intervals.get(host.lower(), 0.0)
        if interval <= 0:
            return
        loop = asyncio.get_running_loop()
        async with self._host_locks.setdefault(host, asyncio.Lock()):
            wait = self._host_next.get(host, 0.0) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._host_next[host] = loop.time() + interval


async def _head(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of a body; the rest is never read."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]


def _local_path(url: str) -> Path | None:
    """The filesystem path an operator-configured source names, or None for a network URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"refused: file URL on another host ({parts.netloc})")
        return Path(unquote(parts.path))
    if parts.scheme == "":
        return Path(url)
    return None


def _read_file(path: Path, limit: int) -> bytes:
    """Read a local feed under the same size limit as a download."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer for ever; only a regular file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FetchError(f"refused: {path} is not a regular file")
            if info.st_size > limit:
                raise FetchError(f"body larger than {_size(limit)}")
            data = handle.read(limit + 1)  # the file may grow while it is read: the read is the real check
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FetchError(f"body larger than {_size(limit)}")
    return data


def _parse_http_url(text: str) -> httpx.URL:
    """Parse a configured URL, accepting only http and https."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise FetchError(f"invalid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise FetchError(f"refused: unsupported URL scheme {url.scheme!r} (use http, https or a local file)")
    if not url.host:
        raise FetchError("invalid URL: no host")
    return url


def _redirect_target(current: httpx.URL, response: httpx.Response) -> httpx.URL:
    """Resolve a redirect's Location, refusing anything but http(s) (a redirect never reaches a file)."""
    location = response.headers.get("location")
    if not location:
        raise FetchError(f"HTTP {response.status_code} redirect without a Location")
    try:
        target = current.join(location)
    except httpx.InvalidURL as exc:
        raise FetchError(f"invalid redirect location: {exc}") from None
    if target.scheme not in ("http", "https"):
        raise FetchError(f"refused: redirect to unsupported scheme {target.scheme!r}")
    if not target.host:
        raise FetchError("invalid redirect location: no host")
    return target


def _parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or garbled."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _size(count: int) -> str:
    """Render a byte count the way an operator configured it: 20 MiB, 512 KiB, 1000 bytes."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"
