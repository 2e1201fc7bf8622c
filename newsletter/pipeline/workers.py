"""A send spread over processes (`send --workers N`): each takes ledger rows a batch at a time and sends them with its
own store, SMTP pool and renderer; the send's own process plans the rows and sums what they report.

The workers are `spawn`ed: a fresh interpreter inherits no SQLite connection, lock or thread from the parent (the
daemon runs sends from a thread), and gets the parent's very config and settings by pickling. Each talks to the
parent over a pipe of its own, so a worker killed mid-message leaves no lock held that the others would wait on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from newsletter.environment import Env
from newsletter.errors import StorageError
from newsletter.mail.pool import transport as make_transport
from newsletter.mail.render import Renderer
from newsletter.model.config import Config, Subscriber
from newsletter.pipeline.courier import Courier, Letters
from newsletter.pipeline.planning import Planner
from newsletter.pipeline.report import Outcome, SendReport
from newsletter.pipeline.stopping import stop_on_signals
from newsletter.storage.ledger import Delivery
from newsletter.storage.store import Store

log = logging.getLogger("newsletter")
BATCH = 50  # unfinished rows a sender takes at a time
PLANNED = "planned"  # the parent's word to its workers: every new row of the edition is in the ledger


def send_unfinished(
    store: Store,
    courier: Courier,
    planner: Planner,
    env: Env,
    wanted: Mapping[str, Subscriber],
    present: frozenset[str],
    now: datetime,
    more: Callable[[], bool],
) -> None:
    """Take unfinished rows until none are left (while `more` says rows may still come, wait for them) and send
    those of `wanted` readers; a row of someone gone from the config is closed, so `status` drops it."""
    for row in _unfinished(store, courier, more):
        if row.subscriber not in present:  # gone from the config: close the row, so `status` drops it and its papers are free should they return
            store.mark_failed(row.edition, row.subscriber, "no longer subscribed", hard=False, pause_after=env.pause_after_failures, now=now)
            continue
        resumed = wanted.get(row.subscriber)
        if resumed is not None and courier.running:
            courier.offer(row.edition, resumed, planner.resumed_digest(resumed, list(row.paper_ids)), stored=row.layout)


def _unfinished(store: Store, courier: Courier, more: Callable[[], bool]) -> Iterator[Delivery]:
    """Unfinished rows a batch at a time, each taken by one sender only; while `more` (asked before each take, so a
    row recorded before it turned False is still taken) says another is planning, also the rows it has yet to plan."""
    while courier.running:
        waiting = more()
        batch = store.take_unfinished(BATCH)
        if batch:
            yield from batch
        elif waiting:
            time.sleep(0.1)
        else:
            return


@dataclass(frozen=True)
class Job:
    """What every worker of one send is given: the parent's config and settings, and whom it may mail."""

    config: Config
    env: Env  # its SMTP_RATE already this worker's share
    secret: str
    now: datetime
    wanted: tuple[Subscriber, ...]  # readers whose rows are sent
    present: frozenset[str]  # lower-cased addresses still in the config: a row of anyone else is closed
    log_level: int


