"""Picking up edits to subscribers.yaml in a long-running process, keeping the last good config."""

from __future__ import annotations

import hashlib
from pathlib import Path

from newsletter.config.load import load
from newsletter.errors import ConfigError, Problem
from newsletter.model.config import Config


class ConfigWatcher:
    """Lets a long-running process pick up edits to subscribers.yaml: a changed file that validates replaces
    the config; an invalid edit is reported once and the last good config keeps working."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config  # the last good config
        self._seen = _fingerprint(path)

    def poll(self) -> list[Problem] | None:
        """Reload if the file's content changed: None when unchanged, [] when reloaded, else the edit's problems."""
        seen = _fingerprint(self.path)
        if seen == self._seen:
            return None
        self._seen = seen
        try:
            self.config = load(self.path)
        except ConfigError as exc:
            return exc.problems
        return []


def _fingerprint(path: Path) -> bytes | None:
    """A digest of the file's content (None when unreadable): content, not mtime, so quick successive edits all count."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
