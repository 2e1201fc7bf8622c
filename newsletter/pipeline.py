"""One cycle of the product: fetch every source, then compose, render and deliver each subscriber's digest."""

from __future__ import annotations

import asyncio
import fcntl
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

from . import tokens
from .config import Config, Subscriber
from .digest import Digest, all_topics, compose, match_all
from .environment import Env
from .fetch import FetchError, Fetcher, Policy, Request, user_agent
from .mailer import DeliveryError, Headers, Transport, build_message
from .papers import Paper, merge
from .render import Reader, Renderer
from .sources import Source, SourceError, first_urls, parse
from .store import Store, utcnow
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

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def exit_code(self) -> int:
        """2 when some deliveries did not go through, per the contract."""
        return 2 if self.count("failed") or self.count("deferred") else 0


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
    result.new = store.add_papers(papers, now, replace=source.replace)
    for url, (etag, last_modified) in validators.items():
        store.save_validators(url, etag, last_modified)
    store.source_succeeded(source.name, result.new, now)
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
    transport: Transport,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    only: str | None = None,
    renderer: Renderer | None = None,
    edition: str | None = None,
    subscribers: Sequence[Subscriber] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SendReport:
    """Deliver every active subscriber's digest through the ledger; papers are marked sent only once accepted.

    The scheduler passes the slot's `edition` name (so a restart in the same slot finds the slot's rows and never
    sends a second digest for it), the batch of `subscribers` due, and `should_stop`, checked between messages.
    """
    now = now or utcnow()
    report = SendReport()
    renderer = renderer or Renderer(env.base_url, env.templates)
    planner = Planner(config, store, now)
    secret = secret_key(env, store)
    edition = edition or f"send-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    candidates = config.subscribers if subscribers is None else subscribers
    batch = [s for s in candidates if not s.paused and (only is None or s.email.lower() == only.lower())]
    wanted = {s.email.lower(): s for s in batch}
    with _lock(store.path):
        if not dry_run:
            store.recover_interrupted()
            for row in store.deliveries(("pending", "deferred")):
                subscriber = wanted.get(row["subscriber"])
                if subscriber is not None and not should_stop():
                    _deliver(row["edition"], subscriber, planner, renderer, transport, store, env, secret, report, resume=True)
        for subscriber in batch:
            if should_stop():
                break
            digest = planner.next_digest(subscriber)
            if digest is None:
                continue
            if dry_run:
                report.outcomes.append(Outcome(subscriber.email, digest.count, "dry-run", renderer.render(digest).subject))
                continue
            store.plan_delivery(edition, subscriber.email, digest.covered_ids, now)
            _deliver(edition, subscriber, planner, renderer, transport, store, env, secret, report, resume=False, digest=digest)
    transport.close()
    return report


def _deliver(
    edition: str,
    subscriber: Subscriber,
    planner: Planner,
    renderer: Renderer,
    transport: Transport,
    store: Store,
    env: Env,
    secret: str,
    report: SendReport,
    *,
    resume: bool,
    digest: Digest | None = None,
) -> None:
    """Claim one ledger row, send it, and record the server's answer."""
    paper_ids = store.claim(edition, subscriber.email)
    if paper_ids is None:
        return
    if resume:
        digest = planner.resumed_digest(subscriber, paper_ids)
    if digest is None:
        store.mark_unsent(edition, subscriber.email, "failed", "nothing left to send: the papers are no longer stored")
        return
    rendered = renderer.render(digest)
    reader = Reader(
        email=subscriber.email,
        name=subscriber.name,
        unsubscribe_token=tokens.sign(secret, tokens.UNSUBSCRIBE, subscriber.email),
        preferences_token=tokens.sign(secret, tokens.PREFERENCES, subscriber.email),
    )
    html, text = renderer.personalise(rendered, reader)
    sender = env.from_address
    headers = Headers(
        to=_address(subscriber),
        subject=rendered.subject,
        unsubscribe_url=f"{env.base_url}/unsubscribe/{reader.unsubscribe_token}",
        list_id=f"Paper digest <digest.{sender.domain or 'localhost'}>",
    )
    msg = build_message(sender, headers, text, html)
    try:
        reply = transport.send(msg)
    except DeliveryError as exc:
        status = "deferred" if exc.temporary else "failed"
        store.mark_unsent(edition, subscriber.email, status, exc.reply)
        report.outcomes.append(Outcome(subscriber.email, digest.count, status, exc.reply))
        log.warning("%s %s: %s", status, subscriber.email, exc.reply)
        return
    store.mark_sent(edition, subscriber.email, msg["Message-ID"], reply)
    report.outcomes.append(Outcome(subscriber.email, digest.count, "sent", reply))
    log.info("sent %s: %d papers (%s)", subscriber.email, digest.count, reply)


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
