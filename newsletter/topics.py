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
automaton (pyahocorasick) of their *token forms*, lowercase word runs between spaces in every possible
gluing (" fine tuning ", " finetuning "; " distill" for a prefix), and each field of a paper is turned
once into the same kind of token text (for most ASCII text a single ``str.translate``). One pass of the
automaton per field finds every candidate. A one-token keyword (``LoRA``, ``distill*``) is decided by its
hit; a longer one (a phrase, ``C++``) is confirmed by its own regex on the lowercased field, so regexes
run only where a match is nearly certain. ``/regex/`` keywords are searched in every paper: the slow
path, keep them few. Case-insensitivity relies on ``str.lower()``, which agrees with ``re.IGNORECASE``
except for a few exotic letters (dotted capital I, final sigma).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick

from .papers import Paper

FIELDS = ("title", "abstract", "author", "category")
TEXT_FIELDS = ("title", "abstract")
CLAUSES = ("any", "all", "none")

MAX_PHRASE_WORDS = 8  # a phrase compiles to up to 2 ** 8 automaton entries

_SEP = "[\\s\\-\u2010\u2011]"  # a separator: whitespace, hyphen-minus, hyphen, non-breaking hyphen
_SEP_RUN = _SEP + "*"
_SEP_SPLIT = re.compile(_SEP + "+")
_WORD = re.compile(r"\w+")
_NONWORD = re.compile(r"\W")
_PREFIX = re.compile(r"([A-Za-z_]+):")
# ASCII text in one pass: capitals to lowercase, separators to a space, other non-word characters to NUL
_ASCII_FOLD = bytes(
    ord(" " if re.fullmatch(_SEP, chr(c)) else "\0" if _NONWORD.fullmatch(chr(c)) else chr(c).lower()) for c in range(128)
) + bytes(range(128, 256))  # a bytes.translate table: several times faster than str.translate
_Check = tuple[int, re.Pattern[str], bool]  # keyword id, regex, whether the regex reads the lowercased field


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

    def pattern(self) -> re.Pattern[str]:
        """The regex this keyword stands for in a title or abstract (or in a folded author name/category);
        `re` caches compiled patterns, so calling this per paper (as `Matcher.marks` does) is cheap."""
        if self.regex is not None:
            return re.compile(self.regex, re.IGNORECASE)
        body = _SEP_RUN.join(re.escape(w) for w in self.words) + (r"\w*" if self.prefix else "")
        return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def parse_keyword(text: str) -> Keyword:
    """Read one keyword of a rule; raises ValueError with a short human message when it is not valid."""
    body = text.strip()
    if not body:
        raise ValueError("empty keyword")
    field: str | None = None
    m = _PREFIX.match(body)
    if m:
        name = m.group(1).lower()
        if name not in FIELDS:
            hint = difflib.get_close_matches(name, FIELDS, n=1)
            advice = f"did you mean '{hint[0]}:'?" if hint else f"known: {', '.join(f + ':' for f in FIELDS)}"
            raise ValueError(f"unknown field '{m.group(0)}' ({advice}; quote the keyword to match a colon literally)")
        field = name
        body = body[m.end() :].strip()
        if not body:
            raise ValueError(f"nothing after '{field}:'")
    if body.startswith("/"):
        if len(body) < 2 or not body.endswith("/"):
            raise ValueError("a regex must be written /like this/")
        regex = body[1:-1]
        if not regex:
            raise ValueError("empty regex //")
        try:
            re.compile(regex, re.IGNORECASE)
        except re.error as e:
            raise ValueError(f"invalid regex /{regex}/: {e}") from None
        return Keyword(text, field, regex=regex)
    prefix = False
    if body.startswith('"'):
        if len(body) < 2 or not body.endswith('"'):
            raise ValueError("unterminated quote")
        body = body[1:-1]
    else:
        if body.endswith("*"):
            prefix, body = True, body[:-1]
        if "*" in body:
            raise ValueError("'*' is only allowed at the end of a keyword (use /regex/ for more)")
        if prefix and not body.strip():
            raise ValueError("'*' alone would match everything")
    if field in ("author", "category"):
        value = " ".join(body.split())
        if not value:
            raise ValueError(f"nothing after '{field}:'")
        return Keyword(text, field, (value,), prefix)
    words = tuple(w for w in _SEP_SPLIT.split(body) if w)
    if not words:
        raise ValueError("empty keyword")
    if len(words) > MAX_PHRASE_WORDS:
        raise ValueError(f"a phrase may have at most {MAX_PHRASE_WORDS} words (use /regex/ for longer ones)")
    if not any(_WORD.search(w) for w in words):
        raise ValueError("a keyword needs a letter or digit (use /regex/ to match punctuation)")
    if prefix and not re.search(r"\w$", body):
        raise ValueError("'*' must directly follow a letter or digit")
    return Keyword(text, field, words, prefix)


