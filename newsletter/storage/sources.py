"""Sources: per-source health for `newsletter sources`, and the HTTP validators for conditional GETs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.storage.database import Database, utcnow


@dataclass(frozen=True)
class SourceHealth:
    """What `newsletter sources` prints for one source."""

    name: str
    last_attempt: datetime | None
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    papers_seen: int  # papers it brought that it had not brought before (see Added.fresh)
    last_warning: str | None  # what was odd about the last successful fetch (a feed with no entries); None when nothing


class Sources(Database):
    """sources and http_cache."""

    def validators(self, url: str) -> tuple[str | None, str | None]:
        """ETag and Last-Modified from the last 200 for this URL."""
        row = self.db.execute("SELECT etag, last_modified FROM http_cache WHERE url = ?", (url,)).fetchone()
        return (row["etag"], row["last_modified"]) if row else (None, None)

    def save_validators(self, url: str, etag: str | None, last_modified: str | None, now: datetime | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO http_cache (url, etag, last_modified, saved) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified, saved = excluded.saved",
                (url, etag, last_modified, (now or utcnow()).isoformat()),
            )

    def source_succeeded(self, name: str, papers: int, now: datetime | None = None, warning: str | None = None) -> None:
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sources (name, last_attempt, last_success, consecutive_failures, papers_seen, last_warning) VALUES (?, ?, ?, 0, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_attempt = excluded.last_attempt, last_success = excluded.last_success, "
                "consecutive_failures = 0, papers_seen = sources.papers_seen + excluded.papers_seen, last_warning = excluded.last_warning",
                (name, now_s, now_s, papers, warning),
            )

    def source_failed(self, name: str, error: str, now: datetime | None = None) -> None:
        now_s = (now or utcnow()).isoformat()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sources (name, last_attempt, last_error, last_error_at, consecutive_failures) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT(name) DO UPDATE SET last_attempt = excluded.last_attempt, last_error = excluded.last_error, "
                "last_error_at = excluded.last_error_at, consecutive_failures = sources.consecutive_failures + 1",
                (name, now_s, error, now_s),
            )

    def source_health(self) -> dict[str, SourceHealth]:
        rows = self.db.execute("SELECT * FROM sources ORDER BY name")
        return {
            r["name"]: SourceHealth(
                name=r["name"],
                last_attempt=_dt(r["last_attempt"]),
                last_success=_dt(r["last_success"]),
                last_error=r["last_error"],
                last_error_at=_dt(r["last_error_at"]),
                consecutive_failures=r["consecutive_failures"],
                papers_seen=r["papers_seen"],
                last_warning=r["last_warning"],
            )
            for r in rows
        }


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
