"""Topic rules: which papers belong to which topic, why, and which words to highlight.

Keyword syntax (the user-facing contract):

* ``LoRA`` — a word; matches the title or abstract case-insensitively on word boundaries: the text
  character before and after a match must not be a letter, digit or underscore (``RAG`` does not match
  "fragment", ``C++`` matches "C++ code" and "(C++)" but not "C++11").
* ``fine-tuning`` / ``large language model`` — a phrase: a space or hyphen between words matches any run
  of spaces and hyphens, or none ("fine tuning", "Fine-Tuning", "finetuning").
* ``distill*`` — a trailing ``*`` matches any ending of the last word (letters, digits, underscore).
* ``"A*"`` — double quotes make the text literal: no ``*`` wildcard, no field prefix inside.
* ``/diffusion (model|policy)/`` — a regular expression, case-insensitive, searched as written in the
  title and in the abstract: no word boundaries are added (regex users say what they mean).
* ``title:…``, ``abstract:…`` — restrict any of the forms above to one field.
* ``author:Yann LeCun`` — one whole author name (case-insensitive, whitespace-folded);
  ``author:Yann Le*`` — names starting with that (any continuation, spaces included);
  ``author:/lecun$/`` — regex searched in the folded name.
* ``category:cs.CL`` — one arXiv category, exact and case-insensitive; ``category:cs.*`` — prefix;
  ``category:/^(cs|stat)\\.ML$/`` — regex.

Also: a keyword is invalid (see `keyword_error`) when empty, with an unknown field prefix, a bad regex,
a misplaced ``*`` or more than `MAX_PHRASE_WORDS` words; ``sources: []`` restricts nothing, like no
``sources``; a paper with no score counts as score 0.

How matching stays fast: the title/abstract keywords of all topics are compiled into one Aho-Corasick
automaton (ahocorasick-rs, a DFA), and a paper's title and abstract become one *token text* of bytes (for ASCII text one
``bytes.translate``): lowercase, each separator a space, each other non-word character NUL. A keyword's
*token forms* (its lowercase words with NUL for non-word characters, one space or nothing between them,
after a space or NUL and, unless a prefix, before one: " fine tuning ", "\\0finetuning "; " distill" for
``distill*``) occur in that text exactly where the keyword matches (but for a phrase with separators in a
row between its words: the text around such runs is scanned again, collapsed), so one pass of the
automaton decides every keyword of plain words; a hit of any other (``C++``, as NUL stands for any
non-word character) is confirmed by the keyword's regex on the lowercased field. A ``/regex/`` keyword
runs where the automaton finds a word that all its matches contain (``divide`` for ``/divides?/``), else
on every paper: the slow path, keep those few. What a paper matches is kept as bits of an int, so rules
are decided by a few int operations. Case-insensitivity relies on ``str.lower()``, which agrees with
``re.IGNORECASE`` except for a few exotic letters (dotted capital I, final sigma).
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import ahocorasick_rs
import regex as user_re  # for user /regexes/: a search can be given a time limit

from newsletter.errors import KeywordError
from newsletter.model.paper import Paper

FIELDS = ("title", "abstract", "author", "category")
TEXT_FIELDS = ("title", "abstract")
CLAUSES = ("any", "all", "none")
MAX_PHRASE_WORDS = 8  # a phrase compiles to up to 2 ** 9 automaton entries (see `_token_forms`)
_SEP = "[\\s\\-\u2010\u2011]"  # a separator: whitespace, hyphen-minus, hyphen, non-breaking hyphen
_SEP_RUN = _SEP + "*"
_SEP_SPLIT = re.compile(_SEP + "+")
_WORD = re.compile(r"\w+")
_NONWORD = re.compile(r"\W")
_PREFIX = re.compile(r"([A-Za-z_]+):")


# ASCII text in one pass: capitals to lowercase, separators to a space, other non-word characters to NUL
_ASCII_FOLD = bytes(ord(" " if re.fullmatch(_SEP, chr(c)) else "\0" if _NONWORD.fullmatch(chr(c)) else chr(c).lower()) for c in range(128)) + bytes(
    range(128, 256)
)  # a bytes.translate table: several times faster than str.translate


_MARK = b"\xff"  # between title and abstract in the automaton's text: a byte no UTF-8 text has, so in no form
_SEP_RUNS = re.compile(b"   *")  # in token text: separators in a row (a literal start lets `re` skip ahead)
_RUN = "  "  # an automaton key: separators in a row, after which phrases are looked for again (`Matcher._rescan`)
_SEP_OTHER = re.compile("[^\\S ]|[\\-\u2010\u2011]")  # a separator other than a space
_NONSEP = re.compile("[^\\w\\s\\-\u2010\u2011]")  # a non-word character that is no separator

REGEX_SECONDS = 0.05  # one search of one user /regex/ in one field; past it the search counts as no match
GIVE_UP_AFTER = 3  # searches that ran out of time before a /regex/ is given up for the rest of a run
# Texts a /regex/ is tried on at `check`: runs that make nested repeats such as (a+)+$ or (\w+\s?)+$ backtrack.
_PROBES = ("a" * 48 + "!", "ab " * 24 + "!", "word " * 16 + "1!", "x" * 24 + "-" * 24 + "!")
_MIN_WORD = 3  # a shorter required word of a /regex/ would hardly ever spare its search
RISING_HOURS = 24  # default `rising_hours` of a topic: a day of fetches
_VALUE_CACHE = 100_000  # author names / categories whose keyword matches each Matcher remembers
_MARKS_CACHE = 8192  # papers' marks remembered across matchers: edition pages mark the same papers for many readers
_PATTERN_CACHE = 4096  # keywords' compiled highlighting patterns (every reader's personal keywords among them)


@dataclass(frozen=True)
class Topic:
    """One topic rule as configured; the matcher compiles many of these together."""

    name: str
    title: str
    description: str = ""
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    min_score: int = 0
    sources: tuple[str, ...] | None = None
    max_papers: int | None = None
    sort: str = "relevance"  # relevance | trending | rising | newest (newsletter.model.ranking)
    rising_hours: int = RISING_HOURS  # the window `rising` measures popularity gained over


@dataclass(frozen=True)
class Keyword:
    """One parsed keyword, so the matcher, `explain` and tests all read the rule syntax the same way."""

    text: str  # as written in the rule
    field: str | None  # "title", "abstract", "author", "category"; None means title and abstract
    words: tuple[str, ...] = ()  # title/abstract: the literal words; author/category: the one literal value
    prefix: bool = False  # a trailing * was given
    regex: str | None = None  # the body of /.../

    @property
    def key(self) -> tuple[str | None, str | None, tuple[str, ...], bool]:
        """Identity of what the keyword matches, so equivalent spellings are compiled once."""
        return (self.field, self.regex, tuple(w.lower() for w in self.words), self.prefix)

    def pattern(self) -> re.Pattern[str] | user_re.Pattern[str]:
        """The regex this keyword stands for in a title or abstract (or in a folded author name/category),
        compiled once per keyword: highlighting asks for it per paper."""
        return _keyword_pattern(self.regex, self.words, self.prefix)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the keyword matches in `text`, for highlighting; a /regex/ that runs out of time marks nothing."""
        pattern = self.pattern()
        try:
            if isinstance(pattern, re.Pattern):
                return [m.span() for m in pattern.finditer(text) if m.end() > m.start()]
            return [m.span() for m in pattern.finditer(text, timeout=REGEX_SECONDS) if m.end() > m.start()]
        except TimeoutError:
            return []


