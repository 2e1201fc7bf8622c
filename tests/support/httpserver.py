"""A real HTTP server on 127.0.0.1 for tests: a directory of files plus scripted per-path behaviours.

Typical use::

    with LocalHTTPServer(FIXTURES) as server:
        server.route("/flaky.xml", Reply(503, headers={"Retry-After": "1"}), Reply(static=True))
        server.route("/old", redirect("/feed.xml"))
        url = server.url("/feed.xml")
        ...
        assert server.requests_to("/feed.xml")[0].headers["user-agent"].startswith("newsletter/")
        assert server.peak_in_flight <= 2  # the most requests it was answering at once
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

CONTENT_TYPES = {
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def content_type(path: str) -> str:
    """Content-Type by extension, fixed for feed formats so tests don't depend on the host's mime.types."""
    suffix = Path(path).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Reply:
    """One scripted response; a route plays its replies in order and then repeats the last one."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # override the defaults (e.g. Content-Type)
    delay: float = 0.0  # seconds to wait before sending anything
    chunk_delay: float = 0.0  # seconds to wait before each body chunk: a slow drip
    chunk_size: int = 64 * 1024
    repeat: int = 1  # the body is sent this many times: huge bodies without building them
    content_length: bool = True  # False: chunked transfer encoding, size not announced
    gzip: bool = False  # gzip the whole (repeated) body and send Content-Encoding: gzip
    static: bool = False  # serve the file at this path instead, with validators (status/body ignored)


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect reply; location may be relative ("/feed.xml") or absolute."""
    return Reply(status, headers={"Location": location})


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, for asserting what a client sent."""

    method: str
    path: str  # including any query string
    headers: dict[str, str]  # names lowercased


class LocalHTTPServer:
    """A threaded HTTP/1.1 server on a free 127.0.0.1 port, so fetch code is tested over real sockets."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.requests: list[Recorded] = []
        self.in_flight = 0  # requests being answered right now
        self.peak_in_flight = 0  # the most answered at once since start (or reset_peak)
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> LocalHTTPServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Begin serving in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @property
    def port(self) -> int:
        """The port the kernel picked."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of a path on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, *replies: Reply) -> None:
        """Script a path (optionally with its query): replies are played in order, the last repeats forever."""
        if not replies:
            raise ValueError("route() needs at least one Reply")
        with self._lock:
            self._routes[path] = list(replies)

    def requests_to(self, path: str) -> list[Recorded]:
        """The requests received for a path (query string ignored unless given)."""
        with self._lock:
            return [r for r in self.requests if r.path == path or ("?" not in path and _bare(r.path) == path)]

    def reset_peak(self) -> None:
        """Start counting peak_in_flight afresh."""
        with self._lock:
            self.peak_in_flight = self.in_flight

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _next_reply(self, path: str) -> Reply | None:
        """The scripted reply due for this request, or None when the path is not scripted."""
        with self._lock:
            replies = self._routes.get(path) or self._routes.get(_bare(path))
            if replies is None:
                return None
            return replies.pop(0) if len(replies) > 1 else replies[0]


def _bare(path: str) -> str:
    return urlsplit(path).path


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its LocalHTTPServer and stays quiet about clients hanging up."""

    daemon_threads = True
    owner: LocalHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out or abort mid-body are expected in these tests; other errors still print."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Plays scripted replies, else serves files with ETag/Last-Modified and honours conditional GETs."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end on their own
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; the request log is the record."""

    def do_GET(self) -> None:
        """Record the request, then play its scripted reply or serve the file."""
        owner = self.server.owner
        owner._record(Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        owner._enter()
        try:
            reply = owner._next_reply(self.path)
            if reply is None or reply.static:
                if reply is not None and reply.delay:
                    time.sleep(reply.delay)
                self._serve_file(owner.root)
            else:
                self._play(reply)
        finally:
            owner._leave()

    def _serve_file(self, root: Path | None) -> None:
        relative = unquote(_bare(self.path)).lstrip("/")
        file = (root / relative).resolve() if root is not None else None
        if file is None or root is None or not file.is_relative_to(root) or not file.is_file():
            self._play(Reply(404, b"not found\n", {"Content-Type": "text/plain"}))
            return
        data = file.read_bytes()
        mtime = int(file.stat().st_mtime)
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        validators = {"ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True)}
        if self._not_modified(etag, mtime):
            self._play(Reply(304, headers=validators))
        else:
            self._play(Reply(200, data, {"Content-Type": content_type(file.name), **validators}))

    def _not_modified(self, etag: str, mtime: int) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
            return "*" in tags or etag in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since:
            try:
                return mtime <= parsedate_to_datetime(if_modified_since).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _play(self, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        headers = dict(reply.headers)
        no_body = reply.status in (204, 304) or 100 <= reply.status < 200
        chunks: Iterator[bytes] = _pieces(reply.body, reply.repeat, reply.chunk_size)
        length = len(reply.body) * reply.repeat
        if reply.gzip:
            packed = gzip.compress(reply.body * reply.repeat)
            chunks, length = _pieces(packed, 1, reply.chunk_size), len(packed)
            _default(headers, "Content-Encoding", "gzip")
        if not no_body:
            _default(headers, "Content-Type", content_type(_bare(self.path)))
            if reply.content_length:
                _default(headers, "Content-Length", str(length))
            else:
                _default(headers, "Transfer-Encoding", "chunked")
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if no_body:
                return
            for chunk in chunks:
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                self.wfile.write(chunk if reply.content_length else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if not reply.content_length:
                self.wfile.write(b"0\r\n\r\n")
        except (TimeoutError, ConnectionError):
            self.close_connection = True


def _default(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header unless the script already set it, in whatever capitalisation."""
    if name.lower() not in {key.lower() for key in headers}:
        headers[name] = value


def _pieces(body: bytes, repeat: int, size: int) -> Iterator[bytes]:
    """The body, repeated, cut into chunks of at most size bytes."""
    for _ in range(repeat):
        for start in range(0, len(body), size):
            yield body[start : start + size]
