"""A few SMTP connections, each in a lane of its own (a process, or a thread), under one rate limit; only the caller touches the database."""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

from cachetools import LRUCache

from newsletter.errors import DeliveryError
from newsletter.mail import lane
from newsletter.mail.message import Draft, Letter, Stationery
from newsletter.mail.signing import DkimSettings, Signer
from newsletter.mail.transports import Outbox, Smtp, SmtpSettings, Transport, signed

RAMP = 32  # answers per running lane before one more starts (see Pool.put)
PIPE_SIZE = 1 << 20  # bytes a lane's job pipe holds: Linux's default most a user may ask for (the default is 64 KiB)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where a lane process finds this very package


@dataclass(frozen=True)
class PoolSettings:
    """How many SMTP connections send at once (SMTP_CONNECTIONS) and at most how many messages per second over all of them (SMTP_RATE; None: no limit)."""

    connections: int = 4
    rate: float | None = None


class RateLimiter:
    """At most `rate` messages per second over all connections, spaced evenly; None means no limit."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self._next = 0.0

    def slot(self) -> float:
        """When, on the monotonic clock, the next message may go: now, or one interval after the one before."""
        now = self.clock()
        if not self.interval:
            return now
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot


@dataclass(frozen=True)
class Job:
    """One claimed ledger row's message, handed to a worker; `tag` lets the caller find its row again."""

    tag: object
    letter: Letter | Draft
    stationery: Stationery | None = None  # what a Draft fills in: the lane that has not got it yet gets it with the job


@dataclass(frozen=True)
class Result:
    """What the server said about one job: a reply line, or the error."""

    job: Job
    reply: str
    error: DeliveryError | None = None


@dataclass
class _Lane:
    """One connection's worker as the pool sees it: its pipes, and the jobs it has not answered yet, in order."""

    jobs: Connection
    answers: Connection
    runner: threading.Thread | subprocess.Popen[bytes]
    waiting: deque[Job]
    running: bool = False  # it said it is ready: from then on, its end may come in the middle of a message
    kept: LRUCache[str, bool] = field(default_factory=lambda: LRUCache(lane.KEPT))  # the stationeries it keeps, as it keeps them


