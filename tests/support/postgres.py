"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary folder, a Unix socket only.

One server per test session (each xdist worker has its own); each test gets a database of its own, made empty
with CREATE DATABASE. initdb refuses to run as root, so as root the cluster belongs to `nobody`. Nothing is
installed or downloaded here: `.ci/run` installs Debian's `postgresql` when it is missing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "newsletter"


def require_postgres() -> Path:
    """Debian's PostgreSQL server binaries; a missing one fails the test with a message saying so."""
    if not (BIN / "initdb").is_file():
        raise RuntimeError(f"PostgreSQL is not installed ({BIN}/initdb missing): apt-get install postgresql (.ci/run does)")
    return BIN


class PostgresServer:
    """initdb into a temporary folder, pg_ctl start listening on a socket there only; `database()` makes a fresh one."""

    def __init__(self) -> None:
        require_postgres()
        self.folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.folder / "data"
        self.counter = itertools.count(1)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            self.folder.chmod(0o755)
            shutil.chown(self.folder, "nobody")
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = f"-k {self.folder} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "-t", "60", "start")

    def _run(self, *command: str, check: bool = True, timeout: float = 120) -> None:
        """As `nobody` when the tests run as root (from the server's own folder: the checkout may be closed to others)."""
        user = {"user": "nobody", "group": "nogroup", "extra_groups": []} if self.as_root else {}
        subprocess.run(command, check=check, capture_output=True, timeout=timeout, cwd=self.folder, **user)  # type: ignore[call-overload]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.folder}"

    def database(self) -> str:
        """A new, empty database's URL."""
        name = f"test{os.getpid()}_{next(self.counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