@lru_cache(maxsize=_PATTERN_CACHE)
def _keyword_pattern(regex: str | None, words: tuple[str, ...], prefix: bool) -> re.Pattern[str] | user_re.Pattern[str]:
    """`Keyword.pattern`, kept: building the source and looking it up in the modules' small caches cost more than the search."""
    if regex is not None:
        return user_re.compile(regex, user_re.IGNORECASE)
    body = _SEP_RUN.join(re.escape(w) for w in words) + (r"\w*" if prefix else "")
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def parse_keyword(text: str) -> Keyword:
    """Read one keyword of a rule; raises KeywordError with a short human message when it is not valid."""
    body = text.strip()
    if not body:
        raise KeywordError("empty keyword")
    field: str | None = None
    m = _PREFIX.match(body)
    if m:
        name = m.group(1).lower()
        if name not in FIELDS:
            hint = difflib.get_close_matches(name, FIELDS, n=1)
            advice = f"did you mean '{hint[0]}:'?" if hint else f"known: {', '.join(f + ':' for f in FIELDS)}"
            raise KeywordError(f"unknown field '{m.group(0)}' ({advice}; quote the keyword to match a colon literally)")
        field = name
        body = body[m.end() :].strip()
        if not body:
            raise KeywordError(f"nothing after '{field}:'")
    if body.startswith("/"):
        if len(body) < 2 or not body.endswith("/"):
            raise KeywordError("a regex must be written /like this/")
        regex = body[1:-1]
        if not regex:
            raise KeywordError("empty regex //")
        try:
            re.compile(regex, re.IGNORECASE)  # the syntax is Python's, and so are the messages
            compiled = user_re.compile(regex, user_re.IGNORECASE)
        except (re.error, user_re.error) as e:
            raise KeywordError(f"invalid regex /{regex}/: {e}") from None
        for probe in _PROBES:
            try:
                compiled.search(probe, timeout=REGEX_SECONDS)
            except TimeoutError:
                raise KeywordError(
                    f"regex /{regex}/ backtracks without end: it took over {REGEX_SECONDS * 1000:.0f} ms on a {len(probe)}-character text; "
                    "avoid nested repeats such as (a+)+"
                ) from None
        return Keyword(text, field, regex=regex)
    prefix = False
    if body.startswith('"'):
        if len(body) < 2 or not body.endswith('"'):
            raise KeywordError("unterminated quote")
        body = body[1:-1]
    else:
        if body.endswith("*"):
            prefix, body = True, body[:-1]
        if "*" in body:
            raise KeywordError("'*' is only allowed at the end of a keyword (use /regex/ for more)")
        if prefix and not body.strip():
            raise KeywordError("'*' alone would match everything")
    if field in ("author", "category"):
        value = " ".join(body.split())
        if not value:
            raise KeywordError(f"nothing after '{field}:'")
        return Keyword(text, field, (value,), prefix)
    words = tuple(w for w in _SEP_SPLIT.split(body) if w)
    if not words:
        raise KeywordError("empty keyword")
    if len(words) > MAX_PHRASE_WORDS:
        raise KeywordError(f"a phrase may have at most {MAX_PHRASE_WORDS} words (use /regex/ for longer ones)")
    if not any(_WORD.search(w) for w in words):
        raise KeywordError("a keyword needs a letter or digit (use /regex/ to match punctuation)")
    if prefix and not re.search(r"\w$", body):
        raise KeywordError("'*' must directly follow a letter or digit")
    return Keyword(text, field, words, prefix)


