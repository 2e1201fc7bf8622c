"""One send: unfinished ledger rows first, then this edition's new digests, one sender per database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from filelock import FileLock, Timeout

from newsletter.environment import Env
from newsletter.errors import SendInProgress, StorageError
from newsletter.mail.pool import Pool
from newsletter.mail.render import Renderer
from newsletter.model.config import Config, Subscriber
from newsletter.pipeline.courier import Courier, Letters
from newsletter.pipeline.planning import Planner, secret_key
from newsletter.pipeline.report import Outcome, SendReport
from newsletter.storage.database import utcnow
from newsletter.storage.ledger import Delivery
from newsletter.storage.store import Store

log = logging.getLogger("newsletter")
BATCH = 50  # unfinished rows a sender takes at a time


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
    due: Collection[str] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> SendReport:
    """Deliver every active subscriber's digest through the ledger; papers are marked sent only once accepted.

    Unfinished rows from earlier runs go first (each exactly once), then this edition's new rows. `edition`
    names the slot (a scheduler passes one per slot, so a restart in the same slot never sends a second digest
    for it; default: one per call), `subscribers` narrows who is mailed, `due` (lower-case addresses) narrows who
    gets a new digest while everyone chosen still has their unfinished rows resumed, and `should_stop` is checked
    between messages.
    """
    now = now or utcnow()
    report = SendReport(on_outcome=on_outcome)
    renderer = renderer or Renderer(env.base_url, env.templates)
    planner = Planner(config, store, now)
    secret = secret_key(env, store)
    edition = edition or f"send-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    chosen = [s for s in (config.subscribers if subscribers is None else subscribers) if not s.paused and (only is None or s.email.lower() == only.lower())]
    with _lock(store):
        left = store.unsubscribed()  # unsubscribed in the app: never mailed, even before (or without) their line leaving the YAML
        if any(s.email.lower() in left for s in chosen):
            log.info("skipping %d unsubscribed address(es) still listed in the config", sum(1 for s in chosen if s.email.lower() in left))
        chosen = [s for s in chosen if s.email.lower() not in left]
        paused = store.paused()
        report.paused = [paused[s.email.lower()] for s in chosen if s.email.lower() in paused]
        active = [s for s in chosen if s.email.lower() not in paused]
        fresh = active if due is None else [s for s in active if s.email.lower() in due]
        if dry_run:
            for subscriber in fresh:
                digest = planner.next_digest(subscriber)
                if digest is not None:
                    rendered = renderer.render(digest)
                    report.add(Outcome(subscriber.email, rendered.digest.count, "dry-run", rendered.subject, digest.total))
            return report
        report.uncertain, given_up = store.recover_interrupted_rows(now=now)
        for row in given_up:  # a crash loop on these rows: failed, their papers kept as offered; `status` lists them
            report.add(
                Outcome(
                    row.subscriber,
                    row.layout.shown if row.layout else len(row.paper_ids),
                    "failed",
                    row.last_reply or "interrupted while sending",
                    len(row.paper_ids),
                )
            )
        courier = Courier(env, store, transport, report, Letters(env, renderer, secret, store.link_versions()), should_stop)
        recorded = True
        try:
            wanted = {s.email.lower(): s for s in active}
            present = {s.email.lower() for s in config.subscribers} - left
            if store.shared:  # several senders share this store: one plans every new row first, each sends the rows it takes
                with store.planning() as planning:
                    for subscriber in fresh if planning else ():
                        digest = planner.next_digest(subscriber)
                        if digest is not None:
                            courier.plan(edition, subscriber, digest, now)
                fresh = []
            for row in _unfinished(store, courier):
                if row.subscriber not in present:  # gone from the config: close the row, so `status` drops it and its papers are free should they return
                    store.mark_failed(row.edition, row.subscriber, "no longer subscribed", hard=False, pause_after=env.pause_after_failures, now=now)
                    continue
                resumed = wanted.get(row.subscriber)
                if resumed is not None and courier.running:
                    courier.offer(row.edition, resumed, planner.resumed_digest(resumed, list(row.paper_ids)), stored=row.layout)
            for subscriber in fresh:
                if not courier.running:
                    break
                digest = planner.next_digest(subscriber)
                if digest is not None:
                    courier.offer(edition, subscriber, digest, plan=now)
            courier.finish()
        except StorageError as exc:  # the ledger cannot be written: stop, and say how much was sent and recorded
            recorded = False
            exc.sent = report.count("sent")
            raise
        finally:
            courier.close(record=recorded)
    return report


def _unfinished(store: Store, courier: Courier) -> Iterator[Delivery]:
    """Unfinished rows a batch at a time, each taken by one sender only; on a shared store, while another sender is
    still planning, also the rows it has yet to plan."""
    while courier.running:
        batch = store.take_unfinished(BATCH)
        if batch:
            yield from batch
        elif store.planning_elsewhere():
            time.sleep(0.1)
        else:
            return


@contextmanager
def _lock(store: Store) -> Iterator[None]:
    """One sender at a time per SQLite file, so two runs never claim each other's rows as interrupted (on PostgreSQL
    each row in `sending` names the connection that has it, and several senders share the work)."""
    if store.path is None:
        yield
        return
    lock_path = store.path.with_name(store.path.name + ".lock")
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise SendInProgress(f"another newsletter send is running (lock {lock_path})") from exc
    try:
        yield
    finally:
        lock.release()
