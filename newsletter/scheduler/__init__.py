"""`newsletter run`: each subscriber's send slots in their timezone, and the daemon that keeps them."""

from newsletter.scheduler.daemon import Clock, Daemon
from newsletter.scheduler.slots import next_sends

__all__ = ["Clock", "Daemon", "next_sends"]
