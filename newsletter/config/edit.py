"""subscribers.yaml edited in place: comments and layout kept, validated, compare-and-swap under a lock, atomic."""

from __future__ import annotations

import bisect
import copy
import ctypes
import dataclasses
import errno
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

from newsletter.config import cache
from newsletter.config.checks import Checker
from newsletter.config.load import load_snapshot, parse, quick, read
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
        """The validated config; parsed again only when no process has validated the file's current bytes yet."""
        return load_snapshot(self.path, read(self.path))[0]  # read under the lock when it comes quickly: never a save half-way

    def warm(self) -> None:
        """Read ahead what an edit starts from, the file's list and the config's address index: at 100,000 readers
        they took seconds, which the first confirmation after a start would otherwise pay."""
        config = self.load()
        config.subscriber("")  # looked up once: the index is built
        _block(self.snapshot().text)

    def snapshot(self) -> Snapshot:
        data = self.path.read_bytes()
        return Snapshot(data.decode("utf-8"), cache.digest(data))

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
            cache.remember(self.path, cache.digest(text.encode("utf-8")), checked)

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

        def fast(text: str, known: Config | None) -> tuple[str, tuple[set[str], set[str]], Config | None] | None:
            cut = _remove_text(text, wanted_out) if wanted_out else _Cut(text, set(), [])
            if cut is None:
                return None
            if known is not None and any(t not in known.topics for _, choice in add for t in choice.topics):
                return None  # the round trip refuses it before anything is written
            grown = _append_text(cut.text, add) if add else _Growth(cut.text, set(), [], 0)
            if grown is None:
                return None
            derived = None if known is None else _derived(known, cut, grown)
            return grown.text, (grown.added, cut.removed), derived

        return self._change(edit, fast)

    def add(self, email: str, choice: Choice) -> bool:
        """Add a confirmed subscriber; False (and no change) when the address is already there."""
        return bool(self.change(add=[(email, choice)])[0])

    def remove(self, email: str) -> bool:
        """Remove a subscriber; False when they were not there (unsubscribing twice is fine)."""
        return bool(self.change(remove=[email])[1])

    def update(self, email: str, prefs: Preferences, defaults: Settings) -> bool:
        """Write a subscriber's preferences: unchanged keys keep their formatting, keys back at their default go.

        On a file validated before whose list is plain, only the reader's own entry goes through the round trip
        (its lines, read and written alone) and only it is checked again; otherwise the whole file does."""

        def edit(subscribers: CommentedSeq) -> bool:
            i = _index(subscribers, email)
            if i is None:
                return False
            _set_preferences(subscribers[i], prefs, defaults)
            return True

        def fast(text: str, known: Config | None) -> tuple[str, bool, Config | None] | None:
            return None if known is None else _update_entry_text(text, known, email, lambda entry: _set_preferences(entry, prefs, defaults))

        return self._change(edit, fast)

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

    def _change(self, edit: Callable[[CommentedSeq], T], fast: Callable[[str, Config | None], tuple[str, T, Config | None] | None] | None = None) -> T:
        """Make the edit on a snapshot and swap it in if the file still holds that snapshot; else redo it on a fresh read.

        The parse, round trip and validation happen outside the lock (it is held only to compare and rename),
        except on the last attempt, which holds it throughout so a busy file cannot starve the app. A text edit
        (`fast`) on content validated before is not parsed again: it gives the config it makes, derived from the
        one of that content. One on content no process has validated yet is validated right after its swap instead
        of before, so a file saved every fraction of a second cannot starve it either: if the result does not
        validate (the hand edit was broken), the previous content is put back and the problems are raised."""
        with _writer(self.path):
            for attempt in range(ATTEMPTS):
                guard: AbstractContextManager[object] = self.lock if attempt == ATTEMPTS - 1 else nullcontext()
                with guard:
                    before = self.snapshot()
                    known = self._known(before)
                    quick = fast(before.text, known) if fast else None
                    checked: Config | None = None
                    try:
                        if quick is not None:
                            text, result, checked = quick
                        else:
                            self._validate(before)  # a broken hand edit is reported, not edited further
                            yaml, data = _open(before.text)
                            result = edit(data["subscribers"])
                            text = _dump(yaml, data)
                        if text == before.text:
                            return result
                        if quick is None:
                            checked = parse(text, str(self.path))  # never write a file the pipeline would refuse
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
                    after = cache.digest(text.encode("utf-8"))
                    if checked is None:
                        checked = self._check_written(before, text, after)
                    cache.remember(self.path, after, checked)
                    return result
        raise ConcurrentEdit(f"{self.path} kept changing while it was being edited ({ATTEMPTS} attempts); try again")

    def _known(self, snapshot: Snapshot) -> Config | None:
        """The config this process parsed from exactly this content, if it did."""
        return cache.recall(self.path, snapshot.digest)

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

    def _validate(self, before: Snapshot) -> None:
        if self._known(before) is None:
            cache.remember(self.path, before.digest, parse(before.text, str(self.path)))

    def _commit(self, before: Snapshot, text: str) -> None:
        """Under the lock: replace the file with `text` if it still holds `before`; else raise _Changed and write nothing."""
        with self.lock:
            _atomic_write(self.path, text, expect=before.digest)


