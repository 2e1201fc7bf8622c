"""The daemon: fetch timers, send ticks, config reloads, and a clean stop on SIGTERM."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsletter import config as config_mod
from newsletter import pipeline, subscriptions
from newsletter.environment import Env
from newsletter.inbound import imap
from newsletter.mail.pool import transport as make_transport
from newsletter.model.config import Config, Subscriber
from newsletter.model.wording import counted
from newsletter.pipeline.planning import everyones_matcher
from newsletter.pipeline.stopping import stop_on_signals
from newsletter.scheduler.slots import decide, edition_for
from newsletter.storage.database import utcnow
from newsletter.storage.store import Store

log = logging.getLogger("newsletter.scheduler")


class _QuietSkips(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances reached": with short ticks a send or a
    reload often outlasts its interval, and the next run simply follows it (coalesced), so the line is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_QuietSkips())
ARXIV_TYPES = ("arxiv_rss", "arxiv_api")


# arXiv announces Sunday to Thursday at 20:00 US Eastern; its feeds carry the new listing shortly after midnight there.
ARXIV_FETCH = {"day_of_week": "mon-fri", "hour": 0, "minute": 30, "timezone": "America/New_York"}
WATCH_SECONDS = 2.0  # how often subscribers.yaml is checked for edits
PRUNE_AT = {"hour": 3, "minute": 40, "timezone": "UTC"}  # `newsletter prune` once a day, between arXiv's fetch and most readers' send times


# the daemon


class Clock:
    """The daemon's clock: real time, or real time shifted so it read `start` when the daemon began (--clock)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.offset = (start - utcnow()) if start else timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset


