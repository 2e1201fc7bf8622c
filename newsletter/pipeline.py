"""One cycle of the product: fetch every source, then compose, render and deliver each subscriber's digest."""

from __future__ import annotations

import asyncio
import fcntl
import heapq
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.headerregistry import Address
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from cachetools import LRUCache

from . import tokens
from .config import Config, Subscriber
from .digest import Digest, all_topics, compose, match_all
from .environment import Env
from .fetch import FetchError, Fetcher, Policy, Request, user_agent
from .mailer import Headers, Job, Letter, Pool, Result, Signer, Stationery
from .papers import Paper, merge
from .render import CACHED_DIGESTS, Reader, Renderer
from .sources import Source, SourceError, first_urls, parse
from .store import PausedReader, Store, utcnow
from .topics import Matcher

log = logging.getLogger("newsletter")

ARXIV_API_INTERVAL = 3.0  # seconds between requests to the arXiv API, as its terms of use ask
ARXIV_HOSTS = ("export.arxiv.org", "rss.arxiv.org")  # paced at ARXIV_API_INTERVAL even when no API source names them


@dataclass
class SourceResult:
    """How one source's fetch went."""

    name: str
    papers: int = 0
    new: int = 0
    not_modified: bool = False
    error: str | None = None


@dataclass
class Outcome:
    """What happened to one subscriber's digest in a send."""

    email: str
    papers: int
    status: str  # sent, deferred, failed, dry-run
    detail: str = ""


@dataclass
class SendReport:
    """The result of `newsletter send`, enough to print and to choose the exit code."""

    fetched: list[SourceResult] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    uncertain: int = 0  # rows found interrupted in `sending` and sent once more
    paused: list[PausedReader] = field(default_factory=list)
    error: str | None = None  # the server refused the session for good; the run stopped early
    on_outcome: Callable[[Outcome], None] | None = None  # e.g. a progress line on a terminal

    def add(self, outcome: Outcome) -> None:
        """Record one digest's fate and tell whoever is watching."""
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def exit_code(self) -> int:
        """2 when some deliveries did not go through, per the contract."""
        return 2 if self.count("failed") or self.count("deferred") or self.error else 0


# fetching


def fetch(config: Config, env: Env, store: Store, now: datetime | None = None, policy: Policy | None = None) -> list[SourceResult]:
    """Fetch and store every source; a broken source is recorded and never stops the others."""
    now = now or utcnow()
    return asyncio.run(_fetch_all(config, store, now, policy or fetch_policy(config, env, now.date())))


def fetch_policy(config: Config, env: Env, today: date, api_interval: float = ARXIV_API_INTERVAL) -> Policy:
    """Who we are, which networks we may reach, and how politely: arXiv's hosts, and the host of
    every arxiv_api source (a mirror too), get at least api_interval seconds between requests."""
    hosts = set(ARXIV_HOSTS)
    for source in config.sources:
        if source.type == "arxiv_api" and (source.url or source.query):
            hosts.update((urlsplit(url).hostname or "").lower() for url in first_urls(source, today))
    return Policy(
        user_agent=user_agent(env.sender),
        allow_private_network=config.settings.allow_private_network,
        host_intervals={host: api_interval for host in hosts if host},
    )


async def _fetch_all(config: Config, store: Store, now: datetime, policy: Policy) -> list[SourceResult]:
    async with Fetcher(policy) as fetcher:
        return list(await asyncio.gather(*(_fetch_one(fetcher, source, store, now) for source in config.sources)))