def _writer(path: Path) -> threading.Lock:
    with _writers_guard:
        return _writers.setdefault(str(path.resolve()), threading.Lock())


def _open(text: str, indent_from: str | None = None) -> tuple[YAML, CommentedMap]:
    """The text read for a round trip that keeps its layout (guessed from `indent_from`, by default the text itself)."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping, offset = _guess_indent(text if indent_from is None else indent_from)
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


_TOP_SUBSCRIBERS = re.compile(r"^subscribers:[ \t]*(#.*)?$", re.MULTILINE)
_ENTRY = re.compile(r"\n(?P<indent> *)- +email: *(?P<q>[\"']?)(?P<email>[^\"'#\s]+)(?P=q)[ \t]*(#.*)?$", re.MULTILINE)


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

    def by_address(self) -> dict[str, list[int]]:
        """The entries' first lines by their address as written, lower-cased."""
        out: dict[str, list[int]] = {}
        for i, m in self.entries:
            out.setdefault(m["email"].lower(), []).append(i)
        return out

    def orphaned(self, drop: set[int]) -> set[int]:
        """The comment lines right above a run of adjacent entries that are all being dropped: they spoke of those.

        A comment above entries that stay (a group's heading: "# the founders") stays with them; one indented
        deeper than the dashes belongs to the entry above it."""
        orphans: set[int] = set()
        starts = {i for i, _ in self.entries}
        for i in sorted(starts & drop):  # a run that is all dropped starts with a dropped entry
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


_known_block: tuple[str, _Block] | None = None  # the text an edit in this process last read or wrote, and its list


def _block(text: str) -> _Block | None:
    """The subscribers list if every item in it is a plain `- email: X` entry at one indentation; else None.

    The text this process last appended to is known without a scan: at 100,000 readers the scan is most of a
    confirmation's time, and the web app's edits follow one another on the text the one before wrote."""
    global _known_block
    known = _known_block
    if known is not None and known[0] == text:
        return known[1]
    block = _scan(text)
    if block is not None:
        _known_block = (text, block)
    return block


def _scan(text: str) -> _Block | None:
    """`_block` by regular expressions over the whole text, not line by line, as it is at 100,000 readers."""
    if _OTHER_LINE_BREAKS.search(text):  # lines are then not just what \n ends: the round trip knows better
        return None
    tops = list(_TOP_SUBSCRIBERS.finditer(text))
    if len(tops) != 1:
        return None
    lines = text.splitlines(keepends=True)
    start = text.count("\n", 0, tops[0].start()) + 1
    begin = tops[0].end() + 1
    after = _TOP_LEVEL.search(text, begin)
    finish = len(text) if after is None else after.start()
    end = len(lines) if after is None else text.count("\n", 0, finish)
    entries: list[tuple[int, re.Match[str]]] = []
    line, at = start - 1, begin - 1  # from the \n before the first line, which the patterns start with (a fast scan)
    for m in _ENTRY.finditer(text, at, finish):
        line += text.count("\n", at, m.start() + 1)
        at = m.start() + 1
        entries.append((line, m))
    dashes = len(_DASH.findall(text, begin - 1, finish))
    if not entries or len({m["indent"] for _, m in entries}) != 1 or dashes != len(entries):
        return None
    return _Block(lines, start, end, entries, len(entries[0][1]["indent"]))


_OTHER_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")  # where str.splitlines breaks besides \n
_TOP_LEVEL = re.compile(r"^[^ \t\n#-]", re.MULTILINE)  # a line that ends the list: the next top-level key
_DASH = re.compile(r"\n *-")


@dataclass(frozen=True)
class _Cut:
    """A text removal: the new text, the addresses removed, and the (0-based, sorted) lines of the old text that went."""

    text: str
    removed: set[str]
    dropped: list[int]


