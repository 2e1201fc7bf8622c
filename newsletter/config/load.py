"""Reading subscribers.yaml with positions, so every mistake is reported at once with file:line:col."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml_rs
from filelock import FileLock, Timeout
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.reader import ReaderError

from newsletter.config import cache
from newsletter.config.checks import Checker, join_path
from newsletter.errors import ConfigError, Problem
from newsletter.model.config import Config


def default_path(explicit: str | Path | None, environ: dict[str, str]) -> Path:
    """--config, else $NEWSLETTER_CONFIG, else ./subscribers.yaml."""
    return Path(explicit or environ.get("NEWSLETTER_CONFIG") or "subscribers.yaml")


SETTLE_ATTEMPTS = 5  # reads of a file that keeps changing under a parse before its problems are believed
SETTLE_PAUSE = 0.02  # seconds between them
READ_LOCK_TIMEOUT = 0.5  # seconds a reader waits for the lock before reading without it


def load(path: Path) -> Config:
    """Read and validate the file; raise ConfigError listing every problem."""
    return load_snapshot(path)[0]


def load_snapshot(path: Path, text: str | None = None) -> tuple[Config, str]:
    """The config and the exact text it was parsed from, never a save caught half-way.

    A parse that fails on a file whose content changed meanwhile is retried on the new content, and so is one
    that succeeded on a proper prefix of what the file now holds (an in-place save still being written):
    only problems of a file that stayed the same are reported. `text`: the file's content as just read by `read`.
    """
    text = read(path) if text is None else text
    for attempt in range(SETTLE_ATTEMPTS):
        last = attempt == SETTLE_ATTEMPTS - 1
        try:
            config = validated(path, text)
        except ConfigError:
            again = read(path)
            if (again == text and text) or last:  # an empty file may be an in-place save that has only truncated so far
                raise
            text = again
            time.sleep(SETTLE_PAUSE)
            continue
        again = read(path)
        if last or again == text or not again.startswith(text):
            return config, text
        text = again
        time.sleep(SETTLE_PAUSE)
    raise AssertionError("unreachable")


def validated(path: Path, text: str) -> Config:
    """`parse`, unless this text of this file was validated before (by any process): then its config, from the cache."""
    fingerprint = cache.digest(text.encode("utf-8"))
    config = cache.recall(path, fingerprint)
    if config is None:
        config = parse(text, str(path))
        cache.remember(path, fingerprint, config)
    return config


def read(path: Path) -> str:
    """The file's text, read under its lock when that comes quickly, so a save made under the lock is never seen half-way.

    Whoever holds the lock longer (`flock subscribers.yaml.lock $EDITOR ...`) or a folder we cannot create the lock
    in does not stop reading: the file is read without it, and load_snapshot's re-reads cover unlocked saves."""
    try:
        with FileLock(str(path) + ".lock", timeout=READ_LOCK_TIMEOUT):
            return _read_unlocked(path)
    except (Timeout, OSError):
        return _read_unlocked(path)


def _read_unlocked(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 1, 1, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(path), 1, 1, "", f"not UTF-8 text: {exc.reason}")]) from exc


def parse(text: str, filename: str) -> Config:
    """Validate YAML text, raising ConfigError with every problem in file order; the filename is used in messages and to resolve relative source paths.

    The text is read first by a fast YAML 1.2 reader that knows no positions; only when that finds something to
    report (or is unsure it reads the text as ruamel would) is it read again with positions, so that the messages
    name line and column. A valid file of 100,000 readers thus takes seconds, not the minutes ruamel needs."""
    with cache.many_objects():
        data = quick(text)
        if isinstance(data, TooDeep):
            raise ConfigError([Problem(filename, data.line, data.column, "", "invalid YAML: nested too deeply to read")])
        if data is not _UNSURE:
            checker = Checker(filename)
            config = checker.config(data, Path(filename))
            if config is not None and not checker.problems and not checker.warnings:
                return config
    return _parse_positioned(text, filename)


_UNSURE = object()  # the fast reader's answer when only ruamel's reading counts
_TOO_DEEP = re.compile(r"line (\d+), column (\d+)(?s:.*)recursion limit exceeded$")  # yaml-rs past 256 levels


class TooDeep(NamedTuple):
    """Where the fast reader gave up on nesting: ruamel would take seconds over each level more (its scanner is
    quadratic in the depth of [ ] and { }), and no subscribers file nests anywhere near this deep."""

    line: int
    column: int


