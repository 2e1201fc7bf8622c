"""The main thread's side of the SMTP pool: claims ledger rows, hands them out, records every answer."""

from __future__ import annotations

import dataclasses
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address

from cachetools import LRUCache

from newsletter.environment import Env
from newsletter.errors import StorageError
from newsletter.mail import verp
from newsletter.mail.message import Draft, Headers, Stationery
from newsletter.mail.pool import Job, Pool, Result
from newsletter.mail.render import CACHED_DIGESTS, Renderer
from newsletter.model.config import Subscriber
from newsletter.model.digest import Digest, Layout, cut_as
from newsletter.pipeline.planning import reader_for
from newsletter.pipeline.report import Outcome, SendReport
from newsletter.storage.ledger import UNCERTAIN_LIMIT
from newsletter.storage.store import Store

log = logging.getLogger("newsletter")
RETRIES_IN_RUN = 2  # after the first try, a temporarily refused row is tried this many more times in the same run
SERVER_DOWN_AFTER = 20  # sessions refused in a row (cannot connect, 421 at greeting) before a run stops claiming rows


@dataclass
class _Row:
    """A claimed ledger row and its ready message, while the pool has it."""

    edition: str
    subscriber: Subscriber
    papers: int  # in the mail
    total: int  # in the edition
    letter: Draft
    stationery: Stationery
    attempts: int = 0
    tries: int = 0  # in this run


@dataclass
class Letters:
    """Turns a digest into the personalised message for one subscriber (the pool's workers sign it)."""

    env: Env
    renderer: Renderer
    secret: str
    link_versions: Mapping[str, int]  # by lower-cased address; absent means 0
    stationery: LRUCache[str, Stationery] = field(init=False, default_factory=lambda: LRUCache(CACHED_DIGESTS))  # by digest key, as the renderer caches

    def layout(self, digest: Digest) -> Layout:
        """The edition this reader's digest makes: their papers, cut as the mail they get is."""
        return cut_as(digest, self.renderer.render(digest).digest).layout

    def make(self, subscriber: Subscriber, digest: Digest, layout: Layout, edition: str) -> tuple[Draft, Stationery]:
        """The mail of `digest`, its edition link opening `layout` for this subscriber, as the reader's draft of the
        digest's stationery (the sending process fills it in); with NEWSLETTER_BOUNCE_ADDRESS its envelope sender
        is this delivery's signed VERP address."""
        rendered = self.renderer.render(digest)
        key = digest.key
        stationery = self.stationery.get(key)
        if stationery is None:
            stationery = self.stationery[key] = Stationery(
                self.env.from_address, rendered.subject, self.env.list_id, rendered.text, rendered.html, rendered.placeholders.names
            )
        reader = reader_for(subscriber, self.secret, self.link_versions.get(subscriber.email.lower(), 0), layout.key)
        headers = Headers(
            to=_address(subscriber),
            subject=rendered.subject,
            unsubscribe_url=f"{self.env.base_url}/unsubscribe/{reader.unsubscribe_token}",
            list_id=self.env.list_id,
            unsubscribe_mailto=self.env.unsubscribe_mailto,
        )
        draft = stationery.draft(key, headers, rendered.placeholders.values(reader))
        if self.env.bounce_address:
            draft = dataclasses.replace(draft, sender=verp.address(self.env.bounce_address, self.secret, edition, subscriber.email))
        return draft, stationery