@dataclass(frozen=True)
class _Growth:
    """A text addition: the new text, the addresses added, their entries as read, and the line they went after."""

    text: str
    added: set[str]
    entries: list[dict[str, Any]]
    after: int  # 0-based line of the text before, after which the new lines were put
    lines: int = 0  # how many


def _remove_text(text: str, emails: Collection[str]) -> _Cut | None:
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
    written = block.by_address()
    for email in emails:
        found = written.get(email, [])
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
    return _Cut("".join(line for k, line in enumerate(block.lines) if k not in drop), removed, sorted(drop))


_PLAIN_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.-]+")
_PLAIN_ZONE = re.compile(r"[A-Za-z0-9_/+-]+")


def _append_text(text: str, add: Sequence[tuple[str, Choice]]) -> _Growth | None:
    """`text` with new plain entries after the last one, laid out as the round trip would write them; None when an
    address or topic would need quoting, the list is not plain, or the last entry and the new ones, read alone,
    are not what was meant. Unlike a removal this can make the file invalid (a topic removed meanwhile): the caller
    validates what it wrote, or the entries against the config of the text before."""
    block = _block(text)
    if block is None:
        return None
    lower = block.text()
    written: dict[str, list[int]] | None = None  # read only when an address to add is written somewhere already
    last = block.entries[-1][0]
    key = " " * block.lines[last].index("email")
    dash = " " * block.indent
    new: list[str] = []
    entries: list[dict[str, Any]] = []
    added: set[str] = set()
    for email, choice in add:
        address = email.strip()
        wanted = address.lower()
        if not _PLAIN_EMAIL.fullmatch(address) or not choice.topics or not all(_PLAIN_WORD.fullmatch(t) for t in choice.topics):
            return None
        if not _PLAIN_WORD.fullmatch(choice.frequency) or choice.name or choice.keywords or not _PLAIN_ZONE.fullmatch(choice.timezone or "UTC"):
            return None  # a name or keywords may need quoting: the round trip writes them
        seen = lower.count(wanted)
        if seen and written is None:
            written = block.by_address()
        present = len(written.get(wanted, [])) if seen and written is not None else 0
        if seen != present:
            return None
        if present or wanted in added:
            continue
        entry = f"{dash}- email: {address}\n{key}topics: [{', '.join(choice.topics)}]\n"
        fields: dict[str, Any] = {"email": address, "topics": list(choice.topics)}
        if choice.frequency != "daily":
            entry += f"{key}frequency: {choice.frequency}\n"
            fields["frequency"] = choice.frequency
        if choice.send_at is not None:
            entry += f'{key}send_at: "{choice.send_at:%H:%M}"\n'
            fields["send_at"] = f"{choice.send_at:%H:%M}"
        if choice.timezone:
            entry += f"{key}timezone: {choice.timezone}\n"
            fields["timezone"] = choice.timezone
        new.append(entry)
        entries.append(fields)
        added.add(wanted)
    if not new:
        return _Growth(text, added, [], 0)
    at = block.extent(last)[-1]
    tail = "".join(block.lines[last : at + 1])
    if not tail.endswith("\n"):
        tail += "\n"
    alone = quick("subscribers:\n" + tail + "".join(new))  # the new entries read as new entries, and nothing else moved
    if not isinstance(alone, dict) or alone.get("subscribers", [])[1:] != entries or str(alone["subscribers"][0].get("email")) != block.entries[-1][1]["email"]:
        return None
    head = "".join(block.lines[:last]) + tail
    grown = head + "".join(new) + "".join(block.lines[at + 1 :])
    if block.lines[at].endswith("\n"):  # the lines after the edit are the ones before with the new ones in between
        _remember_growth(grown, block, at, new)
    return _Growth(grown, added, entries, at, sum(e.count("\n") for e in new))


def _remember_growth(text: str, block: _Block, at: int, new: list[str]) -> None:
    """Keep the list of `text`, `block` with the entries `new` put after its line `at`, as `_block` would scan it."""
    global _known_block
    lines = [line for entry in new for line in entry.splitlines(keepends=True)]
    entries, line = list(block.entries), at + 1
    for entry in new:
        m = _ENTRY.match("\n" + entry.partition("\n")[0])
        if m is None:
            return
        entries.append((line, m))
        line += entry.count("\n")
    grown = _Block([*block.lines[: at + 1], *lines, *block.lines[at + 1 :]], block.start, block.end + len(lines), entries, block.indent)
    _known_block = (text, grown)