# What the fast reader may read otherwise than ruamel's round trip, or not refuse as it does: a character YAML does
# not allow (ruamel's reader.NON_PRINTABLE, comments included); outside comments, a tab (yaml-rs takes one in an
# indentation), a token starting with a tag (!x), a directive (%YAML), a reserved @ or `, a merge key or value
# indicator (<<, =), or | > inside [ ] { }.
_NOT_PRINTABLE = re.compile(r"[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_NOT_QUICK = re.compile(r"\t|(?:^|[\s\[{,])(?:[!%@`]|<<|=(?=[\s,\]}]|$))|[\[{,]\s*[|>]", re.MULTILINE)
_COMMENT = re.compile(r"^([^'\"\n]*?)(?:^|[ \t])#.*$", re.MULTILINE)  # one on a line with no quote before it: surely a comment


def _unsure(text: str) -> bool:
    """Whether the text holds something only ruamel's reading is to be trusted with (comments are looked at only when needed)."""
    if _NOT_PRINTABLE.search(text):
        return True
    return _NOT_QUICK.search(text) is not None and _NOT_QUICK.search(_COMMENT.sub(r"\1", text)) is not None


def quick(text: str) -> Any:
    """The document read by yaml-rs (YAML 1.2, as ruamel reads it), TooDeep, or _UNSURE when it cannot say or might differ."""
    if _unsure(text):
        return _UNSURE
    try:
        return yaml_rs.loads(text, duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error, alias_limits=_ALIAS_LIMITS)
    except yaml_rs.YAMLDecodeError as exc:  # what yaml-rs refuses, ruamel explains, unless it is only too deep
        deep = _TOO_DEEP.search(str(exc))
        return _UNSURE if deep is None else TooDeep(int(deep[1]), int(deep[2]))
    except (ValueError, TypeError, RecursionError):
        return _UNSURE


def _parse_positioned(text: str, filename: str) -> Config:
    """`parse` through ruamel's round-trip reader, which knows where every value is."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([Problem(filename, line, col, "", f"invalid YAML: {_plainly(str(exc.problem or exc.context))}")]) from exc
    except ReaderError as exc:  # a character YAML does not allow, such as NUL: located by its offset
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError([Problem(filename, line, col, "", f"invalid YAML: character U+{_code(exc.character):04X} is not allowed")]) from exc
    except RecursionError as exc:
        raise ConfigError([Problem(filename, 1, 1, "", "invalid YAML: nested too deeply to read")]) from exc
    checker = Checker(filename)
    paths = _paths(data, "")
    for dup in yaml.constructor.duplicates:
        parent = paths.get(id(dup.mapping), "")
        message = f"duplicate {'topic' if parent == 'topics' else 'key'} '{dup.key}' (first at line {dup.first}; this one is ignored)"
        checker.problems.append(Problem(filename, dup.line, dup.column, join_path(parent, dup.key), message))
    config = checker.config(data, Path(filename))
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: (p.line, p.column)))
    assert config is not None
    return config


@dataclass(frozen=True)
class _Duplicate:
    """A key given twice in one mapping; YAML would silently keep one, so it is a problem to report."""

    mapping: CommentedMap
    key: Any
    line: int
    column: int
    first: int  # line of the first occurrence


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, but collecting every duplicate key (keeping the first) instead of
    stopping at the first one, so duplicates are reported with their path alongside all other problems."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicates: list[_Duplicate] = []

    def get_single_data(self) -> Any:
        """The document, once its size with every alias expanded is known to be bounded."""
        node = self.composer.get_single_node()
        if node is None:
            return None
        _bounded(node)
        return self.construct_document(node)

    def check_mapping_key(self, node: MappingNode, key_node: Node, mapping: Any, key: Any, value: Any) -> bool:
        if key not in mapping:
            return True
        same = (k.start_mark.line + 1 for k, _ in node.value if k is not key_node and getattr(k, "value", None) == key_node.value)
        mark = key_node.start_mark
        self.duplicates.append(_Duplicate(mapping, key, mark.line + 1, mark.column + 1, next(same, node.start_mark.line + 1)))
        return False


_ALIAS = re.compile(r"found undefined alias '(?P<name>[^']*)'")
_BAD_START = re.compile(r"found character '(?P<char>[@`%])' that cannot start any token")


def _plainly(problem: str) -> str:
    """The YAML parser's wording for the usual slips, said as what to do instead."""
    if problem == "found character '\\t' that cannot start any token":
        return "a tab character; YAML indents with spaces only: replace the tab with spaces"
    if alias := _ALIAS.fullmatch(problem):
        name = alias["name"]
        return f'*{name} reads as a YAML alias (a reference to an &{name} anchor); to mean the text, quote it: "*{name}" (a keyword\'s wildcard goes at the end: {name}*)'
    if bad := _BAD_START.fullmatch(problem):
        return f'text cannot start with {bad["char"]} in YAML: quote it ("{bad["char"]}...")'
    return problem


def _code(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


MAX_NODES = 2_000_000  # values in the file with every alias expanded: 100,000 subscribers take about a million
_ALIAS_LIMITS = yaml_rs.AliasLimits(max_total_replayed_events=MAX_NODES)


def _bounded(root: Node) -> None:
    """Refuse a document whose aliases expand it past MAX_NODES: a few hundred bytes of nested aliases
    (a "billion laughs") would otherwise make every walk over the config take for ever.

    Sizes are counted once per node, so this takes time linear in the file however the aliases nest.
    """
    size: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        size[id(node)] = total = 1 + sum(size[id(child)] for child in children)
        if total > MAX_NODES:
            raise MarkedYAMLError(problem=f"aliases expand this value to more than {MAX_NODES:,} values", problem_mark=node.start_mark)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _paths(node: Any, path: str) -> dict[int, str]:
    """The path of every mapping and list in the tree, by object identity."""
    if isinstance(node, CommentedMap):
        children = [(join_path(path, key), value) for key, value in node.items()]
    elif isinstance(node, CommentedSeq):
        children = [(f"{path}[{i}]", value) for i, value in enumerate(node)]
    else:
        return {}
    out = {id(node): path}
    for child_path, child in children:
        out.update(_paths(child, child_path))
    return out
