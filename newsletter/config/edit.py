"""subscribers.yaml edited in place: comments and layout kept, writes locked, validated and atomic."""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from newsletter.config.load import load, parse
from newsletter.errors import ConcurrentEdit
from newsletter.model.addresses import same_address
from newsletter.model.config import WEEKDAYS, Config, Settings
from newsletter.model.signup import Choice, Preferences

LOCK_TIMEOUT = 10.0  # seconds to wait for a hand edit (or another writer) to finish


# subscribers.yaml


class SubscriberFile:
    """subscribers.yaml edited in place: comments and layout kept, writes locked, validated and atomic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)

    def load(self) -> Config:
        return load(self.path)

    @contextmanager
    def edit(self) -> Iterator[CommentedSeq]:
        """Yield the `subscribers:` list to change; on exit the file is re-validated and replaced in one rename."""
        with self.lock:
            before = self.path.read_text(encoding="utf-8")
            parse(before, str(self.path))  # a broken hand edit is reported, not edited further
            yaml = YAML(typ="rt")
            yaml.preserve_quotes = True
            yaml.width = 4096
            mapping, offset = _guess_indent(before)
            yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
            data = yaml.load(before) or CommentedMap()
            if data.get("subscribers") is None:
                data["subscribers"] = CommentedSeq()
            yield data["subscribers"]
            if data["subscribers"]:
                data["subscribers"].fa.set_block_style()
            else:  # ruamel would write the list's leading comment and then `[]` on a line of its own: invalid YAML
                data["subscribers"] = _flow(())
            out = io.StringIO()
            yaml.dump(data, out)
            text = out.getvalue()
            parse(text, str(self.path))  # never write a file the pipeline would refuse
            if self.path.read_text(encoding="utf-8") != before:
                raise ConcurrentEdit(f"{self.path} changed while it was being edited without taking {self.lock.lock_file}; try again")
            _atomic_write(self.path, text)

    def add(self, email: str, choice: Choice) -> bool:
        """Add a confirmed subscriber; False (and no change) when the address is already there."""
        with self.edit() as subscribers:
            if _index(subscribers, email) is not None:
                return False
            entry = CommentedMap(email=email)
            entry["topics"] = _flow(choice.topics)
            if choice.frequency != "daily":
                entry["frequency"] = choice.frequency
            subscribers.append(entry)
        return True

    def remove(self, email: str) -> bool:
        """Remove a subscriber; False when they were not there (unsubscribing twice is fine)."""
        with self.edit() as subscribers:
            i = _index(subscribers, email)
            if i is None:
                return False
            del subscribers[i]
        return True

    def update(self, email: str, prefs: Preferences, defaults: Settings) -> bool:
        """Write a subscriber's preferences: unchanged keys keep their formatting, keys back at their default go."""
        with self.edit() as subscribers:
            i = _index(subscribers, email)
            if i is None:
                return False
            entry = subscribers[i]
            wanted: dict[str, tuple[Any, Any]] = {  # key: (new value, default when absent)
                "topics": (prefs.topics, ()),
                "keywords": (prefs.keywords, ()),
                "frequency": (prefs.frequency, "daily"),
                "day": (prefs.day, "monday"),
                "send_at": (prefs.send_at.strftime("%H:%M"), defaults.send_at.strftime("%H:%M")),
                "timezone": (prefs.timezone, defaults.timezone),
                "paused": (prefs.paused, False),
            }
            for key, (value, default) in wanted.items():
                if _plain(entry.get(key, default)) == value:
                    continue
                if value == default:
                    entry.pop(key, None)
                else:
                    entry[key] = _flow(value) if isinstance(value, tuple) else value
        return True


def _plain(value: Any) -> Any:
    """A YAML value as the Preferences field it corresponds to, for comparing."""
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return value.lower() if value.lower() in WEEKDAYS else value
    return value


def _guess_indent(text: str) -> tuple[int, int]:
    """How this file indents mappings and list dashes under a top-level key, so a rewrite keeps its layout."""
    mapping: int | None = None
    offset: int | None = None
    under_top_key = False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        depth = len(line) - len(stripped)
        if under_top_key and stripped.startswith("-"):
            offset = depth if offset is None else offset
        elif under_top_key and depth > 0:
            mapping = depth if mapping is None else mapping
        under_top_key = depth == 0 and re.match(r"^[^#\s-][^#]*:\s*(#.*)?$", stripped) is not None
    return mapping or 2, 2 if offset is None else offset


def _index(subscribers: CommentedSeq, email: str) -> int | None:
    for i, item in enumerate(subscribers):
        if isinstance(item, CommentedMap) and same_address(str(item.get("email", "")), email):  # user@bücher.de is user@xn--bcher-kva.de
            return i
    return None


def _flow(items: tuple[str, ...]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _atomic_write(path: Path, text: str) -> None:
    """Write beside the file and rename over it, so a reader sees the old or the new file, never half."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
