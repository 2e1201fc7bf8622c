"""What `newsletter prune` keeps, from the settings: the horizon, how long an edition's link opens, the rising windows."""

from __future__ import annotations

from datetime import datetime, timedelta

from newsletter.environment import Env
from newsletter.ingest.sources import first_urls
from newsletter.mail import tokens
from newsletter.model.config import Config
from newsletter.model.ranking import window_hours
from newsletter.storage.database import utcnow
from newsletter.storage.pruning import Keep, Pruned
from newsletter.storage.store import Store

HTTP_CACHE_DAYS = 7  # validators of a URL no configured source starts from stay this long after their last save (later pages of a feed)


def keep(config: Config, env: Env, now: datetime) -> Keep:
    """Finished deliveries for as long as their edition's link opens (NEWSLETTER_KEEP_EDITIONS_DAYS), and never less
    than the horizon (dedup reads them that far back) nor INBOUND_SOFT_BOUNCE_DAYS (soft bounces in a row are counted
    over the digests sent that long); papers' bodies NEWSLETTER_KEEP_PAPERS_DAYS, and never less than the horizon
    (the candidates); snapshots as the longest rising window needs."""
    horizon = timedelta(days=config.settings.horizon_days)
    editions = timedelta(days=env.keep_editions_days) if env.keep_editions_days else tokens.edition_max_age(config.settings.horizon_days)
    return Keep(
        deliveries=now - max(editions, horizon, timedelta(days=env.soft_bounce_days)),
        papers=now - max(timedelta(days=env.keep_papers_days), horizon),
        candidates=now - horizon,
        snapshots=now - timedelta(hours=window_hours(config.topics.values())),
        http_cache=now - timedelta(days=HTTP_CACHE_DAYS),
        urls=frozenset(url for source in config.sources for url in first_urls(source, now.date())),
    )


def prune(config: Config, env: Env, store: Store, now: datetime | None = None, *, dry_run: bool = False) -> tuple[Keep, Pruned]:
    """Remove what no guarantee needs (see Store.prune); what was kept, and how much went (or, dry, would go)."""
    now = now or utcnow()
    kept = keep(config, env, now)
    return kept, store.prune(kept, dry_run=dry_run, now=now)
