"""The store: one SQLite connection, with each table group's methods mixed in."""

from __future__ import annotations

from newsletter.model.digest import Layout
from newsletter.storage.bounces import Bounces
from newsletter.storage.database import Database, guard_methods
from newsletter.storage.ledger import Ledger
from newsletter.storage.papers import Papers
from newsletter.storage.popularity import Popularity
from newsletter.storage.pruning import Pruning
from newsletter.storage.schedule import Schedule
from newsletter.storage.signups import Signups
from newsletter.storage.sources import Sources


@guard_methods
class Store(Papers, Popularity, Sources, Ledger, Bounces, Schedule, Signups, Pruning, Database):
    """Papers and their popularity snapshots, source health, the delivery ledger, mail that came back, the schedule and sign-ups over one SQLite file, and their pruning.

    Each method is one short transaction so a crash never leaves half a change; `transaction()` groups several.
    Every method raises StorageError, never an sqlite3 error, when the file cannot be used.
    """

    def edition_layout(self, email: str, key: str, version: int) -> Layout | None:
        """The edition a reader's link made at link `version` opens: None once their links were revoked past it, or for anyone else's."""
        return self.layout(email, key) if version >= self.link_version(email) else None
