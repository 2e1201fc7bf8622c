"""subscribers.yaml edited in place: comments and layout kept, validated, compare-and-swap under a lock, atomic."""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import errno
import hashlib
import io
import itertools
import logging
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from newsletter.config.load import load_snapshot, parse, read
from newsletter.errors import ConcurrentEdit, ConfigError, NewsletterError
from newsletter.model.addresses import same_address
from newsletter.model.config import WEEKDAYS, Config, Settings
from newsletter.model.signup import Choice, Preferences, Rules

log = logging.getLogger("newsletter.config")
NO_RULES = Rules()
T = TypeVar("T")
LOCK_TIMEOUT = 10.0  # seconds to wait for a hand edit (or another writer) to finish
ATTEMPTS = 24  # edits redone on a fresh read when the file changed under them (8 lost 1 in about 8 runs of 50 confirmations against an unlocked save every 0.1 s); the last one holds the lock throughout


# subscribers.yaml


@dataclass(frozen=True)
class Snapshot:
    """The file's text as read, and the digest of its bytes: what a write must still find there to replace it."""

    text: str
    digest: bytes


class _Changed(NewsletterError):
    """The file no longer holds the snapshot an edit was made on."""


_parsed: dict[str, tuple[bytes, Config]] = {}  # path: the digest of the content this process last found valid, and its config (frozen)
_writers: dict[str, threading.Lock] = {}  # path: one app edit at a time per process, so threads do not keep invalidating each other
_writers_guard = threading.Lock()


