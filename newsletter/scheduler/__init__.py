"""`newsletter run`: each subscriber's send slots in their timezone, and the daemon that keeps them."""

from newsletter.scheduler.daemon import Clock, Daemon
from newsletter.scheduler.slots import due_today, next_sends, slot_on

__all__ = ["Clock", "Daemon", "due_today", "next_sends", "slot_on"]