def keyword_error(keyword: str) -> str | None:
    """Lets the config loader report a bad keyword precisely instead of failing later: None when valid."""
    try:
        parse_keyword(keyword)
    except KeywordError as e:
        return str(e)
    return None


def _token_forms(words: tuple[str, ...], prefix: bool) -> set[str]:
    """Every way a keyword's words can look in token text (see `_token_text`), so that one automaton finds
    the keywords of all topics at once: lowercase, NUL for each non-word character, one space (a run of
    separators) or nothing between words, after a space or NUL and, unless a prefix, before one.
    """
    lowered = [_NONWORD.sub("\0", w.lower()) for w in words]
    bodies = [lowered[0]]
    for word in lowered[1:]:
        bodies = [body + sep + word for body in bodies for sep in (" ", "")]
    ends = ("",) if prefix else (" ", "\0")
    return {start + body + end for body in bodies for start in (" ", "\0") for end in ends}


def _value_test(kw: Keyword) -> Callable[[str], object]:
    """A predicate on a folded author name or category (see `_fold`)."""
    if kw.regex is not None:
        return _Bounded(user_re.compile(kw.regex, user_re.IGNORECASE))
    value = kw.words[0].lower()
    return (lambda s: s.startswith(value)) if kw.prefix else value.__eq__


def _fold(value: str) -> str:
    """Author names and categories compare lowercased with whitespace runs folded to one space."""
    return " ".join(value.split()).lower()


def _fold_text(text: str) -> str:
    """What `_ASCII_FOLD` does to ASCII text, for any text (slower)."""
    return _NONSEP.sub("\0", _SEP_OTHER.sub(" ", text.lower()))


def _token_text(title: str, abstract: str) -> bytes:
    """Title and abstract as the automaton reads them, UTF-8 in one text for one pass, the fields apart by
    `_MARK`: lowercase, each separator a space, each other non-word character NUL, a space around each
    field. A form of `_token_forms` occurs in it exactly where its keyword's regex matches, but for the
    NULs, which stand for any non-word character, and for separators in a row (see `Matcher._rescan`).
    (UTF-8 needs no care: a form's bytes occur in it only where its characters do.)
    """
    if title.isascii() and abstract.isascii():
        return f" {title} \xff {abstract} ".encode("latin-1").translate(_ASCII_FOLD)  # \xff: `_MARK`
    return f" {_fold_text(title)} ".encode() + _MARK + f" {_fold_text(abstract)} ".encode()