class SubscriberFile:
    """subscribers.yaml edited in place: comments and layout kept, writes locked, validated and atomic.

    An edit is made on a snapshot (text + digest) and replaces the file only if, under the lock, the file still
    holds that snapshot; otherwise it is redone on a fresh read, so neither a save taken under the lock nor an
    unlocked atomic save (temp file + rename) is overwritten. On Linux the final rename is an exchange
    (renameat2 RENAME_EXCHANGE) whose displaced file is checked too, which closes the gap between the check and the
    rename; elsewhere that gap (microseconds) remains.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)

    def load(self) -> Config:
        """The validated config; parsed again only when the file's bytes changed since this process last read them."""
        key = str(self.path)
        text = read(self.path)  # under the lock when it comes quickly: never a save half-way
        cached = _parsed.get(key)
        if cached is not None and cached[0] == _digest(text.encode("utf-8")):
            return cached[1]
        config, text = load_snapshot(self.path, text)
        _parsed[key] = (_digest(text.encode("utf-8")), config)
        return config

    def snapshot(self) -> Snapshot:
        data = self.path.read_bytes()
        return Snapshot(data.decode("utf-8"), _digest(data))

    @contextmanager
    def edit(self) -> Iterator[CommentedSeq]:
        """Yield the `subscribers:` list to change; on exit the file is re-validated and replaced in one rename.

        One attempt, under the lock: ConcurrentEdit if someone not taking the lock saved meanwhile (their save is kept)."""
        with self.lock:
            before = self.snapshot()
            self._validate(before)  # a broken hand edit is reported, not edited further
            yaml, data = _open(before.text)
            yield data["subscribers"]
            text = _dump(yaml, data)
            checked = parse(text, str(self.path))  # never write a file the pipeline would refuse
            try:
                self._commit(before, text)
            except _Changed:
                raise ConcurrentEdit(f"{self.path} changed while it was being edited without taking {self.lock.lock_file}; try again") from None
            _parsed[str(self.path)] = (_digest(text.encode("utf-8")), checked)

    def change(self, add: Sequence[tuple[str, Choice]] = (), remove: Collection[str] = ()) -> tuple[set[str], set[str]]:
        """Add confirmed subscribers and remove others in one write; the addresses (lower-cased) added and removed.

        An address already there is not added again, one not there is not removed. A removal is done on the text
        (the entry's lines go, nothing else moves) when the file is known valid and the entry is plain; otherwise
        through ruamel's round trip like every other edit."""
        wanted_out = {e.strip().lower() for e in remove}

        def edit(subscribers: CommentedSeq) -> tuple[set[str], set[str]]:
            removed: set[str] = set()
            for email in wanted_out:
                i = _index(subscribers, email)
                if i is not None:
                    del subscribers[i]
                    removed.add(email)
            added: set[str] = set()
            for email, choice in add:
                if _index(subscribers, email) is not None:
                    continue
                entry = CommentedMap(email=email)
                if choice.name:
                    entry["name"] = choice.name
                entry["topics"] = _flow(choice.topics)
                if choice.keywords:
                    entry["keywords"] = _flow(choice.keywords)
                if choice.frequency != "daily":
                    entry["frequency"] = choice.frequency
                if choice.send_at is not None:  # quoted, as in `update`
                    entry["send_at"] = DoubleQuotedScalarString(choice.send_at.strftime("%H:%M"))
                if choice.timezone:
                    entry["timezone"] = choice.timezone
                subscribers.append(entry)
                added.add(email.strip().lower())
            return added, removed

        def fast(text: str, known: Config | None) -> tuple[str, tuple[set[str], set[str]]] | None:
            cut = _remove_text(text, wanted_out) if wanted_out else (text, set())
            if cut is None:
                return None
            if known is not None and any(t not in known.topics for _, choice in add for t in choice.topics):
                return None  # the round trip refuses it before anything is written
            grown = _append_text(cut[0], add) if add else (cut[0], set())
            return None if grown is None else (grown[0], (grown[1], cut[1]))

        return self._change(edit, fast)

    def add(self, email: str, choice: Choice) -> bool:
        """Add a confirmed subscriber; False (and no change) when the address is already there."""
        return bool(self.change(add=[(email, choice)])[0])

    def remove(self, email: str) -> bool:
        """Remove a subscriber; False when they were not there (unsubscribing twice is fine)."""
        return bool(self.change(remove=[email])[1])

    def update(self, email: str, prefs: Preferences, defaults: Settings) -> bool:
        """Write a subscriber's preferences: unchanged keys keep their formatting, keys back at their default go."""

        def edit(subscribers: CommentedSeq) -> bool:
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
                elif key == "send_at":  # quoted, as YAML 1.1 readers (PyYAML) take 07:15 for a number of minutes
                    entry[key] = DoubleQuotedScalarString(value)
                else:
                    entry[key] = _flow(value) if isinstance(value, tuple) else value
            return True

        return self._change(edit)

    def rules(self, email: str, add: Rules = NO_RULES, remove: Rules = NO_RULES) -> bool:
        """Add and remove a subscriber's own topics, keywords and exclude rules in one write; False when they are not there.

        Lists are changed in place, so their style and comments stay, and a list left empty goes: adding a rule
        and removing it again gives back the entry as it was."""

        def edit(subscribers: CommentedSeq) -> bool:
            i = _index(subscribers, email)
            if i is None:
                return False
            entry = subscribers[i]
            for key in ("topics", "keywords", "exclude"):
                items = entry.get(key)
                seq = items if isinstance(items, CommentedSeq) else _flow(())
                gone, new = set(getattr(remove, key)), [v for v in dict.fromkeys(getattr(add, key)) if v not in {str(x) for x in seq}]
                for j in reversed([j for j, v in enumerate(seq) if str(v) in gone]):
                    del seq[j]
                seq.extend(new)
                if not seq:
                    _pop_key(entry, key)
                elif seq is not items:
                    _add_key(entry, key, seq)
            return True

        return self._change(edit)

    # compare-and-swap

    def _change(self, edit: Callable[[CommentedSeq], T], fast: Callable[[str, Config | None], tuple[str, T] | None] | None = None) -> T:
        """Make the edit on a snapshot and swap it in if the file still holds that snapshot; else redo it on a fresh read.

        The parse, round trip and validation happen outside the lock (it is held only to compare and rename),
        except on the last attempt, which holds it throughout so a busy file cannot starve the app. A text edit
        (`fast`) on content this process has not validated yet is validated right after its swap instead of
        before, so a file saved every fraction of a second cannot starve it either: if the result does not
        validate (the hand edit was broken), the previous content is put back and the problems are raised."""
        with _writer(self.path):
            for attempt in range(ATTEMPTS):
                guard: AbstractContextManager[object] = self.lock if attempt == ATTEMPTS - 1 else nullcontext()
                with guard:
                    before = self.snapshot()
                    known = self._known(before)
                    quick = fast(before.text, known) if fast else None
                    try:
                        if quick is not None:
                            text, result = quick
                        else:
                            self._validate(before)  # a broken hand edit is reported, not edited further
                            yaml, data = _open(before.text)
                            result = edit(data["subscribers"])
                            text = _dump(yaml, data)
                        if text == before.text:
                            return result
                        checked = None if quick is not None else parse(text, str(self.path))  # never write a file the pipeline would refuse
                    except ConfigError:
                        with self.lock:  # a save taken under the lock is complete once we have it
                            if self.snapshot().digest == before.digest:
                                raise
                        continue  # read half-way through a save: read it again
                    try:
                        self._commit(before, text)
                    except _Changed:
                        log.info("%s changed while being edited (attempt %d of %d); editing the new content", self.path, attempt + 1, ATTEMPTS)
                        time.sleep(random.uniform(0.005, 0.05))
                        continue
                    after = _digest(text.encode("utf-8"))
                    if checked is None:
                        checked = self._without(known, result) or self._check_written(before, text, after)
                    _parsed[str(self.path)] = (after, checked)
                    return result
        raise ConcurrentEdit(f"{self.path} kept changing while it was being edited ({ATTEMPTS} attempts); try again")

    def _known(self, snapshot: Snapshot) -> Config | None:
        """The config this process parsed from exactly this content, if it did."""
        cached = _parsed.get(str(self.path))
        return cached[1] if cached is not None and cached[0] == snapshot.digest else None

    def _check_written(self, before: Snapshot, text: str, digest: bytes) -> Config:
        """Validate what a text edit just wrote; if it is refused, put `before` back (unless saved over meanwhile) and raise."""
        try:
            return parse(text, str(self.path))
        except ConfigError:
            try:
                self._commit(Snapshot(text, digest), before.text)
            except _Changed:
                log.warning("%s: an edit on a broken file was saved over before it could be undone", self.path)
            raise

    @staticmethod
    def _without(config: Config | None, result: object) -> Config | None:
        """The config after a text removal (and no addition), from the one parsed before it: the same but for those entries."""
        if config is None or not isinstance(result, tuple) or result[0]:
            return None
        gone = result[1]
        return dataclasses.replace(config, subscribers=tuple(s for s in config.subscribers if s.email.strip().lower() not in gone))

    def _validate(self, before: Snapshot) -> None:
        if self._known(before) is None:
            _parsed[str(self.path)] = (before.digest, parse(before.text, str(self.path)))

    def _commit(self, before: Snapshot, text: str) -> None:
        """Under the lock: replace the file with `text` if it still holds `before`; else raise _Changed and write nothing."""
        with self.lock:
            _atomic_write(self.path, text, expect=before.digest)