class Pool:
    """A few lanes, each with its own connection, sending the jobs handed to them under one rate limit.

    With `processes`, each lane of a send that proves long is a process of its own (`make` must then pickle):
    signing and the SMTP exchange run beside the caller's work on the other cores instead of taking turns with it
    for one interpreter's lock. The first RAMP messages go over a thread: a process takes a third of a second to
    start, longer than a send of a few dozen takes (a daemon's slot of a few readers). Only the caller touches the
    database: lanes take jobs and give back answers, nothing else. A lane that dies with jobs on hand answers them
    as uncertain (the server may have the message).
    """

    def __init__(self, make: Callable[[], Transport], size: int, rate: float | None, *, processes: bool = False) -> None:
        self.make = make
        self.size = size
        self.processes = processes
        self._lanes: list[_Lane] = []
        self._answers: deque[Result] = deque()
        self._limiter = RateLimiter(rate)
        self._answered = 0  # answers the lanes gave: more lanes start as the send proves long
        self._readable = selectors.DefaultSelector()  # every lane's answers, registered once: `get` waits on them in one call

    def put(self, job: Job) -> None:
        """Hand `job` to an idle lane, else to a new one, else to the least busy. A lane more starts only once each
        running one has started and answered RAMP messages: a process takes a third of a second to start, as long as
        a hundred messages take, so a send of a few dozen leaves them to one. With `processes`, the thread that
        sent the first RAMP ends first (its answers kept for `get`), so no more connections are open than `size`."""
        if self.processes and self._answered >= RAMP and self._lanes and isinstance(self._lanes[0].runner, threading.Thread):
            self._retire(self._lanes[0])
        chosen = next((each for each in self._lanes if not each.waiting), None)
        if chosen is None and len(self._lanes) < self.size and all(each.running for each in self._lanes) and self._answered >= RAMP * len(self._lanes):
            try:
                chosen = self._start()
            except OSError as exc:  # no process can be started (the interpreter gone, no memory): a server error, counted against nobody
                why = DeliveryError(f"cannot set up the connection: cannot start a sending process: {exc}", temporary=False, server=True)
                self._answers.append(Result(job, why.reply, why))
                return
        chosen = chosen or min(self._lanes, key=lambda each: len(each.waiting))
        # more than the pool holds: take this lane's answers first (kept for `get`), so neither side waits on a full pipe
        while len(chosen.waiting) >= self.size and chosen in self._lanes:
            self._take(chosen)
        if chosen not in self._lanes:  # it died meanwhile
            self.put(job)
            return
        chosen.waiting.append(job)
        stationery = None
        if isinstance(job.letter, Draft) and chosen.kept.get(job.letter.stationery) is None:  # get marks it used, as the lane's own record does
            chosen.kept[job.letter.stationery], stationery = True, job.stationery
        with contextlib.suppress(OSError):  # a lane gone: its answers, this job's included, come from `get`
            chosen.jobs.send((job.letter, stationery, self._limiter.slot()))

    def get(self, timeout: float | None = None) -> Result | None:
        """The next result, or None if none came within `timeout` (0 = do not wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._answers:
            if not any(each.waiting for each in self._lanes):
                return None
            ready = self._readable.select(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            for key, _ in ready:
                self._take(key.data)
        return self._answers.popleft()

    def close(self) -> None:
        """Stop the lanes after the jobs they have; each closes its connection, and its answers stay for `get`. The pool can be used again."""
        for each in self._lanes:
            with contextlib.suppress(OSError):
                each.jobs.send(None)
        for each in list(self._lanes):
            self._drain(each)

    def _retire(self, each: _Lane) -> None:
        with contextlib.suppress(OSError):
            each.jobs.send(None)
        self._drain(each)

    def _drain(self, each: _Lane) -> None:
        """Wait for a lane told to stop to answer the jobs it has (the answers kept for `get`), then end it."""
        while each.waiting:
            self._take(each)
        if each in self._lanes:  # not ended by its death meanwhile
            self._end(each)

    def _start(self) -> _Lane:
        if self.processes and self._answered >= RAMP:
            jobs_in, jobs_out = os.pipe()
            if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux: room for a digest's stationery (~100 KB), so handing it over never waits for the lane
                with contextlib.suppress(OSError):
                    fcntl.fcntl(jobs_out, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            answers_in, answers_out = os.pipe()
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
            command = [sys.executable, "-m", "newsletter.mail.lane", str(jobs_in), str(answers_out), str(os.getpid())]
            runner: threading.Thread | subprocess.Popen[bytes] = subprocess.Popen(command, pass_fds=(jobs_in, answers_out), stdin=subprocess.DEVNULL, env=env)
            os.close(jobs_in)
            os.close(answers_out)
            started = _Lane(Connection(jobs_out, readable=False), Connection(answers_in, writable=False), runner, deque())
            started.jobs.send(self.make)
        else:
            mine, theirs = multiprocessing.Pipe()
            runner = threading.Thread(target=lane.serve, args=(theirs, theirs, self.make), name=f"smtp-{len(self._lanes)}", daemon=True)
            runner.start()
            started = _Lane(mine, mine, runner, deque())
        self._lanes.append(started)
        self._readable.register(started.answers, selectors.EVENT_READ, started)
        return started

    def _take(self, each: _Lane) -> None:
        """Read the lane's next answer (waiting for it); a lane that died answers every job it had as uncertain."""
        try:
            if not each.running:
                each.running = each.answers.recv() == lane.READY
                if not each.answers.poll():
                    return
            reply, flags = each.answers.recv()
        except (EOFError, OSError):
            if each.running:  # the server may have the message the lane was sending
                why = DeliveryError("the sending process ended while it had the message", temporary=True, server=True, uncertain=True)
            else:
                why = DeliveryError("cannot set up the connection: the sending process ended as it started", temporary=False, server=True)
            self._answers.extend(Result(job, why.reply, why) for job in each.waiting)
            each.waiting.clear()
            self._end(each)
            return
        job = each.waiting.popleft()
        self._answered += 1
        self._answers.append(Result(job, reply, None if flags is None else DeliveryError(reply, *flags)))

    def _end(self, each: _Lane) -> None:
        self._readable.unregister(each.answers)
        if isinstance(each.runner, threading.Thread):
            each.runner.join()
        else:
            each.runner.wait()
        each.jobs.close()
        each.answers.close()
        self._lanes.remove(each)


def _smtp(settings: SmtpSettings, signer: Signer | None) -> Transport:
    return signed(Smtp(settings), signer)


def _outbox(folder: Path, signer: Signer | None) -> Transport:
    return signed(Outbox(folder), signer)


def transport(smtp: SmtpSettings | None, outbox: Path, pool: PoolSettings, dkim: DkimSettings | None) -> Pool:
    """`pool.connections` SMTP connections at `pool.rate`, each in a process of its own, or one writer into the
    outbox folder (a thread) when there are no SMTP settings.

    The DKIM key is read once here, so that a bad one stops the run before any mail; each lane signs what it sends."""
    signer = Signer.from_settings(dkim)
    if smtp is not None:
        return Pool(partial(_smtp, smtp, signer), pool.connections, pool.rate, processes=True)
    return Pool(partial(_outbox, outbox, signer), 1, None)