def _bits(mask: int) -> Iterator[int]:
    """The positions of the set bits of `mask`, lowest first (keyword ids, rule numbers)."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class _Bounded:
    """A user /regex/ searched with a time limit: a search that runs out counts as no match, and a regex that
    runs out GIVE_UP_AFTER times is given up (matches nothing) for the rest of the matcher's life, so one
    hostile rule or abstract can never stall a send. `regex` also avoids most catastrophic backtracking."""

    def __init__(self, pattern: user_re.Pattern[str]) -> None:
        self.pattern = pattern
        self.timeouts = 0

    def __call__(self, text: str) -> bool:
        if self.timeouts >= GIVE_UP_AFTER:
            return False
        try:
            return self.pattern.search(text, timeout=REGEX_SECONDS) is not None
        except TimeoutError:
            self.timeouts += 1
            return False


def _matching_regex(regex: str) -> tuple[user_re.Pattern[str], bool]:
    """The user's regex for matching, and whether it is to run on the lowercased field.

    Under IGNORECASE `re` cannot jump to a literal, so a regex that says nothing about case (no capital,
    no escape that could spell one, no inline flag) runs case-sensitively on lowercased text instead,
    several times faster; `Keyword.pattern` still serves highlighting.
    """
    plain = re.sub(r"\\.", lambda m: "" if m.group()[1] in "WSDBAZ" else m.group(), regex)
    if plain == plain.lower() and not re.search(r"\\[xuUN]|\(\?[A-Za-z-]", plain):
        return user_re.compile(regex), True
    return user_re.compile(regex, user_re.IGNORECASE), False


def _required_word(regex: str) -> str:
    """A run of word characters that every match of `regex` contains, so that the search can be skipped
    for text without it; '' when none is evident. Read conservatively: nothing after the first group or
    class, nothing at all with an alternation, no character that a quantifier makes optional.
    """
    if "|" in regex:
        return ""
    runs, run, i = [], "", 0
    while i < len(regex):
        c = regex[i]
        if c in "([":
            break
        if _WORD.fullmatch(c):
            run += c
        else:
            runs.append(run[:-1] if c in "?*{" else run)
            run = ""
            if c == "{":
                i = regex.find("}", i)
                if i < 0:
                    break
            elif c == "\\":
                i += 1
        i += 1
    return max([*runs, run], key=len)


def _lowered_pattern(kw: Keyword) -> re.Pattern[str]:
    """The keyword's regex for lowercased text, starting with a literal so that `re` can skip ahead fast.

    `lit(?<!\\wlit)` says what a leading `(?<!\\w)` says, but lets the search look for `lit` first.
    """
    words = [re.escape(w.lower()) for w in kw.words]
    body = _SEP_RUN.join([f"{words[0]}(?<!\\w{words[0]})", *words[1:]]) + (r"\w*" if kw.prefix else "")
    return re.compile(rf"{body}(?!\w)")


@dataclass(frozen=True)
class Hit:
    """A keyword that matched a paper, and where, for `explain`."""

    keyword: str
    fields: tuple[str, ...]  # "title", "abstract", "authors", "categories"

    def __str__(self) -> str:
        return f'"{self.keyword}" in {"+".join(self.fields)}'


@dataclass(frozen=True)
class Clause:
    """The verdict of one clause of a rule on one paper."""

    name: str  # "any", "all", "none", "min_score", "sources"
    ok: bool
    hits: tuple[Hit, ...] = ()
    misses: tuple[str, ...] = ()  # keywords of the clause that did not match
    detail: str = ""  # min_score / sources: the comparison made

    def __str__(self) -> str:
        hits = ", ".join(map(str, self.hits))
        listed = ", ".join(f'"{k}"' for k in self.misses)
        if self.name == "any":
            return f"any: {hits}" if self.ok else f"any: none of [{listed}] matched"
        if self.name == "all":
            return f"all: {hits}" if self.ok else f"all: missing {listed}"
        if self.name == "none":
            return "none: –" if self.ok else f"none: {hits}"
        return f"{self.name}: {self.detail}"


@dataclass(frozen=True)
class Explanation:
    """Why one topic does or does not take one paper, printable as one line for `topics explain`."""

    topic: str
    matched: bool
    clauses: tuple[Clause, ...]
    width: int = 0  # pad the label to this, so the lines of one paper align
    label: str = ""  # how to show the topic, when not by its name

    def __str__(self) -> str:
        shown = self.clauses if self.matched else tuple(c for c in self.clauses if not c.ok)
        reasons = "; ".join(map(str, shown)) or "no conditions: takes every paper"
        return f"{(self.label or self.topic).ljust(self.width)}  {'MATCH' if self.matched else 'no match':8}  {reasons}"


class Found(NamedTuple):
    """Which keywords hit each field of one paper, as bits by keyword id (`Matcher.keywords_of`): what ranking weighs.
    (A named tuple: one is built per paper matched, and a frozen dataclass costs several times as much to build.)"""

    title: int = 0
    abstract: int = 0
    authors: int = 0
    categories: int = 0

    @property
    def any(self) -> int:
        return self.title | self.abstract | self.authors | self.categories


@dataclass(frozen=True)
class Marks:
    """Character spans of title and abstract to highlight: sorted, merged, half-open (start, end); and the
    author names and categories that author:/category: keywords matched, which have no span to mark."""

    title: list[tuple[int, int]]
    abstract: list[tuple[int, int]]
    values: tuple[str, ...] = ()


@lru_cache(maxsize=_MARKS_CACHE)
def _marks(keywords: tuple[Keyword, ...], title: str, abstract: str, authors: tuple[str, ...], categories: tuple[str, ...]) -> Marks:
    """`Matcher.marks` from what it reads, kept: scanning with every keyword's regex is the costly part of a page."""
    spans: dict[str, list[tuple[int, int]]] = {"title": [], "abstract": []}
    values: dict[str, None] = {}
    for kw in keywords:
        if kw.field in ("author", "category"):
            test = _value_test(kw)
            values.update((v, None) for v in (authors if kw.field == "author" else categories) if test(_fold(v)))
            continue
        for field, text in (("title", title), ("abstract", abstract)):
            if kw.field in (None, field):
                spans[field].extend(kw.spans(text))
    return Marks(title=_merge(spans["title"]), abstract=_merge(spans["abstract"]), values=tuple(values))


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort spans and merge those that overlap or touch."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