def _writer(path: Path) -> threading.Lock:
    with _writers_guard:
        return _writers.setdefault(str(path.resolve()), threading.Lock())


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _open(text: str) -> tuple[YAML, CommentedMap]:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    data = yaml.load(text) or CommentedMap()
    if data.get("subscribers") is None:
        data["subscribers"] = CommentedSeq()
    return yaml, data


def _dump(yaml: YAML, data: CommentedMap) -> str:
    if data["subscribers"]:
        data["subscribers"].fa.set_block_style()
    else:  # ruamel would write the list's leading comment and then `[]` on a line of its own: invalid YAML
        data["subscribers"] = _flow(())
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


_TOP_SUBSCRIBERS = re.compile(r"subscribers:[ \t]*(#.*)?\n?")
_ENTRY = re.compile(r"(?P<indent> *)- +email: *(?P<q>[\"']?)(?P<email>[^\"'#\s]+)(?P=q)[ \t]*(#.*)?\n?")


@dataclass(frozen=True)
class _Block:
    """The `subscribers:` list as lines: where it runs, where each plain `- email: X` entry starts."""

    lines: list[str]
    start: int
    end: int
    entries: list[tuple[int, re.Match[str]]]
    indent: int

    def extent(self, i: int) -> range:
        """The lines of the entry starting at line i: up to the last one indented deeper than its dash."""
        last = i
        for j in range(i + 1, self.end):
            line = self.lines[j]
            if not line.strip():
                continue
            if len(line) - len(line.lstrip(" ")) <= self.indent:
                break
            last = j
        return range(i, last + 1)

    def text(self) -> str:
        return "".join(self.lines[self.start : self.end]).lower()

    def orphaned(self, drop: set[int]) -> set[int]:
        """The comment lines right above a run of adjacent entries that are all being dropped: they spoke of those.

        A comment above entries that stay (a group's heading: "# the founders") stays with them; one indented
        deeper than the dashes belongs to the entry above it."""
        orphans: set[int] = set()
        starts = {i for i, _ in self.entries}
        for i in sorted(starts):
            heading = list(itertools.takewhile(self._comment, range(i - 1, self.start - 1, -1)))
            if not heading:
                continue  # an entry's last line, a blank line or `subscribers:` right above
            run, j = [], i
            while j in starts:
                run.append(j)
                j = self.extent(j)[-1] + 1
            if all(k in drop for k in run):
                orphans.update(heading)
                top = heading[-1]  # and the blank line that set them apart, so no two are left in a row
                blank_after = j >= self.end or not self.lines[j].strip()
                if top > self.start and not self.lines[top - 1].strip() and blank_after:
                    orphans.add(top - 1)
                elif top == self.start and j < self.end and blank_after:
                    orphans.add(j)
        return orphans

    def _comment(self, k: int) -> bool:
        """Whether line k is a comment at the dashes' indentation or left of it (not inside the entry above)."""
        line = self.lines[k]
        return line.lstrip().startswith("#") and len(line) - len(line.lstrip(" ")) <= self.indent