def keyword_error(keyword: str) -> str | None:
    """Lets the config loader report a bad keyword precisely instead of failing later: None when valid."""
    try:
        parse_keyword(keyword)
    except ValueError as e:
        return str(e)
    return None


def _token_forms(words: tuple[str, ...], prefix: bool) -> set[str]:
    """Every way a phrase can look in a field's token text (see `_token_text`), so that one automaton
    finds the candidates of all keywords at once.

    Collapsed text: the phrase's lowercase word runs one space apart, or glued where two words meet
    letter to letter ("fine tuning", "finetuning"). Uncollapsed text: the lowercase phrase with a space
    for each non-word character and one separator or none between words. A prefix form has no final space.
    """
    lowered = [w.lower() for w in words]
    collapsed, uncollapsed = [""], [lowered[0]]
    for i, word in enumerate(lowered):
        runs = _WORD.findall(word)
        if runs:
            glue = i > 0 and _WORD.match(word) is not None and _NONWORD.match(lowered[i - 1][-1]) is None
            collapsed = [f + sep + runs[0] for f in collapsed for sep in ((" ", "") if glue else (" ",))]
            collapsed = [f + "".join(" " + r for r in runs[1:]) for f in collapsed]
        if i > 0:
            uncollapsed = [f + sep + word for f in uncollapsed for sep in (" ", "")]
    end = "" if prefix else " "
    bodies = {f.lstrip(" ") for f in collapsed} | {_NONWORD.sub(" ", f) for f in uncollapsed}
    return {f" {body}{end}" for body in bodies}


def _value_test(kw: Keyword) -> Callable[[str], object]:
    """A predicate on a folded author name or category (see `_fold`)."""
    if kw.regex is not None:
        return kw.pattern().search
    value = kw.words[0].lower()
    return (lambda s: s.startswith(value)) if kw.prefix else value.__eq__


def _fold(value: str) -> str:
    """Author names and categories compare lowercased with whitespace runs folded to one space."""
    return " ".join(value.split()).lower()


def _token_text(text: str) -> str:
    """A field as the automaton reads it: lowercase, a space around and between word runs.

    When no two separators follow each other (most ASCII texts), every non-word character simply becomes
    a space, in one fast `translate`; otherwise the word runs are joined by single spaces.
    """
    if text.isascii():
        folded = text.encode("ascii").translate(_ASCII_FOLD).decode("ascii")
        if "  " not in folded:
            return f" {folded.replace(chr(0), ' ')} "
        return f" {' '.join(folded.replace(chr(0), ' ').split())} "
    return f" {' '.join(_WORD.findall(text.lower()))} "


def _matching_regex(regex: str) -> tuple[re.Pattern[str], bool]:
    """The user's regex for matching, and whether it is to run on the lowercased field.

    Under IGNORECASE `re` cannot jump to a literal, so a regex that says nothing about case (no capital,
    no escape that could spell one, no inline flag) runs case-sensitively on lowercased text instead,
    several times faster; `Keyword.pattern` still serves highlighting.
    """
    plain = re.sub(r"\\.", lambda m: "" if m.group()[1] in "WSDBAZ" else m.group(), regex)
    if plain == plain.lower() and not re.search(r"\\[xuUN]|\(\?[A-Za-z-]", plain):
        return re.compile(regex), True
    return re.compile(regex, re.IGNORECASE), False


def _lowered_pattern(kw: Keyword) -> re.Pattern[str]:
    """The keyword's regex for lowercased text, starting with a literal so that `re` can skip ahead fast.

    `lit(?<!\\wlit)` says what a leading `(?<!\\w)` says, but lets the search look for `lit` first.
    """
    words = [re.escape(w.lower()) for w in kw.words]
    body = _SEP_RUN.join([f"{words[0]}(?<!\\w{words[0]})", *words[1:]]) + (r"\w*" if kw.prefix else "")
    return re.compile(rf"{body}(?!\w)")