class Matcher:
    """All topic rules compiled together once, so matching a paper costs one scan of its title and abstract.

    What a paper matches is kept as bits of an int, in one of two layouts (`_HOT`, `_BOTH`):
    `topics_for` needs only a few hundred bits, small ints being fast: bit i for rule i switched on by
    a keyword of its any clause (of its all clause if it has no any), which decides a rule with only an
    any clause, then one bit per fact that `_tests` reads for the other rules; `match` needs those and
    one bit per keyword (ranking weighs them), so its layout has the keywords' bits above the hot ones
    (from `_width`) and one scan sets both. Above those come the bits of hits still to be confirmed by
    their regex (`_checks`).
    `_switches[layout][kid]` holds the bits that a match of keyword `kid` sets.
    """

    _HOT, _BOTH = 0, 1  # layouts of found bits (see the class doc)

    def __init__(self, topics: Sequence[Topic]) -> None:
        """Compile every rule; raises KeywordError naming each invalid keyword and its topic."""
        self._topics = list(topics)
        self._keywords: list[Keyword] = []
        self._text_ids: dict[str, int] = {}  # keyword as written -> id
        ids: dict[tuple[str | None, str | None, tuple[str, ...], bool], int] = {}
        errors: list[str] = []
        parsed: dict[str, Keyword] = {}  # keyword as written -> read: 100,000 readers' own rules repeat a few hundred

        def compile_clause(topic: Topic, clause: str) -> list[int]:
            out: dict[int, None] = {}
            for text in getattr(topic, clause):
                kw = parsed.get(text)
                if kw is None:
                    try:
                        kw = parsed[text] = parse_keyword(text)
                    except KeywordError as e:
                        errors.append(f"topic '{topic.name}', {clause}: '{text}': {e}")
                        continue
                if kw.key not in ids:
                    ids[kw.key] = len(self._keywords)
                    self._keywords.append(kw)
                self._text_ids[text] = ids[kw.key]
                out[ids[kw.key]] = None
            return list(out)

        clauses = [[compile_clause(topic, c) for c in CLAUSES] for topic in self._topics]
        if errors:
            raise KeywordError("invalid topic keywords:\n  " + "\n  ".join(errors))
        self._index = {topic.name: topic for topic in self._topics}
        self._names = [topic.name for topic in self._topics]
        self._marking: dict[tuple[str, ...], tuple[Keyword, ...]] = {}  # topic names -> the keywords `marks` marks with, found once

        hot = [0] * len(self._keywords)
        # per rule not decided by one hit: the bits to look at, those of them that must be set (a hit of the
        # any clause, each keyword of the all clause; not the none clause), min_score and sources
        self._tests: list[tuple[int, int, int, frozenset[str]] | None] = []
        self._simple = self._tested = self._always = 0  # rules decided by one hit / by `_tests` / without any/all
        width = len(self._topics)

        def new_bit(kids: Iterable[int]) -> int:
            nonlocal width
            bit, width = 1 << width, width + 1
            for kid in kids:
                hot[kid] |= bit
            return bit

        for i, (topic, (any_, all_, none)) in enumerate(zip(self._topics, clauses, strict=True)):
            for kid in any_ or all_:  # without one of these the rule cannot take the paper
                hot[kid] |= 1 << i
            sources = frozenset(topic.sources or ())
            if any_ and not all_ and not none and topic.min_score <= 0 and not sources:
                self._simple |= 1 << i
                self._tests.append(None)
                continue
            self._tested |= 1 << i
            if not any_ and not all_:
                self._always |= 1 << i
            need = (1 << i if any_ else 0) | sum(new_bit([kid]) for kid in all_)
            self._tests.append((need | (new_bit(none) if none else 0), need, topic.min_score, sources))
        self._width = width  # where the keywords' bits start in layout `_BOTH`
        self._switches = (hot, [bits | 1 << (width + kid) for kid, bits in enumerate(hot)])

        # one automaton for all title/abstract keywords: the token forms of each phrase, and the required word
        # of each /regex/ that has one; its value holds a hit's found bits per layout and field (title,
        # abstract). A phrase of plain words is decided by its hit; the hit of any other keyword (C++, as
        # NUL stands for any non-word character; a regex) leaves it to its regex (`_checks`), in that field
        entries: dict[str, list[int]] = {}
        self._checks: list[tuple[int, Callable[[str], object], bool]] = []  # keyword id, search, on lowered text
        self._regexes: list[tuple[int, list[int], _Bounded, bool]] = []  # /regexes/ searched in every paper
        self._values: tuple[list[tuple[int, Callable[[str], object]]], ...] = ([], [])  # author:, category:
        self._value_found: tuple[dict[str, tuple[int, int]], ...] = ({}, {})  # value -> found bits per layout
        self._check_shift = (width, width + len(self._keywords))
        for kid, kw in enumerate(self._keywords):
            if kw.field in ("author", "category"):
                self._values[kw.field == "category"].append((kid, _value_test(kw)))
                continue
            fields = [f for f, name in enumerate(TEXT_FIELDS) if kw.field in (None, name)]
            check: tuple[int, Callable[[str], object], bool] | None
            if kw.regex is not None:
                pattern, on_lowered = _matching_regex(kw.regex)
                word = _required_word(kw.regex) if on_lowered else ""
                if len(word) < _MIN_WORD:
                    self._regexes.append((kid, fields, _Bounded(pattern), on_lowered))
                    continue
                keys, check = {word}, (kid, _Bounded(pattern), on_lowered)
            else:
                keys = _token_forms(kw.words, kw.prefix)
                plain = all(_WORD.fullmatch(w.lower()) for w in kw.words)
                check = None if plain else (kid, _lowered_pattern(kw).search, True)
            if check is None:
                bits = [switch[kid] for switch in self._switches]
            else:
                bits = [1 << (shift + len(self._checks)) for shift in self._check_shift]
                self._checks.append(check)
            for key in keys:
                found = entries.setdefault(key, [0, 0, 0, 0])
                for layout, f in itertools.product((self._HOT, self._BOTH), fields):
                    found[2 * layout + f] |= bits[layout]
        # a run of separators, after which `_rescan` finds the phrases across it
        self._run = [1 << (shift + len(self._checks)) for shift in self._check_shift]
        self._longest = max((len(key.encode()) for key in entries), default=0)
        self._automaton: ahocorasick_rs.BytesAhoCorasick | None = None
        self._found: list[list[int]] = []  # per layout and field (2 * layout + field): by automaton key, its found bits
        if entries:
            entries[_RUN] = [self._run[layout] for layout in (self._HOT, self._HOT, self._BOTH, self._BOTH)]
            self._run_key = len(entries) - 1  # the automaton key of `_RUN`, added last
            # a DFA: the fastest scan (twice pyahocorasick's here), for a slower build (some 15 ms for 4,400 forms)
            self._automaton = ahocorasick_rs.BytesAhoCorasick([key.encode() for key in entries], implementation=ahocorasick_rs.Implementation.DFA)
            self._found = [[found[slot] for found in entries.values()] for slot in range(4)]

    def _scan(self, title: str, abstract: str, layout: int) -> tuple[int, int]:
        """The found bits of the title and of the abstract: one automaton pass over both, then the regexes
        of the hits that call for one, and the /regexes/ without a required word."""
        if self._automaton is None and not self._regexes:
            return 0, 0
        title_found = abstract_found = 0
        if self._automaton is not None:
            text = _token_text(title, abstract)
            cut = text.index(_MARK)
            in_title, in_abstract = self._found[2 * layout], self._found[2 * layout + 1]
            hits = self._automaton.find_matches_as_indexes(text, overlapping=True)
            for key, start, _ in hits:
                if start < cut:
                    title_found |= in_title[key]
                else:
                    abstract_found |= in_abstract[key]
            if (title_found | abstract_found) & self._run[layout]:
                title_found, abstract_found = self._rescan(text, hits, cut, layout, title_found, abstract_found)
        shift = self._check_shift[layout]
        if (title_found | abstract_found).bit_length() <= shift and not self._regexes:  # no hit to confirm (most papers)
            return title_found, abstract_found
        switch, fields, lowered = self._switches[layout], (title, abstract), ["", ""]
        found = [title_found & (1 << shift) - 1, abstract_found & (1 << shift) - 1]
        for f, pending in enumerate((title_found >> shift, abstract_found >> shift)):
            for check in _bits(pending):
                kid, search, on_lowered = self._checks[check]
                if on_lowered and not lowered[f]:
                    lowered[f] = fields[f].lower()
                if search(lowered[f] if on_lowered else fields[f]):
                    found[f] |= switch[kid]
        for kid, in_fields, search, on_lowered in self._regexes:
            for f in in_fields:
                if on_lowered and not lowered[f]:
                    lowered[f] = fields[f].lower()
                if fields[f] and search(lowered[f] if on_lowered else fields[f]):
                    found[f] |= switch[kid]
        return found[0], found[1]

    def _rescan(self, text: bytes, hits: list[tuple[int, int, int]], cut: int, layout: int, title_found: int, abstract_found: int) -> tuple[int, int]:
        """The found bits without the run flag and with the phrases across runs of separators, which the token
        text keeps (collapsing them would cost every paper a search): the text around the runs is collapsed
        and scanned again. The part of a phrase before its first run or after its last is shorter than the
        longest form, and so is the text between two of its runs: windows reaching that far around each
        run, merged, hold it whole. The runs are where the automaton's `hits` found the run key (overlapping: one
        per pair of separators in a row), which spares a search of the text for them.
        """
        windows: list[list[int]] = []
        for key, at, stop in hits:
            if key != self._run_key:
                continue
            start, end = at - self._longest, stop + self._longest
            if windows and start <= windows[-1][1]:
                windows[-1][1] = end
            else:
                windows.append([max(start, 0), end])
        found = [title_found & ~self._run[layout], abstract_found & ~self._run[layout]]
        for start, end in windows:
            part = _SEP_RUNS.sub(b" ", text[start:end])
            mark = part.find(_MARK)
            for key, at, _ in self._automaton.find_matches_as_indexes(part, overlapping=True):  # type: ignore[union-attr]
                f = start > cut if mark < 0 else at > mark
                found[f] |= self._found[2 * layout + f][key]
        return found[0], found[1]

    def _scan_values(self, values: Iterable[str], f: int, layout: int) -> int:
        """The found bits of the author: (f=0) or category: (f=1) keywords for these values; each value is
        tested once and remembered (up to `_VALUE_CACHE`), as the same names and categories keep coming."""
        known = self._value_found[f]
        found = 0
        for value in values:
            bits = known.get(value)
            if bits is None:
                folded, hot, both = _fold(value), 0, 0
                for kid, test in self._values[f]:
                    if test(folded):
                        hot |= self._switches[self._HOT][kid]
                        both |= self._switches[self._BOTH][kid]
                bits = (hot, both)
                if len(known) < _VALUE_CACHE:
                    known[value] = bits
            found |= bits[layout]
        return found

    def topics_for(self, paper: Paper) -> list[str]:
        """Names of the topics the paper belongs to, in the order the topics were given."""
        title, abstract = self._scan(paper.title, paper.abstract, self._HOT)
        found = title | abstract
        if self._values[0]:
            found |= self._scan_values(paper.authors, 0, self._HOT)
        if self._values[1]:
            found |= self._scan_values(paper.categories, 1, self._HOT)
        return self._named(self._taken(found, paper))

    def match(self, paper: Paper) -> tuple[list[str], Found]:
        """The paper's topics (as `topics_for`) and where each keyword hit, from one scan: ranking weighs the latter."""
        taken, found = self.take(paper)
        return self._named(taken), found

    def take(self, paper: Paper) -> tuple[int, Found]:
        """`match` with the topics as bits by topic number (bit i: `topics[i]`), for ranking, which goes through them
        once anyway: no list of names is built for it."""
        title, abstract = self._scan(paper.title, paper.abstract, self._BOTH)
        authors = self._scan_values(paper.authors, 0, self._BOTH) if self._values[0] else 0
        categories = self._scan_values(paper.categories, 1, self._BOTH) if self._values[1] else 0
        width = self._width
        return self._taken(title | abstract | authors | categories, paper), Found(title >> width, abstract >> width, authors >> width, categories >> width)

    def _taken(self, found: int, paper: Paper) -> int:
        """The topics whose rules these found bits satisfy for this paper, as bits by topic number (it reads only
        the hot bits: either layout)."""
        taken = found & self._simple
        tested = found & self._tested | self._always  # (the rules without any/all are all tested)
        if tested:
            score, sources, tests = paper.score or 0, paper.sources, self._tests
            while tested:  # `_bits`, inlined: this is the hot loop
                rule = tested & -tested
                tested ^= rule
                mask, need, min_score, wanted = tests[rule.bit_length() - 1]  # type: ignore[misc]
                if found & mask == need and score >= min_score and (not wanted or not wanted.isdisjoint(sources)):
                    taken |= rule
        return taken

    def _named(self, taken: int) -> list[str]:
        """The names of these topics (bits by topic number, as `take` gives them), in topic order."""
        names, out = self._names, []
        while taken:
            rule = taken & -taken
            taken ^= rule
            out.append(names[rule.bit_length() - 1])
        return out

    @property
    def topics(self) -> list[Topic]:
        """The topics as compiled, in order."""
        return list(self._topics)

    def keyword_count(self) -> int:
        """How many distinct keywords the topics compile to: the ids `Found` bits stand for."""
        return len(self._keywords)

    def keywords_of(self, name: str) -> tuple[tuple[int, str], ...]:
        """A topic's any and all keywords as (keyword id, as first written there): the hits that make it want a paper."""
        topic, out = self._index[name], dict[int, str]()
        for text in topic.any + topic.all:
            out.setdefault(self._text_ids[text], text)
        return tuple(out.items())

    def counts(self, papers: Iterable[Paper]) -> dict[str, int]:
        """How many of the papers each topic takes, in topic order, for trying rules out on stored papers."""
        totals = dict.fromkeys(self._names, 0)
        for paper in papers:
            for name in self.topics_for(paper):
                totals[name] += 1
        return totals

    def explain(self, paper: Paper, labels: Mapping[str, str] | None = None) -> list[Explanation]:
        """For each topic in order: whether it takes the paper, and clause by clause which keywords hit where;
        `labels` shows some topics by another name (a subscriber's personal keywords, say)."""
        labels = labels or {}
        found = self.match(paper)[1]
        by_field = {"title": found.title, "abstract": found.abstract, "authors": found.authors, "categories": found.categories}
        width = max((len(labels.get(name, name)) for name in self._names), default=0)
        score = paper.score or 0
        out = []
        for topic in self._topics:
            clauses = []
            for name in CLAUSES:
                texts = getattr(topic, name)
                if not texts:
                    continue
                hits, misses = [], []
                for text in texts:
                    kid = self._text_ids[text]
                    fields = tuple(f for f, bits in by_field.items() if bits >> kid & 1)
                    if fields:
                        hits.append(Hit(text, fields))
                    else:
                        misses.append(text)
                ok = bool(hits) if name == "any" else not misses if name == "all" else not hits
                clauses.append(Clause(name, ok, tuple(hits), tuple(misses)))
            if topic.min_score > 0:
                known = str(paper.score) if paper.score is not None else "unknown (0)"
                ok = score >= topic.min_score
                clauses.append(Clause("min_score", ok, detail=f"score {known} {'≥' if ok else '<'} {topic.min_score}"))
            if topic.sources:
                ok = not set(topic.sources).isdisjoint(paper.sources)
                listed = f"[{', '.join(topic.sources)}]"
                came = ", ".join(paper.sources) or "no source"
                clauses.append(Clause("sources", ok, detail=f"{came} {'in' if ok else 'not in'} {listed}"))
            matched = all(clause.ok for clause in clauses)
            out.append(Explanation(topic.name, matched, tuple(clauses), width, labels.get(topic.name, "")))
        return out

    def marks(self, paper: Paper, topic_names: Iterable[str]) -> Marks:
        """The title and abstract spans, author names and categories matched by the any/all keywords of those
        topics (unknown names are skipped)."""
        names = tuple(topic_names)
        keywords = self._marking.get(names)
        if keywords is None:
            kids = 0
            for name in names:
                topic = self._index.get(name)
                if topic is not None:
                    kids |= sum({1 << self._text_ids[text] for text in topic.any + topic.all})
            keywords = tuple(self._keywords[kid] for kid in _bits(kids))
            if len(self._marking) < _VALUE_CACHE:
                self._marking[names] = keywords
        return _marks(keywords, paper.title, paper.abstract, paper.authors, paper.categories)