def _block(text: str) -> _Block | None:
    """The subscribers list if every item in it is a plain `- email: X` entry at one indentation; else None."""
    lines = text.splitlines(keepends=True)
    tops = [i for i, line in enumerate(lines) if _TOP_SUBSCRIBERS.fullmatch(line)]
    if len(tops) != 1:
        return None
    start = tops[0] + 1
    end = next((i for i in range(start, len(lines)) if lines[i][:1] not in ("", " ", "\t", "\n", "\r", "#", "-")), len(lines))
    entries = [(i, m) for i in range(start, end) if (m := _ENTRY.fullmatch(lines[i]))]
    dashes = [i for i in range(start, end) if lines[i].lstrip(" ").startswith("-")]
    if not entries or len({m["indent"] for _, m in entries}) != 1 or len(dashes) != len(entries):
        return None
    return _Block(lines, start, end, entries, len(entries[0][1]["indent"]))


def _remove_text(text: str, emails: Collection[str]) -> tuple[str, set[str]] | None:
    """`text` without the `- email: X` entries of these addresses, and which were there; None when that is not
    plainly safe (the address written some other way, an anchor, the last entry): then the round trip does it.

    Removing a whole plain entry from a valid file leaves it valid, so this needs no parse: it is what keeps an
    unsubscription at thousands of readers a matter of milliseconds under the lock."""
    block = _block(text)
    if block is None:
        return None
    lower = block.text()
    drop: set[int] = set()
    removed: set[str] = set()
    for email in emails:
        found = [i for i, m in block.entries if m["email"].lower() == email]
        if lower.count(email) != len(found) or len(found) != 1:  # written elsewhere too (a flow entry, a comment), another
            return None  # spelling (user@bücher.de for user@xn--bcher-kva.de), or absent: the round trip decides
        cut = block.extent(found[0])
        if any(c in block.lines[k] for k in cut for c in "&*!"):  # an anchor another part may refer to, or a tag
            return None
        drop.update(cut)
        removed.add(email)
    if len(removed) == len(block.entries):  # `subscribers:` with nothing under it is null, not a list
        return None
    drop.update(block.orphaned(drop))
    return "".join(line for k, line in enumerate(block.lines) if k not in drop), removed


_PLAIN_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_PLAIN_ZONE = re.compile(r"[A-Za-z0-9_/+-]+")


