"""subscribers.yaml: reading and checking it with file:line:col, watching it, and editing it safely."""

from newsletter.config.checks import unknown
from newsletter.config.edit import SubscriberFile
from newsletter.config.load import default_path, load, parse
from newsletter.config.watch import ConfigWatcher

__all__ = ["ConfigWatcher", "SubscriberFile", "default_path", "load", "parse", "unknown"]
