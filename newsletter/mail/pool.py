"""A few SMTP connections in worker threads under one rate limit; only the caller touches the database."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import DeliveryError
from newsletter.mail.message import Letter
from newsletter.mail.signing import DkimSettings, Signer
from newsletter.mail.transports import Outbox, Smtp, SmtpSettings, Transport, signed


@dataclass(frozen=True)
class PoolSettings:
    """How many SMTP connections send at once (SMTP_CONNECTIONS) and at most how many messages per second over all of them (SMTP_RATE; None: no limit)."""

    connections: int = 4
    rate: float | None = None


class RateLimiter:
    """At most `rate` messages per second over all connections, spaced evenly; None means no limit."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


@dataclass(frozen=True)
class Job:
    """One claimed ledger row's message, handed to a worker; `tag` lets the caller find its row again."""

    tag: object
    letter: Letter


@dataclass(frozen=True)
class Result:
    """What the server said about one job: a reply line, or the error."""

    job: Job
    reply: str
    error: DeliveryError | None = None


class Pool:
    """A few worker threads, each with its own connection, sending jobs from one queue under one rate limit.

    Only the caller's thread touches the database: workers take jobs and give back results, nothing else.
    """

    def __init__(self, make: Callable[[], Transport], size: int, rate: float | None) -> None:
        self.make = make
        self.size = size
        self.rate = rate
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=size)  # few claimed rows wait: fewer uncertain after a crash
        self._results: queue.Queue[Result] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def put(self, job: Job) -> None:
        if not self._threads:
            limiter = RateLimiter(self.rate)
            self._threads = [threading.Thread(target=self._work, args=(limiter,), name=f"smtp-{i}", daemon=True) for i in range(self.size)]
            for thread in self._threads:
                thread.start()
        self._jobs.put(job)

    def get(self, timeout: float | None = None) -> Result | None:
        """The next result, or None if none came within `timeout` (0 = do not wait)."""
        try:
            return self._results.get(block=timeout != 0, timeout=timeout or None)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop the workers after the queued jobs; each closes its connection. The pool can be used again."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _work(self, limiter: RateLimiter) -> None:
        try:
            transport = self.make()
        except Exception as exc:  # e.g. a key file gone: without a transport, answer every job rather than leave the run waiting
            error = DeliveryError(f"cannot set up the connection: {type(exc).__name__}: {exc}", temporary=False, server=True)
            while (job := self._jobs.get()) is not None:
                self._results.put(Result(job, error.reply, error))
            return
        try:
            while (job := self._jobs.get()) is not None:
                limiter.wait()
                try:
                    self._results.put(Result(job, transport.send(job.letter)))
                except DeliveryError as exc:
                    self._results.put(Result(job, exc.reply, exc))
                except Exception as exc:  # a bug must not strand the row in `sending` while the run waits for it
                    self._results.put(Result(job, f"unexpected {type(exc).__name__}: {exc}", DeliveryError(str(exc), temporary=True, server=True)))
        finally:
            transport.close()


def transport(smtp: SmtpSettings | None, outbox: Path, pool: PoolSettings, dkim: DkimSettings | None) -> Pool:
    """`pool.connections` SMTP connections at `pool.rate`, or one writer into the outbox folder when there are no SMTP settings.

    The DKIM key is read once here; each worker signs the messages it sends, off the thread that composes them."""
    signer = Signer.from_settings(dkim)
    if smtp is not None:
        return Pool(lambda: signed(Smtp(smtp), signer), pool.connections, pool.rate)
    return Pool(lambda: signed(Outbox(outbox), signer), 1, None)