def _append_text(text: str, add: Sequence[tuple[str, Choice]]) -> tuple[str, set[str]] | None:
    """`text` with new plain entries after the last one, laid out as the round trip would write them, and the
    addresses added; None when an address or topic would need quoting or the list is not plain. Unlike a removal
    this can make the file invalid (a topic removed meanwhile): the caller validates what it wrote."""
    block = _block(text)
    if block is None:
        return None
    lower = block.text()
    last = block.entries[-1][0]
    key = " " * block.lines[last].index("email")
    dash = " " * block.indent
    new: list[str] = []
    added: set[str] = set()
    for email, choice in add:
        address = email.strip()
        wanted = address.lower()
        if not _PLAIN_EMAIL.fullmatch(address) or not choice.topics or not all(_PLAIN_WORD.fullmatch(t) for t in choice.topics):
            return None
        if not _PLAIN_WORD.fullmatch(choice.frequency) or choice.name or choice.keywords or not _PLAIN_ZONE.fullmatch(choice.timezone or "UTC"):
            return None  # a name or keywords may need quoting: the round trip writes them
        present = sum(1 for _, m in block.entries if m["email"].lower() == wanted)
        if lower.count(wanted) != present:
            return None
        if present or wanted in added:
            continue
        entry = f"{dash}- email: {address}\n{key}topics: [{', '.join(choice.topics)}]\n"
        if choice.frequency != "daily":
            entry += f"{key}frequency: {choice.frequency}\n"
        if choice.send_at is not None:
            entry += f'{key}send_at: "{choice.send_at:%H:%M}"\n'
        if choice.timezone:
            entry += f"{key}timezone: {choice.timezone}\n"
        new.append(entry)
        added.add(wanted)
    if not new:
        return text, added
    at = block.extent(last)[-1]
    head = "".join(block.lines[: at + 1])
    if not head.endswith("\n"):
        head += "\n"
    return head + "".join(new) + "".join(block.lines[at + 1 :]), added


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


def _add_key(entry: CommentedMap, key: str, value: Any) -> None:
    """Add a key at the end of a mapping. The comment lines below a mapping whose last line has a comment ruamel keeps
    with that last key's comment, so they move to the new key: they speak of what follows, not of it."""
    last = next(reversed(entry), None)
    entry[key] = value
    token = entry.ca.items.get(last, [None] * 4)[2] if last is not None else None
    if token is not None and "\n" in token.value.rstrip("\n"):
        own, _, below = token.value.partition("\n")
        token.value = own + "\n"
        moved = copy.copy(token)
        moved.value = "\n" + below
        entry.ca.items[key] = [None, None, moved, None]


def _pop_key(entry: CommentedMap, key: str) -> None:
    """Remove a key, giving the comment lines below it (see `_add_key`) back to the key before it."""
    keys = list(entry)
    token = entry.ca.items.pop(key, [None] * 4)[2]
    entry.pop(key, None)
    if token is None or key != keys[-1] or len(keys) < 2:
        return
    below = token.value.partition("\n")[2]
    before = entry.ca.items.setdefault(keys[-2], [None] * 4)
    if not below:
        return
    if before[2] is None:
        moved = copy.copy(token)
        moved.value = "\n" + below
        before[2] = moved
    else:
        before[2].value = before[2].value.rstrip("\n") + "\n" + below


def _flow(items: tuple[str, ...]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _atomic_write(path: Path, text: str, expect: bytes | None = None) -> None:
    """Write beside the file and rename over it, so a reader sees the old or the new file, never half.

    With `expect`, the file must still have that digest (else _Changed, and nothing is written). It is compared only
    once the new content is on disk, right before the rename, so a save by someone who does not take the lock can
    land in between only within a few system calls. The rename is an exchange where the system has one: the file it
    displaced must have that digest too, else such a save did land, and it is put back (raising _Changed)."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        checked = None
        if expect is not None:
            with path.open("rb") as fh:
                checked = os.fstat(fh.fileno()).st_ino
                if _digest(fh.read()) != expect:
                    raise _Changed
        if expect is None or not _exchange(tmp, path):
            os.replace(tmp, path)
            return
        # A different file displaced is put back after one stat, so another writer's reader barely sees ours meanwhile.
        if os.stat(tmp).st_ino == checked and _digest(Path(tmp).read_bytes()) == expect:
            Path(tmp).unlink()
            return
        _exchange(tmp, path)  # their save back in place; ours is at tmp, unless yet another save came in that instant
        if Path(tmp).read_bytes() == text.encode("utf-8"):
            Path(tmp).unlink()
        else:
            log.warning("%s: two saves raced with this edit; the one not in place is kept as %s", path, tmp)
        raise _Changed
    except BaseException:
        if Path(tmp).exists() and Path(tmp).read_bytes() == text.encode("utf-8"):
            Path(tmp).unlink()
        raise


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2: Any = None
if sys.platform == "linux":
    try:
        _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it (older glibc, some musl)
        _renameat2 = None


def _exchange(a: str | Path, b: str | Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system or file system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))