class Courier:
    """The main thread's side of the pool: claims rows, hands them out, and writes every answer to the ledger.

    SQLite is touched from this thread only, so the workers never wait on the database or on each other's locks.
    Rows ready to go wait in `ready` until connections are free for them; then one transaction records every
    answer at hand and claims as many ready rows as connections those answers freed (`_exchange`). A connection
    freed alone waits for a second, or for a pool's worth of rows built ahead, before rows are claimed: each
    commit is a wait for the disk (synchronous=FULL) longer than a message takes on a fast link, so one per
    message held the main thread, and with it every connection, more than building the message did. When the
    wire is slower than the main thread, rows are built ahead and each freed connection gets one at once.
    """

    def __init__(self, env: Env, store: Store, pool: Pool, report: SendReport, letters: Letters, should_stop: Callable[[], bool]) -> None:
        self.env = env
        self.should_stop = should_stop
        self.store = store
        self.pool = pool
        self.report = report
        self.letters = letters
        self.in_flight = 0
        self.answered: list[Result] = []  # answers taken from the pool, not yet recorded: the next exchange records them first
        self.batch = max(1, pool.size // 2)
        self.ready: deque[tuple[_Row, tuple[Layout, datetime] | None]] = deque()  # built, not yet claimed; with the plan of a new row
        self.retries: list[tuple[float, int, _Row]] = []  # heap of (due, tiebreak, row)
        self.unreachable = 0  # server-side temporary errors since the server last answered about a reader

    @property
    def running(self) -> bool:
        """False once asked to stop, or once the server refused the session for good (TLS, login): claim no more rows."""
        return self.report.error is None and not self.should_stop()

    def offer(self, edition: str, subscriber: Subscriber, digest: Digest | None, plan: datetime | None = None, stored: Layout | None = None) -> None:
        """Send one row: an existing one (with the layout `stored` for it), or with `plan` a new row for this digest,
        recorded and claimed in one transaction. An existing row from before layouts gets the one it goes out as."""
        if digest is None:
            self._fail_alone(edition, subscriber, 0, None, "nothing left to send: the papers are no longer stored")
            return
        layout = stored or self.letters.layout(digest)
        if plan is None and stored is None:
            self.store.attach_layout(edition, subscriber.email, layout)
        planned = None if plan is None else (layout, plan)
        shown = self.letters.renderer.render(digest).digest.count
        try:
            draft, stationery = self.letters.make(subscriber, digest, layout, edition)
        except ValueError as exc:  # InvalidInput and the email package's header errors: this reader's values cannot go into a mail
            self._fail_alone(edition, subscriber, shown, planned, f"cannot build this reader's mail: {exc}")
            return
        self.ready.append((_Row(edition, subscriber, shown, max(layout.total, shown), draft, stationery), planned))
        self._collect(0)
        while len(self.ready) >= self.pool.size and not self.free:  # a pool's worth built ahead and every connection busy: wait for one
            self._collect(None)
        if len(self.ready) >= self.pool.size or len(self.ready) >= self.free >= self.batch:  # enough to fill the free connections: hand them out
            self._exchange(0)

    @property
    def free(self) -> int:
        """Connections with no row: those never given one, and those whose answer has come back."""
        return self.pool.size - self.in_flight + len(self.answered)

    def _collect(self, timeout: float | None) -> None:
        """Take every answer at hand from the pool, waiting up to `timeout` for the first (None: until one comes) unless one is at hand already."""
        result = self.pool.get(0 if self.answered else timeout) if self.in_flight > len(self.answered) else None
        while result is not None:
            self.answered.append(result)
            result = self.pool.get(0) if self.in_flight > len(self.answered) else None

    def plan(self, edition: str, digests: Sequence[tuple[Subscriber, Digest]], now: datetime) -> None:
        """Record new rows for these digests, for whichever sender takes them (a shared store's senders plan ahead):
        their layouts made first, so the one transaction that records them holds the database lock only to write."""
        layouts = [(subscriber.email, self.letters.layout(digest)) for subscriber, digest in digests]
        with self.store.transaction():
            for email, layout in layouts:
                self.store.plan_delivery(edition, email, layout, now)

    def _fail_alone(self, edition: str, subscriber: Subscriber, papers: int, plan: tuple[Layout, datetime] | None, reply: str) -> None:
        """A row that cannot be sent fails on its own, recorded so `status` names it (with `plan`, the new row is
        recorded first); the others are mailed."""
        with self.store.transaction():
            planned = plan is None or self.store.plan_delivery(edition, subscriber.email, *plan)
            if planned and self.store.claim(edition, subscriber.email) is not None:
                self.store.mark_failed(edition, subscriber.email, reply, hard=False, pause_after=self.env.pause_after_failures)
                self.report.add(Outcome(subscriber.email, papers, "failed", reply))
                log.warning("failed %s: %s", subscriber.email, reply)

    def finish(self) -> None:
        """Send the rows still ready and wait for every answer, retrying temporary refusals with backoff, until no row is left."""
        while self.ready or self.in_flight or self.retries:
            if self.retries and self.retries[0][0] <= time.monotonic():
                self.ready.append((heapq.heappop(self.retries)[2], None))
                continue
            if self.ready:
                self._exchange(None if self.in_flight >= self.pool.size else 0)
                continue
            wait = 0.5 if not self.retries else max(0.0, min(0.5, self.retries[0][0] - time.monotonic()))
            self._exchange(wait if self.in_flight else None, sleep=wait)

    def close(self, record: bool = True) -> None:
        """Stop the workers and record what they finished, so no row is left in `sending` by an error here.

        `record=False` when the database itself failed: the answers are dropped, their rows stay in `sending`
        and the next run sends each once more, counted uncertain (waiting on a locked file again would only delay the exit)."""
        self.pool.close()
        self._collect(0)
        for result in self.answered if record else ():
            self._record(result)
        self.answered = []
        left = [row for row, _ in self.ready if row.tries] + [row for _, _, row in self.retries]
        for row in left:
            self.report.add(Outcome(row.subscriber.email, row.papers, "deferred", "retry left for the next run", row.total))
        self.ready.clear()
        self.retries = []

    def _exchange(self, timeout: float | None, sleep: float = 0.0) -> None:
        """Record every available answer (waiting up to `timeout` for the first; None: until one comes) and claim ready
        rows for the connections free then, in one transaction, then hand those rows to the pool.

        A row is claimed only once a connection is free for it and every answer at hand is recorded, so a crash
        leaves at most `pool.size` rows in `sending`; each row's change is still all-or-nothing, and its message
        goes to the pool only after its claim is committed."""
        if timeout is None and not self.in_flight:
            time.sleep(sleep)
            return
        self._collect(timeout)
        results, self.answered = self.answered, []
        if not results and not (self.ready and self.in_flight < self.pool.size):
            return
        recorded, claimed = len(self.report.outcomes), []
        try:
            with self.store.transaction():  # never held while waiting for the pool: the web app may be writing too
                for result in results:
                    self._record(result)
                while self.ready and self.in_flight < self.pool.size:
                    row, plan = self.ready.popleft()
                    if not self.running:
                        if row.tries:  # refused earlier in this run: it ends deferred; an untried row just waits for the next run
                            self.report.add(
                                Outcome(row.subscriber.email, row.papers, "deferred", self.report.error or "stopped; left for the next run", row.total)
                            )
                        continue
                    # a new row (`plan`: its papers and planning time) is recorded and claimed together; False: this edition already has one
                    if (plan is None or self.store.plan_delivery(row.edition, row.subscriber.email, *plan)) and self._claim(row):
                        claimed.append(row)
        except StorageError:
            del self.report.outcomes[recorded:]  # rolled back: these answers are not in the ledger, their rows stay in `sending`
            raise
        for row in claimed:
            self.pool.put(Job(row, row.letter, row.stationery))

    def _claim(self, row: _Row) -> bool:
        """Move the row to `sending` and count it in flight; False (and nothing to send) when the row is not claimable."""
        attempts = self.store.claim(row.edition, row.subscriber.email)
        if attempts is None:
            return False
        row.attempts = attempts
        row.tries += 1
        self.in_flight += 1
        return True

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
        elif error.uncertain:  # the server may have it: counted, sent once more (in this run if retries are left), then given up
            if self.store.mark_uncertain(row.edition, email, error.reply):
                self._outcome(row, "failed", f"{error.reply}; unconfirmed {UNCERTAIN_LIMIT} times, not sent again (the reader may have it)")
            else:
                self._again(row, error.reply, counted=True)
        elif error.server and not error.temporary:
            self.store.mark_deferred(row.edition, email, error.reply, counted=False)
            self.report.error = self.report.error or error.reply
            self._outcome(row, "deferred", error.reply)
        elif error.temporary:
            self.store.mark_deferred(row.edition, email, error.reply, counted=not error.server)
            self._again(row, error.reply, counted=not error.server)
        else:
            paused = self.store.mark_failed(row.edition, email, error.reply, hard=True, pause_after=self.env.pause_after_failures)
            detail = error.reply + (f"; subscriber paused after {self.env.pause_after_failures} hard refusals in a row" if paused else "")
            self._outcome(row, "failed", detail)

    def _again(self, row: _Row, reply: str, *, counted: bool) -> None:
        """A deferred row: failed once a counted try reaches the attempt limit, else retried in this run while retries are left, else left for the next."""
        if counted and row.attempts >= self.env.smtp_max_attempts:
            reply = f"gave up after {row.attempts} attempts: {reply}"
            self.store.mark_failed(row.edition, row.subscriber.email, reply, hard=False, pause_after=self.env.pause_after_failures)
            self._outcome(row, "failed", reply)
        elif row.tries <= RETRIES_IN_RUN and self.running:
            due = time.monotonic() + self.env.smtp_retry_delay * 2 ** (row.tries - 1)
            heapq.heappush(self.retries, (due, id(row), row))
        else:
            self._outcome(row, "deferred", reply)

    def _outcome(self, row: _Row, status: str, detail: str) -> None:
        self.report.add(Outcome(row.subscriber.email, row.papers, status, detail, row.total))
        log.log(logging.INFO if status == "sent" else logging.WARNING, "%s %s: %s", status, row.subscriber.email, detail)


def _address(subscriber: Subscriber) -> Address:
    local, _, domain = subscriber.email.rpartition("@")
    return Address(display_name=subscriber.name, username=local, domain=domain)
