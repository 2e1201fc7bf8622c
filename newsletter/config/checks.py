"""Walking the YAML tree once: every problem collected with its path, the dataclasses built."""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterator
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import Problem
from newsletter.model import zones
from newsletter.model.addresses import LOCAL_PART_NOT_ASCII, ascii_address
from newsletter.model.config import (
    FREQUENCIES,
    SOURCE_TYPES,
    WEEKDAYS,
    Config,
    Settings,
    Source,
    Subscriber,
)
from newsletter.model.ranking import MAX_RISING_HOURS, SORTS
from newsletter.model.topics import RISING_HOURS, Topic, keyword_error

# Unicode categories Cc, Zl and Zp: what could end or break a mail header line
_HEADER_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_SEND_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class Checker:
    """Walks the YAML tree once, collecting problems and building the dataclasses."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []  # allowed, but likely not what was meant: `check` prints them
        self.broken_topics: set[str] | None = set()  # reported already: names not to report again as unknown; None: all

    def problem(self, node: Any, key: Any, path: str, message: str) -> None:
        line, col = _position(node, key)
        self.problems.append(Problem(self.filename, line, col, path, message))

    def mapping(self, node: Any, parent: Any, key: Any, path: str, allowed: tuple[str, ...]) -> dict[Any, Any] | None:
        """Check a mapping's type and keys; unknown keys get a did-you-mean."""
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.problem(parent, key, path, f"expected a mapping, got {_kind(node)}")
            return None
        for k in node:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})"
                self.problem(node, k, join_path(path, k), f"unknown key '{k}'{extra}")
        return node

    def value(self, node: dict[Any, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """Fetch one scalar of the expected type or report it."""
        if key not in node or node[key] is None:
            return default
        value = node[key]
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            self.problem(node, key, join_path(path, key), f"expected {_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problem(node, key, join_path(path, key), f"expected {_name(kind)}, got {_kind(value)}")
            return default
        return value

    def count(self, node: dict[Any, Any], key: str, path: str, default: Any, minimum: int = 0) -> Any:
        """A whole number no smaller than minimum."""
        value = self.value(node, key, path, int, default)
        if isinstance(value, int) and value is not default and value < minimum:
            self.problem(node, key, join_path(path, key), f"must be at least {minimum}, got {value}")
            return default
        return value

    def seconds(self, node: dict[Any, Any], key: str, path: str) -> float | None:
        """A positive number of seconds, or None when absent."""
        value = node.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            self.problem(node, key, join_path(path, key), f"expected seconds, more than 0 and at most 3600, got {value!r}")
            return None
        return float(value)

    def strings(self, node: dict[Any, Any], key: str, path: str, check: Callable[[str], str | None] | None = None) -> tuple[str, ...]:
        """A list of non-empty strings, each passing `check` (which returns an error message or None).

        A lone string is refused: `any: speech, ASR` is one keyword "speech, ASR" that never matches, not two."""
        if key not in node or node[key] is None:
            return ()
        value = node[key]
        if isinstance(value, str):
            self.problem(node, key, join_path(path, key), f"expected a list, got the text {value!r}: write {key}: {_as_list(value)}")
            return ()
        if not isinstance(value, list):
            self.problem(node, key, join_path(path, key), f"expected a list of strings, got {_kind(value)}")
            return ()
        out = []
        for index, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            error = None
            if not isinstance(item, str):
                error = f"expected a string, got {_kind(item)}"
            elif not (item := item.strip()):
                error = "empty string"
            elif check is not None:
                error = check(item)
            if error is None:
                out.append(item)
            else:
                self.problem(value, index, f"{join_path(path, key)}[{index}]", error)
        return tuple(out)

    def known_topic(self, topics: dict[str, Topic]) -> Callable[[str], str | None]:
        """A check for a subscriber's topic names; topics already reported as broken are not reported again."""
        broken = self.broken_topics

        def check(name: str) -> str | None:
            if name in topics or broken is None or name in broken:
                return None
            return unknown("topic", name, list(topics)) + ("" if topics else " (no topics are defined)")

        return check

    def header_text(self, node: dict[Any, Any], key: str, path: str) -> str:
        """Text that goes into a mail header (a subscriber's name in To): one line, no control characters,
        so a CR/LF can never add a header and `send` never meets a value it must refuse."""
        text: str = self.value(node, key, path, str, "")
        if bad := _HEADER_BREAKING.search(text):
            self.problem(node, key, join_path(path, key), f"control character U+{ord(bad[0]):04X} is not allowed (this text goes into mail headers)")
            return ""
        return text

    def keywords(self, node: dict[Any, Any], key: str, path: str) -> tuple[str, ...]:
        """Keyword lists, each keyword checked by the matcher's own rules, so a config that loads always compiles;
        a comma inside a keyword (outside a /regex/) is warned about, as it is most likely two keywords run together."""
        found = self.strings(node, key, path, _keyword_error)
        items = node.get(key)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, str) and "," in item and not item.strip().startswith("/"):
                line, col = _position(items, i)
                message = (
                    f"warning: the keyword {item.strip()!r} holds a comma, so it matches only that exact text; for separate keywords write {_as_list(item)}"
                )
                self.warnings.append(Problem(self.filename, line, col, f"{join_path(path, key)}[{i}]", message))
        return found

    def timezone(self, node: dict[Any, Any], key: str, path: str, default: str) -> str:
        """An IANA zone name such as Europe/London."""
        name: str = self.value(node, key, path, str, default)
        try:
            _zone(name)
        except (ZoneInfoNotFoundError, ValueError):
            hint = zones.closest(name)
            extra = f"did you mean '{hint}'?" if hint else "use an IANA name such as Europe/London"
            self.problem(node, key, join_path(path, key), f"unknown timezone '{name}' ({extra})")
            return default
        return name

    def send_at(self, node: dict[Any, Any], key: str, path: str, default: time) -> time:
        """A 24-hour HH:MM time; YAML may read 07:30 unquoted as a sexagesimal int, so say to quote it."""
        if key not in node or node[key] is None:
            return default
        raw = node[key]
        match = _SEND_AT.match(raw) if isinstance(raw, str) else None
        if not match:
            hint = ' (write it quoted, e.g. "07:30")' if not isinstance(raw, str) else " (expected HH:MM, 24-hour)"
            self.problem(node, key, join_path(path, key), f"bad send_at {raw!r}{hint}")
            return default
        return time(int(match.group(1)), int(match.group(2)))

    def config(self, data: Any, path: Path) -> Config | None:
        if data is None:
            self.problems.append(
                Problem(
                    self.filename, 1, 1, "", "the file is empty: it needs sources, topics and subscribers (see subscribers.yaml in the repository for a start)"
                )
            )
            return None
        root = self.mapping(data, data, None, "", ("settings", "sources", "topics", "subscribers"))
        if root is None:
            return None
        settings = self.settings(root.get("settings"), root)
        sources = self.sources(root.get("sources"), root, path.parent)
        topics = self.topics(root.get("topics"), root, {s.name for s in sources})
        subscribers = self.subscribers(root.get("subscribers"), root, settings, topics)
        return Config(path, settings, sources, topics, subscribers, warnings=tuple(self.warnings))

    def settings(self, node: Any, root: dict[Any, Any]) -> Settings:
        keys = ("timezone", "send_at", "max_papers_per_topic", "horizon_days", "allow_private_network", "catch_up_hours", "fetch_every", "public_pages")
        m = self.mapping(node, root, "settings", "settings", keys)
        if m is None:
            return Settings()
        d = Settings()
        return Settings(
            timezone=self.timezone(m, "timezone", "settings", d.timezone),
            send_at=self.send_at(m, "send_at", "settings", d.send_at),
            max_papers_per_topic=self.count(m, "max_papers_per_topic", "settings", d.max_papers_per_topic, 1),
            horizon_days=self.count(m, "horizon_days", "settings", d.horizon_days, 1),
            allow_private_network=self.value(m, "allow_private_network", "settings", bool, d.allow_private_network),
            catch_up_hours=self.count(m, "catch_up_hours", "settings", d.catch_up_hours, 0),
            fetch_every=self.count(m, "fetch_every", "settings", d.fetch_every, 5),
            public_pages=self.value(m, "public_pages", "settings", bool, d.public_pages),
        )

    def sources(self, node: Any, root: dict[Any, Any], base: Path) -> tuple[Source, ...]:
        keys = ("name", "type", "url", "categories", "announce_types", "query", "max_results", "days", "replace", "timeout")
        out: list[Source] = []
        for i, item, item_path in self.items(node, root, "sources"):
            m = self.mapping(item, node, i, item_path, keys)
            if m is None:
                continue
            name = self.value(m, "name", item_path, str, "")
            kind = self.value(m, "type", item_path, str, "")
            if not name:
                self.problem(m, None, item_path, "missing 'name'")
            elif any(s.name == name for s in out):
                self.problem(m, "name", f"{item_path}.name", f"duplicate source name '{name}'")
            if kind not in SOURCE_TYPES:
                hint = difflib.get_close_matches(str(kind), SOURCE_TYPES, n=1)
                said = f"unknown type '{kind}'" if kind else "missing 'type'"
                extra = f" (did you mean '{hint[0]}'?)" if hint else f" (one of: {', '.join(SOURCE_TYPES)})"
                self.problem(m, "type" if "type" in m else None, f"{item_path}.type", said + extra)
            url = self.value(m, "url", item_path, str, None)
            source = Source(
                name=name,
                type=kind,
                url=_resolve_url(url, base) if url else None,
                categories=self.strings(m, "categories", item_path),
                announce_types=self.strings(m, "announce_types", item_path) or Source.announce_types,
                query=self.value(m, "query", item_path, str, None),
                max_results=self.count(m, "max_results", item_path, Source.max_results, 1),
                days=self.count(m, "days", item_path, Source.days, 1),
                replace=self.value(m, "replace", item_path, bool, False),
                timeout=self.seconds(m, "timeout", item_path),
            )
            missing = {"feed": not source.url, "arxiv_rss": not (source.url or source.categories), "arxiv_api": not (source.url or source.query)}
            if missing.get(kind):
                need = {"feed": "'url'", "arxiv_rss": "'categories' (or 'url')", "arxiv_api": "'query' (or 'url')"}[kind]
                self.problem(m, None, item_path, f"a {kind} source needs {need}")
            if name:
                out.append(source)
        return tuple(out)

    def topics(self, node: Any, root: dict[Any, Any], source_names: set[str]) -> dict[str, Topic]:
        keys = ("title", "description", "any", "all", "none", "min_score", "sources", "max_papers", "sort", "rising_hours")
        out: dict[str, Topic] = {}
        if node is None:
            return out
        if not isinstance(node, dict):
            self.problem(root, "topics", "topics", f"expected a mapping of topic names, got {_kind(node)}")
            self.broken_topics = None
            return out
        for name, body in node.items():
            path = join_path("topics", name)
            m = self.mapping(body, node, name, path, keys)
            if m is None:
                assert self.broken_topics is not None
                self.broken_topics.add(str(name))
                continue
            sources = self.strings(m, "sources", path, lambda s: None if s in source_names else unknown("source", s, sorted(source_names)))
            out[str(name)] = Topic(
                name=str(name),
                title=self.value(m, "title", path, str, str(name)),
                description=self.value(m, "description", path, str, ""),
                any=self.keywords(m, "any", path),
                all=self.keywords(m, "all", path),
                none=self.keywords(m, "none", path),
                min_score=self.count(m, "min_score", path, 0),
                sources=sources or None,
                max_papers=self.count(m, "max_papers", path, None, 1),
                sort=self.choice(m, "sort", path, SORTS),
                rising_hours=self.rising_hours(m, path),
            )
        return out

    def choice(self, node: dict[Any, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
        """One of `allowed` (the first when absent), with a did-you-mean when not."""
        value: str = self.value(node, key, path, str, allowed[0])
        if value not in allowed:
            hint = difflib.get_close_matches(value, allowed, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else f" (one of: {', '.join(allowed)})"
            self.problem(node, key, join_path(path, key), f"unknown {key} '{value}'{extra}")
            return allowed[0]
        return value

    def rising_hours(self, node: dict[Any, Any], path: str) -> int:
        """Hours `sort: rising` measures gains over: snapshots are kept that long, so it is bounded."""
        hours: int = self.count(node, "rising_hours", path, RISING_HOURS, 1)
        if hours > MAX_RISING_HOURS:
            self.problem(node, "rising_hours", join_path(path, "rising_hours"), f"must be at most {MAX_RISING_HOURS} (30 days), got {hours}")
            return RISING_HOURS
        return hours

    def subscribers(self, node: Any, root: dict[Any, Any], settings: Settings, topics: dict[str, Topic]) -> tuple[Subscriber, ...]:
        keys = ("email", "name", "topics", "keywords", "exclude", "min_score", "max_papers", "frequency", "day", "send_at", "timezone", "paused")
        out: list[Subscriber] = []
        seen: dict[str, dict[Any, Any]] = {}  # lower-cased address → its first entry
        known_topic = self.known_topic(topics)
        for i, item, path in self.items(node, root, "subscribers"):
            m = self.mapping(item, node, i, path, keys)
            if m is None:
                continue
            email = self.value(m, "email", path, str, "").strip()
            idn_problem = None
            if email and not email.rpartition("@")[0].isascii():
                idn_problem = f"'{email}' {LOCAL_PART_NOT_ASCII}"
            elif email and not email.isascii():
                try:
                    email = ascii_address(email)  # user@bücher.de is mailed as user@xn--bcher-kva.de
                except ValueError as exc:
                    idn_problem = f"invalid email address '{email}': {exc}"
            if not email:
                self.problem(m, None, path, "missing 'email'")
            elif idn_problem:
                self.problem(m, "email", f"{path}.email", idn_problem)
            elif not _EMAIL.match(email):
                self.problem(m, "email", f"{path}.email", f"invalid email address '{email}'")
            elif email.lower() in seen:
                self.problem(m, "email", f"{path}.email", f"duplicate subscriber '{email}' (first at line {_position(seen[email.lower()], 'email')[0]})")
            seen.setdefault(email.lower(), m)
            reported = len(self.problems)
            chosen = self.strings(m, "topics", path, known_topic)
            keywords = self.keywords(m, "keywords", path)
            if not chosen and not keywords and "email" in m and len(self.problems) == reported:
                self.problem(m, None, path, "no 'topics' and no 'keywords': this subscriber would never get mail")
            frequency = self.value(m, "frequency", path, str, "daily")
            if frequency not in FREQUENCIES:
                self.problem(m, "frequency", f"{path}.frequency", f"unknown frequency '{frequency}' (one of: {', '.join(FREQUENCIES)})")
            day = self.value(m, "day", path, str, "monday").lower()
            if day not in WEEKDAYS:
                self.problem(m, "day", f"{path}.day", f"unknown day '{day}' (one of: {', '.join(WEEKDAYS)})")
            out.append(
                Subscriber(
                    email=email,
                    name=self.header_text(m, "name", path),
                    topics=chosen,
                    keywords=keywords,
                    exclude=self.keywords(m, "exclude", path),
                    min_score=self.count(m, "min_score", path, 0),
                    max_papers=self.count(m, "max_papers", path, None, 1),
                    frequency=frequency,
                    day=day,
                    send_at=self.send_at(m, "send_at", path, settings.send_at),
                    timezone=self.timezone(m, "timezone", path, settings.timezone),
                    paused=self.value(m, "paused", path, bool, False),
                )
            )
        return tuple(out)

    def items(self, node: Any, root: dict[Any, Any], key: str) -> Iterator[tuple[int, Any, str]]:
        """The entries of a top-level list, with their paths."""
        if node is None:
            return
        if not isinstance(node, list):
            self.problem(root, key, key, f"expected a list, got {_kind(node)}")
            return
        for i, item in enumerate(node):
            yield i, item, f"{key}[{i}]"


def _position(node: Any, key: Any) -> tuple[int, int]:
    """1-based line and column of a key (or list item, or the node itself) in the source text."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return 1, 1
    try:
        if key is None:
            line, col = lc.line, lc.col
        elif isinstance(node, list):
            line, col = lc.item(key)
        else:
            line, col = lc.key(key)
    except (KeyError, IndexError, TypeError):
        line, col = lc.line, lc.col
    return line + 1, col + 1


_keyword_error = functools.lru_cache(maxsize=4096)(keyword_error)  # readers share keywords: each is parsed once per load
_zone = functools.lru_cache(maxsize=1024)(ZoneInfo)


def _resolve_url(url: str, base: Path) -> str:
    """Relative file paths in the config are relative to the config file, not the working directory."""
    if "://" in url:
        return url
    path = Path(url).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _as_list(text: str) -> str:
    """A comma-separated text as the YAML flow list it was probably meant to be, each item quoted when YAML needs it."""
    parts = [part.strip() for part in text.split(",") if part.strip()] or [text]
    return "[" + ", ".join(part if re.fullmatch(r"[\w][\w .-]*", part) else json.dumps(part) for part in parts) + "]"


def unknown(kind: str, name: str, known: list[str]) -> str:
    """ "unknown topic 'speach' (did you mean 'speech'?)", or the names there are when none is close."""
    hint = difflib.get_close_matches(name, known, n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else f" (defined: {', '.join(known)})" if known else ""
    return f"unknown {kind} '{name}'{extra}"


def join_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"{type(value).__name__} {value!r}"


def _name(kind: type | tuple[type, ...]) -> str:
    names: dict[type, str] = {str: "text", int: "a whole number", bool: "true or false", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