@dataclass(frozen=True)
class _Rule:
    """A topic compiled to keyword ids, so clauses are set operations."""

    topic: Topic
    name: str
    any: frozenset[int]
    all: frozenset[int]
    none: frozenset[int]
    sources: frozenset[str]  # empty: any source
    simple: bool  # only `any` (non-empty) is set: one hit decides

    def accepts(self, found: set[int], score: int, sources: tuple[str, ...]) -> bool:
        """Whether every clause holds, given the paper's matching keyword ids, score and sources."""
        return (
            (not self.any or not self.any.isdisjoint(found))
            and self.all <= found
            and self.none.isdisjoint(found)
            and score >= self.topic.min_score
            and (not self.sources or not self.sources.isdisjoint(sources))
        )


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


@dataclass(frozen=True)
class Marks:
    """Character spans of title and abstract to highlight: sorted, merged, half-open (start, end)."""

    title: list[tuple[int, int]]
    abstract: list[tuple[int, int]]


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
    """All topic rules compiled together once, so matching a paper costs one scan per field."""

    def __init__(self, topics: Sequence[Topic]) -> None:
        """Compile every rule; raises ValueError naming each invalid keyword and its topic."""
        self._keywords: list[Keyword] = []
        self._text_ids: dict[str, int] = {}  # keyword as written -> id
        ids: dict[tuple[str | None, str | None, tuple[str, ...], bool], int] = {}
        errors: list[str] = []

        def compile_clause(topic: Topic, clause: str) -> frozenset[int]:
            out = set()
            for text in getattr(topic, clause):
                try:
                    kw = parse_keyword(text)
                except ValueError as e:
                    errors.append(f"topic '{topic.name}', {clause}: '{text}': {e}")
                    continue
                if kw.key not in ids:
                    ids[kw.key] = len(self._keywords)
                    self._keywords.append(kw)
                self._text_ids[text] = ids[kw.key]
                out.add(ids[kw.key])
            return frozenset(out)

        self._rules: list[_Rule] = []
        for topic in topics:
            any_, all_, none = (compile_clause(topic, c) for c in CLAUSES)
            sources = frozenset(topic.sources or ())
            simple = bool(any_) and not all_ and not none and topic.min_score <= 0 and not sources
            self._rules.append(_Rule(topic, topic.name, any_, all_, none, sources, simple))
        if errors:
            raise ValueError("invalid topic keywords:\n  " + "\n  ".join(errors))
        self._index = {rule.topic.name: rule for rule in self._rules}
        # per rule: its name, and the full test unless one keyword hit is enough (then None)
        self._tests = [(rule.name, None if rule.simple else rule.accepts) for rule in self._rules]

        # keyword id -> the rules it may switch on; rules without positive keywords are always candidates
        triggers: list[set[int]] = [set() for _ in self._keywords]
        for i, rule in enumerate(self._rules):
            for kid in rule.any | rule.all:
                triggers[kid].add(i)
        self._triggers = [frozenset(rules) for rules in triggers]
        self._always = frozenset(i for i, rule in enumerate(self._rules) if not rule.any and not rule.all)

        # per text field (0 title, 1 abstract): the token forms of all phrases in one automaton, whose
        # hits either decide a keyword (`sure`) or call for its regex (`check`); /regexes/ always run
        forms: dict[str, int] = {}
        sure: list[tuple[set[int], set[int]]] = []
        check: list[tuple[list[_Check], list[_Check]]] = []
        regexes: tuple[list[_Check], list[_Check]] = ([], [])
        self._meta: dict[str, list[tuple[int, Callable[[str], object]]]] = {"author": [], "category": []}
        for kid, kw in enumerate(self._keywords):
            if kw.field in self._meta:
                self._meta[kw.field].append((kid, _value_test(kw)))
                continue
            fields = [f for f, name in enumerate(TEXT_FIELDS) if kw.field in (None, name)]
            if kw.regex is not None:
                for f in fields:
                    regexes[f].append((kid, *_matching_regex(kw.regex)))
                continue
            one_token = len(kw.words) == 1 and _WORD.fullmatch(kw.words[0]) is not None
            lowered = _lowered_pattern(kw)
            for form in _token_forms(kw.words, kw.prefix):
                a = forms.setdefault(form, len(forms))
                if a == len(sure):
                    sure.append((set(), set()))
                    check.append(([], []))
                for f in fields:
                    if one_token:
                        sure[a][f].add(kid)
                    else:
                        check[a][f].append((kid, lowered, True))
        self._regexes = (tuple(regexes[0]), tuple(regexes[1]))
        self._entries = tuple([(frozenset(s[f]), tuple(c[f])) for s, c in zip(sure, check, strict=True)] for f in (0, 1))
        self._automaton: ahocorasick.Automaton | None = None
        if forms:
            self._automaton = ahocorasick.Automaton()
            for form, a in forms.items():
                self._automaton.add_word(form, a)
            self._automaton.make_automaton()

    def _scan(self, text: str, f: int, found: set[int]) -> set[int]:
        """Add to `found` the ids of the title/abstract keywords matching `text`, field number `f`; return it."""
        if not text:
            return found
        checks = self._regexes[f]
        if self._automaton is not None:
            entries = self._entries[f]
            for a in {a for _, a in self._automaton.iter(_token_text(text))}:
                sure, check = entries[a]
                found |= sure
                if check:
                    checks = checks + check
        if checks:
            low = text.lower()
            for kid, pattern, on_lowered in checks:
                if kid not in found and pattern.search(low if on_lowered else text):
                    found.add(kid)
        return found

    def _scan_meta(self, values: Iterable[str], field: str) -> set[int]:
        """Ids of the author: or category: keywords that match one of `values`."""
        tests = self._meta[field]
        if not tests:
            return set()
        folded = [_fold(v) for v in values]
        return {kid for kid, test in tests if any(map(test, folded))}

    def _found(self, paper: Paper) -> dict[str, set[int]]:
        """Matching keyword ids of a paper, by the field they matched in."""
        return {
            "title": self._scan(paper.title, 0, set()),
            "abstract": self._scan(paper.abstract, 1, set()),
            "authors": self._scan_meta(paper.authors, "author"),
            "categories": self._scan_meta(paper.categories, "category"),
        }

    def topics_for(self, paper: Paper) -> list[str]:
        """Names of the topics the paper belongs to, in the order the topics were given."""
        found = self._scan(paper.abstract, 1, self._scan(paper.title, 0, set()))
        if self._meta["author"]:
            found |= self._scan_meta(paper.authors, "author")
        if self._meta["category"]:
            found |= self._scan_meta(paper.categories, "category")
        score, sources = paper.score or 0, paper.sources
        out = []
        for i in sorted(self._always.union(*map(self._triggers.__getitem__, found))):
            name, accepts = self._tests[i]
            if accepts is None or accepts(found, score, sources):
                out.append(name)
        return out

    def counts(self, papers: Iterable[Paper]) -> dict[str, int]:
        """How many of the papers each topic takes, in topic order, for trying rules out on stored papers."""
        totals = {rule.topic.name: 0 for rule in self._rules}
        for paper in papers:
            for name in self.topics_for(paper):
                totals[name] += 1
        return totals

    def explain(self, paper: Paper, labels: Mapping[str, str] | None = None) -> list[Explanation]:
        """For each topic in order: whether it takes the paper, and clause by clause which keywords hit where;
        `labels` shows some topics by another name (a subscriber's personal keywords, say)."""
        labels = labels or {}
        by_field = self._found(paper)
        found = set().union(*by_field.values())
        width = max((len(labels.get(rule.name, rule.name)) for rule in self._rules), default=0)
        score = paper.score or 0
        out = []
        for rule in self._rules:
            topic = rule.topic
            clauses = []
            for name in CLAUSES:
                texts = getattr(topic, name)
                if not texts:
                    continue
                hits, misses = [], []
                for text in texts:
                    kid = self._text_ids[text]
                    fields = tuple(f for f, ids in by_field.items() if kid in ids)
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
            matched = rule.accepts(found, score, paper.sources)
            out.append(Explanation(topic.name, matched, tuple(clauses), width, labels.get(topic.name, "")))
        return out

    def marks(self, paper: Paper, topic_names: Iterable[str]) -> Marks:
        """The title and abstract spans matched by the any/all keywords of those topics (unknown names are skipped)."""
        spans: dict[str, list[tuple[int, int]]] = {"title": [], "abstract": []}
        kids: set[int] = set()
        for name in topic_names:
            rule = self._index.get(name)
            if rule is not None:
                kids |= rule.any | rule.all
        for kid in sorted(kids):
            kw = self._keywords[kid]
            for field in TEXT_FIELDS:
                if kw.field in (None, field):
                    matches = kw.pattern().finditer(getattr(paper, field))
                    spans[field].extend(m.span() for m in matches if m.end() > m.start())
        return Marks(title=_merge(spans["title"]), abstract=_merge(spans["abstract"]))
