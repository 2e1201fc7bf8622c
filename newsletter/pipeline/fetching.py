"""Fetching every source concurrently; a broken source is recorded and never stops the others."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from newsletter.environment import Env
from newsletter.errors import FetchError, SourceError
from newsletter.ingest.fetch import Fetcher, Policy, Request, user_agent
from newsletter.ingest.sources import first_urls, parse
from newsletter.model.config import Config, Source
from newsletter.model.paper import Paper, merge
from newsletter.model.ranking import window_hours
from newsletter.model.wording import counted
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

log = logging.getLogger("newsletter")
ARXIV_API_INTERVAL = 3.0  # seconds between requests to the arXiv API, as its terms of use ask
ARXIV_HOSTS = ("export.arxiv.org", "rss.arxiv.org")  # paced at ARXIV_API_INTERVAL even when no API source names them
ARXIV_ZONE = ZoneInfo("America/New_York")


@dataclass
class SourceResult:
    """How one source's fetch went."""

    name: str
    papers: int = 0
    new: int = 0
    not_modified: bool = False
    error: str | None = None  # the source failed: nothing from it this time
    warning: str | None = None  # fetched, but likely not as meant (an empty feed on a day it publishes)


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
        keep_hours = window_hours(config.topics.values())  # snapshots of the figures seen, for `sort: rising`
        return list(await asyncio.gather(*(_fetch_one(fetcher, source, store, now, keep_hours) for source in config.sources)))


async def _fetch_one(fetcher: Fetcher, source: Source, store: Store, now: datetime, keep_hours: int) -> SourceResult:
    result = SourceResult(source.name)
    started = time.monotonic()
    try:
        papers, entries, validators, result.not_modified = await _download(fetcher, source, store, now)
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
    store.record_popularity(papers, now, keep_hours)
    result.new = added.new
    for url, (etag, last_modified) in validators.items():
        store.save_validators(url, etag, last_modified, now)
    if not result.not_modified and entries == 0 and not _may_be_empty(source, now):
        result.warning = "the feed listed no entries at all: check its url (or its query)"
        log.warning("source %s: %s", source.name, result.warning)
    store.source_succeeded(source.name, added.fresh, now, result.warning)
    state = "not modified" if result.not_modified and not papers else f"{counted(result.papers, 'paper')}, {result.new} new"
    log.info("source %s: %s (%.1f s)", source.name, state, time.monotonic() - started)
    return result


def _may_be_empty(source: Source, now: datetime) -> bool:
    """Whether an empty answer is expected: Hugging Face's list for a day fills during that day, and arXiv announces
    nothing on Saturday and Sunday (US Eastern)."""
    return source.type == "hf_daily" or (source.type == "arxiv_rss" and now.astimezone(ARXIV_ZONE).weekday() >= 5)


async def _download(fetcher: Fetcher, source: Source, store: Store, now: datetime) -> tuple[list[Paper], int, dict[str, tuple[str | None, str | None]], bool]:
    """All pages of a source, and how many entries they listed; validators are returned, not saved, so they are kept
    only once the papers are stored."""
    papers: dict[str, Paper] = {}  # by id: pages and days may overlap
    entries = 0
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
            entries += parsed.entries
            for paper in parsed.papers:
                papers[paper.id] = merge(papers[paper.id], paper) if paper.id in papers else paper
            validators[url] = (response.etag, response.last_modified)
            url = parsed.next_url  # the next page waits its turn in the fetcher's per-host interval
    return list(papers.values()), entries, validators, unchanged


def _explain(source: Source, error: FetchError, url: str) -> str:
    """An HTTP error's reason, with the arXiv API's own explanation when its error document gives one."""
    if source.type == "arxiv_api" and error.body:
        try:
            parse(source, error.body, url)
        except SourceError as reason:
            return f"{error}: {reason}"
    return str(error)
