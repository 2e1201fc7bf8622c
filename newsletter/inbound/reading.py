"""Where messages come from: one .eml file, a Maildir folder, an mbox file, or standard input."""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDIN = "-"


@dataclass(frozen=True)
class Item:
    """One message's bytes and where they came from, or why they could not be read."""

    source: str  # the path, `PATH:KEY` for one message of a Maildir or mbox, or "-" for standard input
    data: bytes | None
    error: str | None = None


def read(paths: Iterable[str], stdin: BinaryIO) -> Iterator[Item]:
    """Every message under `paths` in order; "-" is one message on `stdin`. Unreadable ones come back with their error."""
    for path in paths:
        if path == STDIN:
            yield _one(STDIN, stdin.read())
            continue
        where = Path(path)
        try:
            if where.is_dir():
                yield from _maildir(where)
            elif _is_mbox(where):
                yield from _mbox(where)
            else:
                yield _one(path, where.read_bytes())
        except (OSError, mailbox.Error) as exc:
            yield Item(path, None, f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")


def _one(source: str, data: bytes) -> Item:
    if not data.strip():
        return Item(source, None, f"{source}: empty, no message in it")
    if b":" not in data.split(b"\n", 1)[0] and not data.startswith(b"From "):
        return Item(source, None, f"{source}: not a mail message (its first line is no header)")
    return Item(source, data)


def _is_mbox(path: Path) -> bool:
    """An mbox starts with a `From ` line; a single .eml file that does too (a saved message) reads the same way."""
    with path.open("rb") as fh:
        return fh.read(5) == b"From "


def _mbox(path: Path) -> Iterator[Item]:
    box = mailbox.mbox(path, create=False)
    try:
        keys = list(box.keys())
        if len(keys) == 1:
            yield _one(str(path), box.get_bytes(keys[0]))
            return
        for n, key in enumerate(keys, 1):
            yield _one(f"{path}:{n}", box.get_bytes(key))
    finally:
        box.close()


def _maildir(path: Path) -> Iterator[Item]:
    if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
        yield Item(str(path), None, f"{path}: a folder but not a Maildir (no cur, new and tmp inside)")
        return
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        yield _one(f"{path}:{key}", box.get_bytes(key))
