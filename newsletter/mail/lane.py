"""One connection's loop: jobs in, answers out, over a pair of pipes; in a thread of the sending process, or in a
process of its own (`python -m newsletter.mail.lane JOBS ANSWERS PARENT`), started by `newsletter.mail.pool`.

A job is (letter, stationery, slot): the message, or a reader's Draft of a stationery's message (with the
stationery itself the first time this lane gets a draft of it, else None: the lane keeps the last KEPT it got, and
the pool keeps the same record of each lane), and the monotonic time before which it may not go (the pool's rate
limit; the monotonic clock is the machine's, shared by its processes). An answer is (reply, flags), flags None when the
server took the message, else DeliveryError's (temporary, server, uncertain). None ends the loop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from cachetools import LRUCache

from newsletter.errors import DeliveryError
from newsletter.mail.message import Draft, Letter, Stationery
from newsletter.mail.transports import Transport

Flags = tuple[bool, bool, bool]  # DeliveryError's temporary, server, uncertain
KEPT = 256  # stationeries a lane keeps, the most recently used: as many as the renderer keeps digests
READY = ("ready", None)  # the first answer: the lane runs, so a lane that ends before it has sent nothing


def serve(jobs: Connection, answers: Connection, make: Callable[[], Transport], parent: int | None = None) -> None:
    """Send each job's message at its slot and answer it, in order, until None or until the caller is gone (its
    pipes closed, or with `parent`, that process no longer this one's parent): the rows it claimed stay in
    `sending` and its next run counts them, so no message is started for a caller that can no longer record it."""
    opened: Transport | DeliveryError
    try:
        opened = make()
    except Exception as exc:  # e.g. a key file gone: without a transport, answer every job rather than leave the run waiting
        opened = DeliveryError(f"cannot set up the connection: {type(exc).__name__}: {exc}", temporary=False, server=True)
    kept: LRUCache[str, Stationery] = LRUCache(KEPT)
    try:
        answers.send(READY)
        while (job := jobs.recv()) is not None and (parent is None or os.getppid() == parent):
            letter, stationery, slot = job
            if isinstance(letter, Draft):  # its stationery comes with the first of its drafts this lane gets
                if stationery is not None:
                    kept[letter.stationery] = stationery
                stationery = kept.get(letter.stationery)
            if isinstance(opened, DeliveryError):
                answers.send((opened.reply, _flags(opened)))
                continue
            if (delay := slot - time.monotonic()) > 0:
                time.sleep(delay)
            answers.send(_answer(opened, letter, stationery))
    except (EOFError, OSError):  # the caller is gone
        pass
    finally:
        if not isinstance(opened, DeliveryError):
            opened.close()
        answers.close()


def _answer(transport: Transport, letter: Letter | Draft, stationery: Stationery | None) -> tuple[str, Flags | None]:
    try:
        if isinstance(letter, Draft):
            if stationery is None:
                raise LookupError(f"stationery {letter.stationery} is not kept here")
            letter = stationery.fill(letter)
        return transport.send(letter), None
    except DeliveryError as exc:
        return exc.reply, _flags(exc)
    except Exception as exc:  # a bug must not strand the row in `sending` while the run waits for it
        return f"unexpected {type(exc).__name__}: {exc}", (True, True, False)


def _flags(error: DeliveryError) -> Flags:
    return error.temporary, error.server, error.uncertain


def main(argv: list[str]) -> None:
    """A lane in a process of its own. Ctrl-C and SIGTERM reach the whole process group: the caller decides when to
    stop, and ends its lanes once their messages are answered. The first job is the transport's factory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    jobs, answers = Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False)
    try:
        make = jobs.recv()
    except (EOFError, OSError):
        return
    serve(jobs, answers, make, parent=int(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
