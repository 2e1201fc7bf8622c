"""Mail that comes back: bounces, complaints, auto-replies, unsubscribe mails and commands, read and acted on.

Below the shells: the CLI (`newsletter inbound`) and the daemon's mailbox polling call it."""

from newsletter.inbound.classify import Report, classify
from newsletter.inbound.handler import Handler, Outcome, Subscriptions
from newsletter.inbound.reading import Item, read

__all__ = ["Handler", "Item", "Outcome", "Report", "Subscriptions", "classify", "read"]
