"""One send: unfinished ledger rows first, then this edition's new digests, one send per SQLite file (spread over
worker processes with `--workers N`)."""

from __future__ import annotations

import logging
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
from newsletter.pipeline.workers import BATCH, Job, Team, send_unfinished
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

log = logging.getLogger("newsletter")


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
    workers: int = 1,
) -> SendReport:
    """Deliver every active subscriber's digest through the ledger; papers are marked sent only once accepted.

    Unfinished rows from earlier runs go first (each exactly once), then this edition's new rows. `edition`
    names the slot (a scheduler passes one per slot, so a restart in the same slot never sends a second digest
    for it; default: one per call), `subscribers` narrows who is mailed, `due` (lower-case addresses) narrows who
    gets a new digest while everyone chosen still has their unfinished rows resumed, and `should_stop` is checked
    between messages. With `workers` above 1 this process plans the rows and that many worker processes send them.
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
        team: Team | None = None
        try:
            wanted = {s.email.lower(): s for s in active}
            present = frozenset({s.email.lower() for s in config.subscribers} - left)
            if workers > 1:  # started first: they get ready while the rows are planned, and take them as they come
                job = Job(config, env, secret, now, tuple(active), present, logging.getLogger().getEffectiveLevel())
                team = Team(job, workers, store, report, should_stop)
            if store.shared or team is not None:  # several senders share the edition: one plans every new row first, each sends the rows it takes
                with store.planning() as planning:
                    _plan(planner, courier, edition, fresh if planning else [], now, team.poll if team else lambda: None)
                fresh = []
            if team is not None:
                team.planned()
                team.wait()
                if team.failure is not None:
                    raise StorageError(team.failure)
            if team is None or (team.lost and courier.running):  # with workers, the rows a killed one took and never claimed
                send_unfinished(store, courier, planner, env, wanted, present, now, store.planning_elsewhere)
            for subscriber in _together(planner, fresh):
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
            if team is not None:
                team.close()
            courier.close(record=recorded)
    return report


def _plan(planner: Planner, courier: Courier, edition: str, fresh: Sequence[Subscriber], now: datetime, between: Callable[[], None]) -> None:
    """Record every new row of the edition for whichever sender takes it, a batch to a transaction (so the senders
    taking rows meanwhile wait on the database lock less), with `between` called after each batch; a stop ends it
    (whoever is not planned yet is still due for the next send). Readers of one selection are planned together, so
    the rows a sender takes share few digests, each composed and rendered once by it."""
    fresh = _together(planner, fresh)
    for start in range(0, len(fresh), BATCH):
        if not courier.running:
            return
        courier.plan(edition, [(s, d) for s in fresh[start : start + BATCH] if (d := planner.next_digest(s)) is not None], now)
        between()


def _together(planner: Planner, readers: Sequence[Subscriber]) -> list[Subscriber]:
    """The readers, those of one selection next to each other (in their order), so that each digest is composed,
    rendered and sent to the connections' processes while it is in their caches, however many selections the
    list has."""
    together: dict[tuple[object, ...], list[Subscriber]] = {}
    for subscriber in readers:
        together.setdefault(planner.selection(subscriber), []).append(subscriber)
    return [subscriber for group in together.values() for subscriber in group]


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
        store.forget_senders()  # any worker registered before this lock was taken is gone with the send that started it
        yield
    finally:
        lock.release()