async def _fetch_one(fetcher: Fetcher, source: Source, store: Store, now: datetime) -> SourceResult:
    result = SourceResult(source.name)
    started = time.monotonic()
    try:
        papers, validators, result.not_modified = await _download(fetcher, source, store, now)
    except (FetchError, SourceError) as exc:
        result.error = str(exc)
    except Exception as exc:  # a feed must never break the run; keep the type for the operator
        log.exception("source %s: unexpected error", source.name)
        result.error = f"unexpected {type(exc).__name__}: {exc}"
    if result.error:
        store.source_failed(source.name, result.error, now)
        log.warning("source %s failed: %s", source.name, result.error)
        return result
    result.papers = len(papers)
    added = store.add_papers(papers, now, replace=source.replace)
    result.new = added.new
    for url, (etag, last_modified) in validators.items():
        store.save_validators(url, etag, last_modified)
    store.source_succeeded(source.name, added.fresh, now)
    state = "not modified" if result.not_modified and not papers else f"{result.papers} papers, {result.new} new"
    log.info("source %s: %s (%.1f s)", source.name, state, time.monotonic() - started)
    return result


async def _download(fetcher: Fetcher, source: Source, store: Store, now: datetime) -> tuple[list[Paper], dict[str, tuple[str | None, str | None]], bool]:
    """All pages of a source; validators are returned, not saved, so they are kept only once the papers are stored."""
    papers: dict[str, Paper] = {}  # by id: pages and days may overlap
    validators: dict[str, tuple[str | None, str | None]] = {}
    unchanged = True
    for first in first_urls(source, now.date()):
        url: str | None = first
        while url and url not in validators:  # a server that repeats its paging links must not loop us
            etag, last_modified = store.validators(url)
            try:
                response = await fetcher.get(Request(url, etag, last_modified, source.timeout))
            except FetchError as exc:
                raise FetchError(_explain(source, exc, url)) from exc
            if response.not_modified:
                break
            unchanged = False
            parsed = parse(source, response.body, response.final_url, response.content_type)
            for paper in parsed.papers:
                papers[paper.id] = merge(papers[paper.id], paper) if paper.id in papers else paper
            validators[url] = (response.etag, response.last_modified)
            url = parsed.next_url  # the next page waits its turn in the fetcher's per-host interval
    return list(papers.values()), validators, unchanged


def _explain(source: Source, error: FetchError, url: str) -> str:
    """An HTTP error's reason, with the arXiv API's own explanation when its error document gives one."""
    if source.type == "arxiv_api" and error.body:
        try:
            parse(source, error.body, url)
        except SourceError as reason:
            return f"{error}: {reason}"
    return str(error)


# sending


def secret_key(env: Env, store: Store) -> str:
    """NEWSLETTER_SECRET_KEY, or for the local outbox a key made once and kept in the database."""
    if env.secret_key:
        return env.secret_key
    key = store.meta("secret_key")
    if key is None:
        key = secrets.token_urlsafe(32)
        store.set_meta("secret_key", key)
    return key


def reader_for(subscriber: Subscriber, secret: str) -> Reader:
    """What personalises one subscriber's digest: their name and their signed unsubscribe and preferences links."""
    return Reader(
        email=subscriber.email,
        name=subscriber.name,
        unsubscribe_token=tokens.sign(secret, tokens.UNSUBSCRIBE, subscriber.email),
        preferences_token=tokens.sign(secret, tokens.PREFERENCES, subscriber.email),
    )


@dataclass
class Planner:
    """Matches stored papers once and composes each subscriber's digest from the shared result."""

    config: Config
    store: Store
    now: datetime
    matcher: Matcher = field(init=False)
    papers: list[Paper] = field(init=False)

    def __post_init__(self) -> None:
        self.matcher = Matcher(all_topics(self.config))
        since = self.now - timedelta(days=self.config.settings.horizon_days)
        self.papers = [sp.paper for sp in self.store.papers_seen_since(since)]
        self.matches = match_all(self.matcher, self.papers)

    def today(self, subscriber: Subscriber) -> datetime:
        return self.now.astimezone(ZoneInfo(subscriber.timezone))

    def next_digest(self, subscriber: Subscriber) -> Digest | None:
        """Every matching paper within the horizon that this subscriber has not been sent."""
        sent = self.store.sent_paper_ids(subscriber.email)
        return compose(self.config, subscriber, self.matcher, self.papers, self.matches, sent, self.today(subscriber).date())

    def resumed_digest(self, subscriber: Subscriber, paper_ids: list[str]) -> Digest | None:
        """Rebuild an unfinished delivery's digest from the papers recorded for it: same papers, same caps, same mail."""
        papers = self.store.papers_by_id(paper_ids)
        matches = {**self.matches, **match_all(self.matcher, (p for p in papers if p.id not in self.matches))}
        return compose(self.config, subscriber, self.matcher, papers, matches, set(), self.today(subscriber).date())