def _derived(known: Config, cut: _Cut, grown: _Growth) -> Config | None:
    """The config of a text edit, from the config of the text before: the entries removed gone, those added checked
    alone against its topics and settings, its warnings moved with the lines and entries around them; None when the
    added ones do not check (the edit is then validated as a whole, and undone when it does not)."""
    checker = Checker(str(known.path))
    fresh = checker.subscribers(grown.entries, {}, known.settings, known.topics)
    gone = [i for i, s in enumerate(known.subscribers) if s.email.lower() in cut.removed] if cut.removed else []
    taken = any((old := known.subscriber(s.email)) is not None and old.email.lower() not in cut.removed for s in fresh)
    if checker.problems or checker.warnings or len(gone) != len(cut.removed) or taken:
        return None
    warnings = []
    for warning in known.warnings:
        line = warning.line - 1  # 0-based, in the text before the removal
        entry = _SUBSCRIBER_PATH.match(warning.path)
        index = int(entry[1]) if entry else None
        if line in cut.dropped or index in gone:
            continue
        line -= bisect.bisect_left(cut.dropped, line)
        if line > grown.after:
            line += grown.lines
        path = warning.path if index is None else f"subscribers[{index - bisect.bisect_left(gone, index)}]{warning.path[entry.end() :] if entry else ''}"
        warnings.append(dataclasses.replace(warning, line=line + 1, path=path))
    return known.edited(cut.removed, fresh, tuple(warnings))


_SUBSCRIBER_PATH = re.compile(r"subscribers\[(\d+)\]")


def _set_preferences(entry: CommentedMap, prefs: Preferences, defaults: Settings) -> None:
    """Change a reader's entry to these preferences: unchanged keys keep their formatting, keys back at their default go."""
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


def _update_entry_text(text: str, known: Config, email: str, change: Callable[[CommentedMap], None]) -> tuple[str, bool, Config] | None:
    """`text` with one reader's entry changed through the round trip of its own lines, and the config that makes,
    derived from `known` (the config of `text`); None when that is not plainly safe: then the whole file goes."""
    block = _block(text)
    wanted = email.strip().lower()
    found = block.by_address().get(wanted, []) if block is not None else []
    if block is None or len(found) != 1 or block.text().count(wanted) != 1:
        return None
    span = block.extent(found[0])
    old = "".join(block.lines[k] for k in span)
    if any(c in old for c in "&*!") or not old.endswith("\n"):  # an anchor another part may refer to, or a tag
        return None
    head = "".join(block.lines[: block.start])
    yaml, data = _open(_SNIPPET_HEAD + old, head + _SNIPPET_HEAD + old)
    if len(data["subscribers"]) != 1:
        return None
    change(data["subscribers"][0])
    new = _dump(yaml, data).removeprefix(_SNIPPET_HEAD)
    alone = quick(_SNIPPET_HEAD + new)
    if not isinstance(alone, dict) or not isinstance(alone.get("subscribers"), list) or len(alone["subscribers"]) != 1:
        return None
    checker = Checker(str(known.path))
    fresh = checker.subscribers(alone["subscribers"], {}, known.settings, known.topics)
    index = [i for i, _ in block.entries].index(found[0])
    if checker.problems or checker.warnings or len(fresh) != 1 or fresh[0].email.lower() != known.subscribers[index].email.lower():
        return None
    if new == old:
        return text, True, known
    moved = new.count("\n") - old.count("\n")
    warnings = []
    for warning in known.warnings:
        if warning.path.startswith(f"subscribers[{index}]."):
            return None  # the entry's own warnings are located by reading the whole file
        warnings.append(dataclasses.replace(warning, line=warning.line + moved) if warning.line - 1 > span[-1] else warning)
    subscribers = (*known.subscribers[:index], fresh[0], *known.subscribers[index + 1 :])
    changed = dataclasses.replace(known, subscribers=subscribers, warnings=tuple(warnings))
    return "".join(block.lines[: span[0]]) + new + "".join(block.lines[span[-1] + 1 :]), True, changed


_SNIPPET_HEAD = "subscribers:\n"


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
                if cache.digest(fh.read()) != expect:
                    raise _Changed
        if expect is None or not _exchange(tmp, path):
            os.replace(tmp, path)
            return
        # A different file displaced is put back after one stat, so another writer's reader barely sees ours meanwhile.
        if os.stat(tmp).st_ino == checked and cache.digest(Path(tmp).read_bytes()) == expect:
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