class Team:
    """The parent's side of `--workers N`: starts the workers, passes their outcomes to the send's report, forgets a
    killed one so the rows it took and never claimed are free again, and stops them all when the send is stopped."""

    def __init__(self, job: Job, size: int, store: Store, report: SendReport, should_stop: Callable[[], bool]) -> None:
        self.store = store
        self.report = report
        self.should_stop = should_stop
        self.stopped = False
        self.lost: list[int] = []  # the ledger numbers of workers that died before finishing (SIGKILL, a crash)
        self.failure: str | None = None  # a worker's storage error: the send ends with it
        self.workers: dict[Connection, int | None] = {}  # by pipe: its ledger number, once it said
        self.seen: list[int] = []  # every worker's ledger number
        self.processes: dict[Connection, BaseProcess] = {}
        spawn = multiprocessing.get_context("spawn")
        share = dataclasses.replace(job, env=dataclasses.replace(job.env, smtp_rate=job.env.smtp_rate / size if job.env.smtp_rate else None))
        self.handing: list[threading.Thread] = []  # each worker's job goes over its pipe while it starts and the rows are planned
        for i in range(size):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(target=work, args=(theirs,), name=f"newsletter-send-{i + 1}", daemon=True)
            process.start()
            theirs.close()
            self.workers[ours] = None
            self.processes[ours] = process
            self.handing.append(threading.Thread(target=_hand, args=(ours, share), name=f"newsletter-job-{i + 1}", daemon=True))
            self.handing[-1].start()

    def planned(self) -> None:
        """Every new row is in the ledger: a worker that finds none left may end."""
        for thread in self.handing:
            thread.join()
        for pipe in self.processes:
            with contextlib.suppress(OSError):  # it died already: poll() forgets it
                pipe.send(PLANNED)

    def poll(self, timeout: float = 0.0) -> None:
        """Take what the workers said (waiting up to `timeout` for the first word), and note those that ended."""
        if self.should_stop():
            self.stop()
        for pipe in wait(list(self.processes), timeout):
            assert isinstance(pipe, Connection)
            try:
                while pipe.poll():
                    self._heard(pipe, pipe.recv())
            except (EOFError, OSError):  # it ended (or was killed mid-word)
                self._ended(pipe)

    def wait(self) -> None:
        """Until every worker has ended."""
        while self.processes:
            self.poll(0.5)

    def stop(self) -> None:
        """SIGTERM to every worker, once: each stops after the messages in flight, as one send would."""
        if not self.stopped:
            self.stopped = True
            for process in self.processes.values():
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGTERM)

    def close(self) -> None:
        """Stop the workers still running (the send failed here) and wait for them; then none counts as a sender."""
        if self.processes:
            self.stop()
            self.wait()
        self.store.forget_senders(self.seen)

    def _heard(self, pipe: Connection, word: tuple[str, object]) -> None:
        kind, value = word
        if kind == "outcome":
            assert isinstance(value, Outcome)
            self.report.add(value)
        elif kind == "worker":
            assert isinstance(value, int)
            self.workers[pipe] = value
            self.seen.append(value)
        elif kind == "error":
            self.report.error = self.report.error or str(value)
        elif kind == "storage":
            self.failure = self.failure or str(value)

    def _ended(self, pipe: Connection) -> None:
        process = self.processes.pop(pipe)
        process.join()
        pipe.close()
        worker = self.workers.pop(pipe)
        if process.exitcode != 0:
            log.warning("send worker %s ended with exit code %s; the rows it took and did not claim are free again", process.name, process.exitcode)
            if worker is not None:
                self.lost.append(worker)
                self.store.forget_senders([worker])


def _hand(pipe: Connection, job: Job) -> None:
    """Give a worker its job (the config of every reader is large: the write waits until the new interpreter reads it)."""
    with contextlib.suppress(OSError):  # it died already: poll() forgets it
        pipe.send(job)


def work(pipe: Connection) -> None:
    """One worker process: its job from the parent, then its own store, SMTP pool and renderer; takes rows until none
    are left, and tells the parent each outcome as it comes. SIGTERM or Ctrl-C stops it after the messages in flight, and so does the parent's end
    (killed, it releases the lock file: a worker going on could meet the next send's)."""
    job: Job = pipe.recv()
    logging.basicConfig(level=job.log_level, format="%(levelname)s %(message)s", stream=sys.stderr)
    stopping = threading.Event()
    parent = os.getppid()
    planned = False

    def stopped() -> bool:
        return stopping.is_set() or os.getppid() != parent

    def more() -> bool:
        nonlocal planned
        try:
            while not planned and pipe.poll():
                planned = pipe.recv() == PLANNED
        except EOFError:  # the parent is gone: stopped() says so
            planned = True
        return not planned or store.planning_elsewhere()

    words = _Words(pipe)
    with stop_on_signals(stopping):
        try:
            with Store(job.env.db, job.env.db_timeout) as store:
                store.register_sender()
                words.say("worker", store.db.worker)
                env = job.env
                report = SendReport(on_outcome=lambda outcome: words.say("outcome", outcome))
                letters = Letters(env, Renderer(env.base_url, env.templates), job.secret, store.link_versions())
                courier = Courier(env, store, make_transport(env.smtp, env.outbox, env.pool, env.dkim), report, letters, stopped)
                recorded = True
                try:
                    wanted = {s.email.lower(): s for s in job.wanted}
                    send_unfinished(store, courier, Planner(job.config, store, job.now), env, wanted, job.present, job.now, more)
                    courier.finish()
                except StorageError:
                    recorded = False
                    raise
                finally:
                    courier.close(record=recorded)
                if report.error:
                    words.say("error", report.error)
        except StorageError as exc:
            words.say("storage", str(exc))
        finally:
            words.close()
            pipe.close()


class _Words:
    """What a worker tells the parent, sent by a thread of its own: a ledger transaction never waits on the pipe (the
    parent, planning between its reads, may itself be waiting for the database lock that transaction holds)."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.queue: queue.SimpleQueue[tuple[str, object] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._forward, name="newsletter-words", daemon=True)
        self.thread.start()

    def say(self, kind: str, value: object) -> None:
        self.queue.put((kind, value))

    def close(self) -> None:
        """Once everything said has been sent."""
        self.queue.put(None)
        self.thread.join()

    def _forward(self) -> None:
        while (word := self.queue.get()) is not None:
            try:
                self.pipe.send(word)
            except OSError:  # the parent is gone
                return
