"""A clean stop on SIGTERM or SIGINT: the message in flight finishes and is recorded, nothing more is claimed.

systemd, `timeout`, a container stop and Ctrl-C all send one of these; without a handler a send would die
mid-message and its rows in flight would be re-sent as uncertain.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("newsletter")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stopping: threading.Event) -> Iterator[threading.Event]:
    """Set `stopping` on SIGTERM/SIGINT while inside; the previous handlers come back on the way out."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.warning("%s: stopping after the message in flight", signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
