"""What a send did, digest by digest: enough to print and to choose the exit code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter.model.digest import count_phrase
from newsletter.pipeline.fetching import SourceResult
from newsletter.storage.ledger import PausedReader


@dataclass
class Outcome:
    """What happened to one subscriber's digest in a send."""

    email: str
    papers: int  # in the mail
    status: str  # sent, deferred, failed, dry-run
    detail: str = ""
    total: int = 0  # in the edition (its page): the papers shown and those cut; 0 when unknown

    @property
    def counts(self) -> str:
        """The papers in the mail and in the edition, said as the subject says them."""
        return count_phrase(self.papers, max(self.total, self.papers))


@dataclass
class SendReport:
    """The result of `newsletter send`, enough to print and to choose the exit code."""

    fetched: list[SourceResult] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    uncertain: int = 0  # rows found interrupted in `sending` and sent once more
    paused: list[PausedReader] = field(default_factory=list)
    error: str | None = None  # the server refused the session for good; the run stopped early
    on_outcome: Callable[[Outcome], None] | None = None  # e.g. a progress line on a terminal

    def add(self, outcome: Outcome) -> None:
        """Record one digest's fate and tell whoever is watching."""
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def exit_code(self) -> int:
        """Per the contract: 2 when some deliveries did not go through, else 3 when some sources failed (2 wins over 3)."""
        if self.count("failed") or self.count("deferred") or self.error:
            return 2
        return fetch_exit_code(self.fetched)


def fetch_exit_code(results: list[SourceResult]) -> int:
    """3 when some sources failed (the rest were fetched), else 0."""
    return 3 if any(r.error for r in results) else 0