class Daemon:
    """Fetches on schedule, sends each slot's batch, reloads the config when it changes, stops cleanly on a signal."""

    def __init__(self, config: Config, env: Env, clock: Clock | None = None, tick: float = 20.0, dry_run: bool = False) -> None:
        self.config = config
        self.env = env
        self.clock = clock or Clock()
        self.tick_seconds = tick
        self.dry_run = dry_run  # a rehearsal: each slot's digests are rendered and logged, nothing is sent or recorded
        self.rehearsed: dict[str, tuple[datetime, str]] = {}  # in a rehearsal, the slots handled so far, kept in memory only
        self.stopping = threading.Event()
        self.watcher = config_mod.ConfigWatcher(config.path, config)
        self.warned: set[tuple[str, str]] = set()  # the config's warnings logged so far, by field and message (lines move)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1), "send": ThreadPoolExecutor(1), "fetch": ThreadPoolExecutor(1), "inbound": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    def run(self) -> int:
        """Fetch once, then run the schedule until SIGTERM/SIGINT; 0 once the message in flight is done."""
        with stop_on_signals(self.stopping):
            return self._run()

    def _run(self) -> int:
        log.info(
            "newsletter run%s: %d sources, %d subscribers, tick %g s",
            " (rehearsal: nothing is sent or recorded)" if self.dry_run else "",
            len(self.config.sources),
            len(self.config.subscribers),
            self.tick_seconds,
        )
        self._warn(self.config)
        self.fetch(None)  # a restart's catch-up digests should hold what was published meanwhile
        if not self.stopping.is_set():
            self._schedule_fetches()
            self.scheduler.add_job(self.tick, IntervalTrigger(seconds=self.tick_seconds), id="tick", executor="send", next_run_time=datetime.now(UTC))
            self.scheduler.add_job(self.watch, IntervalTrigger(seconds=min(WATCH_SECONDS, self.tick_seconds)), id="watch")
            if not self.dry_run:  # on the send thread: it never holds the database while a batch is sent
                self.scheduler.add_job(self.prune, CronTrigger(**PRUNE_AT), id="prune", executor="send")
            mailbox = subscriptions.imap_settings(self.env)
            if mailbox is not None:
                every = IntervalTrigger(seconds=self.env.poll_seconds)
                self.scheduler.add_job(self.read_mailbox, every, args=[mailbox], id="inbound", executor="inbound", next_run_time=datetime.now(UTC))
            self.scheduler.start()
            self.stopping.wait()
            self.scheduler.shutdown(wait=True)
        log.info("newsletter run: stopped")
        return 0

    def _schedule_fetches(self) -> None:
        """arXiv sources after each announcement; every other source every `settings.fetch_every` minutes."""
        arxiv = tuple(s.name for s in self.config.sources if s.type in ARXIV_TYPES)
        other = tuple(s.name for s in self.config.sources if s.type not in ARXIV_TYPES)
        for job_id, names, trigger in (
            ("fetch-arxiv", arxiv, CronTrigger(**ARXIV_FETCH)),
            ("fetch-other", other, IntervalTrigger(minutes=self.config.settings.fetch_every)),
        ):
            if self.scheduler.get_job(job_id):
                self.scheduler.remove_job(job_id)
            if names:
                self.scheduler.add_job(self.fetch, trigger, args=[names], id=job_id, executor="fetch")

    def fetch(self, names: tuple[str, ...] | None) -> None:
        """Fetch these sources (None: all) and log one summary line."""
        config = self.config
        if names is not None:
            config = dataclasses.replace(config, sources=tuple(s for s in config.sources if s.name in names))
        started = time.monotonic()
        try:
            with Store(self.env.db, self.env.db_timeout) as store:
                results = pipeline.fetch(config, self.env, store, now=utcnow() if self.dry_run else self.clock.now())
                line = (
                    f"fetch: {counted(len(results), 'source')}, {counted(sum(r.new for r in results), 'paper')} new, "
                    f"{sum(1 for r in results if r.error)} failed, {time.monotonic() - started:.1f} s"
                )
                store.set_meta("run.last_fetch", f"{self.clock.now():%Y-%m-%d %H:%M} UTC: {line}")
        except Exception:
            log.exception("fetch failed")
            return
        log.info("%s", line)  # each failing source is also named by pipeline.fetch, at warning level

    def prune(self) -> None:
        """Remove what no guarantee needs any more (`newsletter prune`), and log what went."""
        started = time.monotonic()
        try:
            with Store(self.env.db, self.env.db_timeout) as store:
                _, pruned = pipeline.prune(self.config, self.env, store, self.clock.now())
        except Exception:
            log.exception("prune failed")
            return
        log.info("prune: %s, %.1f s", ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in pruned.items()), time.monotonic() - started)

    def tick(self) -> None:
        """Send every subscriber who is due now, one batch per slot."""
        now = self.clock.now()
        config = self.config
        grace = timedelta(hours=config.settings.catch_up_hours)
        try:
            with Store(self.env.db, self.env.db_timeout) as store:
                handled = store.handled_slots() | self.rehearsed
                batches: dict[datetime, list[Subscriber]] = {}
                for subscriber in config.subscribers:
                    last = handled.get(subscriber.email.lower())
                    decision = decide(subscriber, now, last[0] if last else None, grace, missed=last is not None and last[1] == "missed")
                    if decision is None:
                        continue
                    if decision.action == "missed":
                        self._handled(store, subscriber.email, decision.slot, "missed", now)
                        (log.warning if last else log.debug)(
                            "%s: slot %s passed more than %d h ago; its papers wait for the next slot",
                            subscriber.email,
                            edition_for(decision.slot),
                            config.settings.catch_up_hours,
                        )
                        continue
                    batches.setdefault(decision.slot, []).append(subscriber)
                held = everyones_matcher(config) if batches else None  # every reader's rules compiled once for this tick's batches
                for slot, subscribers in sorted(batches.items(), key=lambda item: item[0]):
                    if self.stopping.is_set():
                        break
                    self.send_batch(store, config, slot, subscribers)
                del held  # and let go until the next tick: a daemon at 100,000 readers holds them only while it sends
        except Exception:
            log.exception("send tick failed")

    def send_batch(self, store: Store, config: Config, slot: datetime, subscribers: list[Subscriber]) -> None:
        """One pipeline.send for everyone due at this slot, then mark the slot handled for those it reached."""
        started = time.monotonic()
        edition = edition_for(slot)
        try:
            report = pipeline.send(
                config,
                self.env,
                store,
                make_transport(self.env.smtp, self.env.outbox, self.env.pool, self.env.dkim),
                now=self.clock.now(),
                edition=edition,
                subscribers=subscribers,
                should_stop=self.stopping.is_set,
                dry_run=self.dry_run,
                workers=self.env.send_workers,
            )
        except RuntimeError as exc:  # another `newsletter send` holds the lock: try again next tick
            log.warning("%s: %s", edition, exc)
            return
        outcomes = {o.email.lower(): o.status for o in report.outcomes}
        for o in report.outcomes if self.dry_run else ():
            log.info("rehearsal %s: %s would get %s: %s", edition, o.email, counted(o.papers, "paper"), o.detail)
        for subscriber in subscribers:
            outcome = outcomes.get(subscriber.email.lower())
            if outcome is not None or not self.stopping.is_set():  # a stop leaves the rest due, for the restart
                self._handled(store, subscriber.email, slot, outcome or "nothing-new", self.clock.now())
        line = (
            f"send {edition}: {len(subscribers)} due, {counted(len(report.outcomes), 'digest')}, {report.count('sent')} sent, "
            f"{report.count('deferred')} deferred, {report.count('failed')} failed, {time.monotonic() - started:.1f} s"
        )
        if not self.dry_run:
            store.set_meta("run.last_send", f"{self.clock.now():%Y-%m-%d %H:%M} UTC: {line}")
        log.info("%s%s", "rehearsal " if self.dry_run else "", line)

    def _handled(self, store: Store, email: str, slot: datetime, outcome: str, now: datetime) -> None:
        """Mark a subscriber's slot handled: in the database, or in a rehearsal only in memory."""
        if self.dry_run:
            self.rehearsed[email.lower()] = (slot, outcome)
        else:
            store.record_slot(email, slot, outcome, now)

    def read_mailbox(self, settings: imap.ImapSettings) -> int:
        """Handle the mail that came back to INBOUND_IMAP_FOLDER, moving each message on; a failure is logged and tried at the next poll."""
        try:
            with Store(self.env.db, self.env.db_timeout) as store:
                handler = subscriptions.inbound_handler(self.env, self.config, store)

                def handle(source: str, data: bytes) -> None:
                    outcome = handler.handle(source, data)
                    log.info("inbound %s: %s %s: %s", outcome.source, outcome.kind, ", ".join(outcome.recipients) or "-", outcome.action)

                return imap.poll(settings, handle)
        except Exception:
            log.exception("reading the mailbox %s:%d failed; trying again in %g s", settings.host, settings.port, self.env.poll_seconds)
            return 0

    def _warn(self, config: Config) -> None:
        """Log the config's warnings (a comma inside a keyword) once each: a reload for another edit does not repeat them."""
        current = {(w.path, w.message): w for w in config.warnings}
        for key, warning in current.items():
            if key not in self.warned:
                log.warning("%s", warning)
        self.warned = set(current)

    def watch(self) -> None:
        """Reload subscribers.yaml when it changes; an invalid edit keeps the last good config and logs every problem."""
        problems = self.watcher.poll()
        if problems is None:
            return
        if problems:
            for problem in problems:
                log.error("%s", problem)
            log.error("%s: %d problem%s; keeping the last good config", self.config.path, len(problems), "s" if len(problems) != 1 else "")
            return
        fresh = self.watcher.config
        old, self.config = self.config, fresh
        log.info("reloaded %s: %d sources, %d topics, %d subscribers", fresh.path, len(fresh.sources), len(fresh.topics), len(fresh.subscribers))
        self._warn(fresh)
        if (old.sources, old.settings.fetch_every) != (fresh.sources, fresh.settings.fetch_every):
            self._schedule_fetches()
            added = tuple(s.name for s in fresh.sources if s not in old.sources)
            if added:
                self.scheduler.add_job(self.fetch, args=[added], executor="fetch")  # now, not at the next timer