def send(
    config: Config,
    env: Env,
    store: Store,
    transport: Pool,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    only: str | None = None,
    renderer: Renderer | None = None,
    edition: str | None = None,
    subscribers: Sequence[Subscriber] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> SendReport:
    """Deliver every active subscriber's digest through the ledger; papers are marked sent only once accepted.

    Unfinished rows from earlier runs go first (each exactly once), then this edition's new rows. `edition`
    names the slot (a scheduler passes one per slot, so a restart in the same slot never sends a second digest
    for it; default: one per call), `subscribers` narrows who is mailed, and `should_stop` is checked between messages.
    """
    now = now or utcnow()
    report = SendReport(on_outcome=on_outcome)
    renderer = renderer or Renderer(env.base_url, env.templates)
    planner = Planner(config, store, now)
    secret = secret_key(env, store)
    edition = edition or f"send-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    chosen = [s for s in (config.subscribers if subscribers is None else subscribers) if not s.paused and (only is None or s.email.lower() == only.lower())]
    with _lock(store.path):
        paused = store.paused()
        report.paused = [paused[s.email.lower()] for s in chosen if s.email.lower() in paused]
        active = [s for s in chosen if s.email.lower() not in paused]
        if dry_run:
            for subscriber in active:
                digest = planner.next_digest(subscriber)
                if digest is not None:
                    report.add(Outcome(subscriber.email, digest.count, "dry-run", renderer.render(digest).subject))
            return report
        report.uncertain = store.recover_interrupted(now=now)
        courier = _Courier(env, store, transport, report, _Letters(env, renderer, secret), should_stop)
        try:
            wanted = {s.email.lower(): s for s in active}
            present = {s.email.lower() for s in config.subscribers}
            for row in store.deliveries(("pending", "deferred")):
                if row["subscriber"] not in present:  # gone from the config: close the row, so `status` drops it and its papers are free should they return
                    store.mark_failed(row["edition"], row["subscriber"], "no longer subscribed", hard=False, pause_after=env.pause_after_failures, now=now)
                    continue
                subscriber = wanted.get(row["subscriber"])
                if subscriber is not None and courier.running:
                    courier.offer(row["edition"], subscriber, planner.resumed_digest(subscriber, json.loads(row["paper_ids"])))
            for subscriber in active:
                if not courier.running:
                    break
                digest = planner.next_digest(subscriber)
                if digest is not None:
                    courier.offer(edition, subscriber, digest, plan=now)
            courier.finish()
        finally:
            courier.close()
    return report


RETRIES_IN_RUN = 2  # after the first try, a temporarily refused row is tried this many more times in the same run
SERVER_DOWN_AFTER = 20  # sessions refused in a row (cannot connect, 421 at greeting) before a run stops claiming rows


@dataclass
class _Row:
    """A claimed ledger row and its ready message, while the pool has it."""

    edition: str
    subscriber: Subscriber
    papers: int
    letter: Letter
    attempts: int = 0
    tries: int = 0  # in this run


@dataclass
class _Letters:
    """Turns a digest into the personalised, sealed message for one subscriber."""

    env: Env
    renderer: Renderer
    secret: str
    signer: Signer | None = field(init=False)
    stationery: LRUCache[str, Stationery] = field(init=False, default_factory=lambda: LRUCache(CACHED_DIGESTS))  # by digest key, as the renderer caches

    def __post_init__(self) -> None:
        self.signer = Signer.from_env(self.env)

    def make(self, subscriber: Subscriber, digest: Digest) -> Letter:
        rendered = self.renderer.render(digest)
        key = digest.key
        stationery = self.stationery.get(key)
        if stationery is None:
            stationery = self.stationery[key] = Stationery(self.env.from_address, rendered.subject, self.env.list_id, rendered.text, rendered.html, rendered.placeholders.names)
        reader = reader_for(subscriber, self.secret)
        headers = Headers(
            to=_address(subscriber),
            subject=rendered.subject,
            unsubscribe_url=f"{self.env.base_url}/unsubscribe/{reader.unsubscribe_token}",
            list_id=self.env.list_id,
            unsubscribe_mailto=self.env.unsubscribe_mailto,
        )
        return stationery.letter(headers, rendered.placeholders.values(reader), self.signer)


class _Courier:
    """The main thread's side of the pool: claims rows, hands them out, and writes every answer to the ledger.

    SQLite is touched from this thread only, so each ledger change stays one short transaction on one
    connection and the workers never wait on the database or on each other's locks.
    """

    def __init__(self, env: Env, store: Store, pool: Pool, report: SendReport, letters: _Letters, should_stop: Callable[[], bool]) -> None:
        self.env = env
        self.should_stop = should_stop
        self.store = store
        self.pool = pool
        self.report = report
        self.letters = letters
        self.in_flight = 0
        self.retries: list[tuple[float, int, _Row]] = []  # heap of (due, tiebreak, row)
        self.unreachable = 0  # server-side temporary errors since the server last answered about a reader

    @property
    def running(self) -> bool:
        """False once asked to stop, or once the server refused the session for good (TLS, login): claim no more rows."""
        return self.report.error is None and not self.should_stop()

    def offer(self, edition: str, subscriber: Subscriber, digest: Digest | None, plan: datetime | None = None) -> None:
        """Send one row: an existing one, or with `plan` a new row for this digest, recorded and claimed in one transaction."""
        if digest is None:
            if self.store.claim(edition, subscriber.email) is not None:
                reply = "nothing left to send: the papers are no longer stored"
                self.store.mark_failed(edition, subscriber.email, reply, hard=False, pause_after=self.env.pause_after_failures)
                self.report.add(Outcome(subscriber.email, 0, "failed", reply))
            return
        row = _Row(edition, subscriber, digest.count, self.letters.make(subscriber, digest))
        self._dispatch(row, None if plan is None else (digest.covered_ids, plan))

    def finish(self) -> None:
        """Wait for every answer, retrying temporary refusals with backoff, until no row is left in flight."""
        while self.in_flight or self.retries:
            if self.retries and self.retries[0][0] <= time.monotonic():
                self._dispatch(heapq.heappop(self.retries)[2])
                continue
            wait = 0.5 if not self.retries else max(0.0, min(0.5, self.retries[0][0] - time.monotonic()))
            self._collect(wait if self.in_flight else None, sleep=wait)

    def close(self) -> None:
        """Stop the workers and record what they finished, so no row is left in `sending` by an error here."""
        self.pool.close()
        while self.in_flight and (result := self.pool.get(0)) is not None:
            self._record(result)
        for _, _, row in self.retries:
            self.report.add(Outcome(row.subscriber.email, row.papers, "deferred", "retry left for the next run"))
        self.retries = []

    def _dispatch(self, row: _Row, plan: tuple[list[str], datetime] | None = None) -> None:
        """Claim a row (first try or retry) only once a connection is free and its answer recorded, so a crash leaves at most `pool.size` rows in `sending`."""
        while self.in_flight >= self.pool.size:  # one message in flight per connection, so a stop waits for few
            self._collect(None)
        if not self.running:
            if row.tries:  # refused earlier in this run: it ends deferred; an untried row just waits for the next run
                self.report.add(Outcome(row.subscriber.email, row.papers, "deferred", self.report.error or "stopped; left for the next run"))
            return
        with self.store.transaction():  # never held while waiting for the pool: the web app may be writing too
            # a new row (`plan`: its papers and planning time) is recorded and claimed together; False: this edition already has one
            planned = plan is None or self.store.plan_delivery(row.edition, row.subscriber.email, *plan)
            claimed = planned and self._claim(row)
        if claimed:
            self.pool.put(Job(row, row.letter))
        self._collect(0)

    def _claim(self, row: _Row) -> bool:
        """Move the row to `sending` and count it in flight; False (and nothing to send) when the row is not claimable."""
        attempts = self.store.claim(row.edition, row.subscriber.email)
        if attempts is None:
            return False
        row.attempts = attempts
        row.tries += 1
        self.in_flight += 1
        return True

    def _collect(self, timeout: float | None, sleep: float = 0.0) -> None:
        """Record every available answer, waiting up to `timeout` for the first (None: until one comes)."""
        if timeout is None and not self.in_flight:
            time.sleep(sleep)
            return
        results = []
        result = self.pool.get(timeout)
        while result is not None:
            results.append(result)
            result = self.pool.get(0)
        with self.store.transaction():  # one commit for every answer at hand: each row's change is still all-or-nothing
            for result in results:
                self._record(result)

    def _record(self, result: Result) -> None:
        self.in_flight -= 1
        row = result.job.tag
        assert isinstance(row, _Row)
        email, error = row.subscriber.email, result.error
        self.unreachable = self.unreachable + 1 if error is not None and error.server else 0
        if self.unreachable >= SERVER_DOWN_AFTER and self.running:
            self.report.error = f"the server kept refusing the session ({self.unreachable} times in a row); stopped until the next run: {result.reply}"
        if error is None:
            self.store.mark_sent(row.edition, email, row.letter.message_id, result.reply)
            self._outcome(row, "sent", result.reply)
        elif error.server and not error.temporary:
            self.store.mark_deferred(row.edition, email, error.reply, counted=False)
            self.report.error = self.report.error or error.reply
            self._outcome(row, "deferred", error.reply)
        elif error.temporary:
            self.store.mark_deferred(row.edition, email, error.reply, counted=not error.server)
            if not error.server and row.attempts >= self.env.smtp_max_attempts:
                reply = f"gave up after {row.attempts} attempts: {error.reply}"
                self.store.mark_failed(row.edition, email, reply, hard=False, pause_after=self.env.pause_after_failures)
                self._outcome(row, "failed", reply)
            elif row.tries <= RETRIES_IN_RUN and self.running:
                due = time.monotonic() + self.env.smtp_retry_delay * 2 ** (row.tries - 1)
                heapq.heappush(self.retries, (due, id(row), row))
            else:
                self._outcome(row, "deferred", error.reply)
        else:
            paused = self.store.mark_failed(row.edition, email, error.reply, hard=True, pause_after=self.env.pause_after_failures)
            detail = error.reply + (f"; subscriber paused after {self.env.pause_after_failures} hard refusals in a row" if paused else "")
            self._outcome(row, "failed", detail)

    def _outcome(self, row: _Row, status: str, detail: str) -> None:
        self.report.add(Outcome(row.subscriber.email, row.papers, status, detail))
        log.log(logging.INFO if status == "sent" else logging.WARNING, "%s %s: %s", status, row.subscriber.email, detail)


def _address(subscriber: Subscriber) -> Address:
    local, _, domain = subscriber.email.rpartition("@")
    return Address(display_name=subscriber.name, username=local, domain=domain)


@contextmanager
def _lock(db_path: Path) -> Iterator[None]:
    """One sender at a time per database, so two runs never claim each other's rows as interrupted."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"another newsletter send is running (lock {lock_path})") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
