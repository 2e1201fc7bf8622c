"""LaTeX in feed text (arXiv titles and abstracts are written in it) as readable plain text.

pylatexenc does the reading, but only of what is LaTeX: a feed's plain "$5 and $10", "50% faster",
"~10x", a URL or a literal backslash would be eaten by a LaTeX reader (`%` starts a comment, `$` math,
an unknown macro is dropped). So the text is first cut into pieces: `$math$` by pandoc's rule (no space
inside either dollar, the closing one not before a digit), macros pylatexenc knows and the macros it
need not know to drop them (\\rm, \\left); everything else that LaTeX would read differently from a
person is set aside as written and put back afterwards, and so are runs of plain text, as pylatexenc
is slow for each character it reads. Text with no backslash, dollar, tilde or `` is returned at once:
most feed text has none.
"""

from __future__ import annotations

import logging
import re

from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db
from pylatexenc.latexwalker import get_default_latex_context_db as walker_context_db
from pylatexenc.macrospec import LatexContextDb, std_macro

logging.getLogger("pylatexenc").setLevel(logging.CRITICAL)  # it logs every construct it tolerates

_HINT = re.compile(r"[\\$~]|``")

# Pieces, in the order they are tried: URLs whole, math, escaped characters (\$, \%, \') left to LaTeX, macros,
# ties ("Fig.~3", "Section~2"; not "z~2", which means about 2), quotes and dashes, and the characters LaTeX
# reads its own way. `math` is pandoc's rule for $...$ (no
# space just inside either dollar, the closing one not before a digit unless what it closes has a \, ^, _ or {:
# "$5 and $10" and "$5-$10" are no math, "$\sim$10" is), plus $$...$$, \(...\) and \[...\].
_PIECE = re.compile(
    r"(?P<url>https?://[^\s<>\"]+)"
    r"|(?P<math>\$\$[^$]+?\$\$|\$(?=[^\s$])(?:[^$]*?[\\^_{][^$]*?|[^$]*?(?<=[^\s\\])(?!\$\d))(?<=[^\s\\])\$|\\\(.+?\\\)|\\\[.+?\\\])"
    r"|(?P<escaped>\\[^A-Za-z](?:\{[^{}]*\}|[A-Za-z])?)"
    r"|(?P<macro>\\(?P<name>[A-Za-z]+)(?:\{[^{}]*\})*)"
    r"|(?P<tie>(?:(?<=[.)\]])|(?<=\w\w))~(?=[\w\\(\[$]))"
    r"|(?P<typo>``|''|---?)"
    r"|(?P<literal>[%$~&#\ue000-\uf8ff])"
    r"|(?P<run>(?:[^\\{}$%&#~`'\-\[\]\ue000-\uf8ff]|-(?!-)|'(?!'))+)",
    re.DOTALL,
)
# Inside math: the same, but for what text and math share; ^ and _ are LaTeX's there.
_IN_MATH = re.compile(
    r"(?P<escaped>\\[^A-Za-z](?:\{[^{}]*\}|[A-Za-z])?)|(?P<macro>\\(?P<name>[A-Za-z]+)(?:\{[^{}]*\})*)"
    r"|(?P<literal>[%\ue000-\uf8ff])|(?P<run>(?:[^\\{}$%&#^_~`'\-\[\]\ue000-\uf8ff]|-(?!-)|'(?!'))+)"
)
_TYPOGRAPHY = {"``": "“", "''": "”", "--": "–", "---": "—"}
_NEEDS_LATEX = re.compile(r"[\\{}^_]")  # math without these reads as it is written

# Macros neither pylatexenc's reader nor its parser knows, which only style or size what follows: dropped
# (their braced argument, if any, is kept as text). Any other unknown macro (an author's \RR) stays as written.
_STYLE = frozenset({
    "rm", "bf", "it", "em", "sc", "sf", "tt", "sl", "up", "md", "cal", "bm", "boldsymbol", "displaystyle", "textstyle",
    "scriptstyle", "scriptscriptstyle", "limits", "nolimits", "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr",
    "Bigl", "Bigr", "biggl", "biggr", "biggm", "middle", "tiny", "scriptsize", "footnotesize", "small", "normalsize", "large",
    "Large", "LARGE", "huge", "Huge", "mathop", "mathrel", "mathbin", "mathord", "operatorname", "mbox", "hbox", "textup",
    "textnormal", "textsf", "texttt", "textsc", "textsl", "mathsf", "mathtt", "mathnormal", "ensuremath", "noindent", "centering",
})  # fmt: skip
# Operators written as words, which pylatexenc does not know.
_WORDS = frozenset({"deg", "dim", "coth", "sech", "csch", "ker", "det", "hom", "arg", "gcd", "lcm", "mod", "bmod", "pmod", "Pr", "sgn", "tr", "rank", "diag"})
_SYMBOLS = {"ne": "≠", "colon": ":", "imath": "ı", "jmath": "ȷ", "lesssim": "≲", "gtrsim": "≳", "eg": "e.g.", "ie": "i.e.", "etal": "et al."}
_SUPERSCRIPTS = str.maketrans("0123456789+-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻")
_SUBSCRIPTS = str.maketrans("0123456789+-", "₀₁₂₃₄₅₆₇₈₉₊₋")
_SCRIPT = re.compile(r"(?P<op>[\^_])(?:\{(?P<braced>[-+]?\d{1,4})\}|(?P<bare>\d))")
_FIRST_PRIVATE = 0xE000
_PRIVATE = re.compile("[\ue000-\uf8ff]")
_MAX_PIECES = 0xF8FF - _FIRST_PRIVATE  # what the private-use characters can stand for


def _reader() -> tuple[LatexNodes2Text, LatexContextDb, frozenset[str]]:
    """pylatexenc's reader and parser contexts with our additions, and the macro names they know."""
    context = get_default_latex_context_db().filter_context()
    specs = [MacroTextSpec(name, discard=False) for name in _STYLE]
    specs += [MacroTextSpec(name, simplify_repl=name) for name in _WORDS]
    specs += [MacroTextSpec(name, simplify_repl=text) for name, text in _SYMBOLS.items()]
    specs += [MacroTextSpec(name, discard=True) for name in ("cite", "citep", "citet", "citealt", "citealp", "ref", "eqref", "label", "footnote")]
    specs += [MacroTextSpec("url", simplify_repl="%(1)s"), MacroTextSpec("href", simplify_repl="%(2)s")]
    context.add_context_category("newsletter", macros=specs, prepend=True)
    walker = walker_context_db().filter_context()
    walker.add_context_category("newsletter", macros=[std_macro("href", False, 2)], prepend=True)
    known = {spec.macroname for db in (context, walker) for spec in db.iter_macro_specs()} | {"begin", "end"}
    reader = LatexNodes2Text(latex_context=context, math_mode="text", strict_latex_spaces=True)
    return reader, walker, frozenset(known)


_READER, _PARSER, _KNOWN = _reader()


def readable_tex(text: str) -> str:
    r"""The text with its LaTeX rendered (accents, `~` ties, ``quotes'', \emph, $H^3$ as H³, \% and \&),
    and everything that only looks like LaTeX kept exactly as written."""
    if not _HINT.search(text):
        return text
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return chr(_FIRST_PRIVATE + len(kept) - 1)

    def piece(match: re.Match[str]) -> str:
        kind, whole = match.lastgroup, match.group()
        if kind == "math":
            inner = _SCRIPT.sub(_script, whole)
            delimiter = 2 if inner.startswith(("$$", "\\(", "\\[")) else 1
            if not _NEEDS_LATEX.search(inner[delimiter:-delimiter]):
                return keep(inner[delimiter:-delimiter])  # $n$, $(a,b)$, $_2$: nothing to parse
            return _IN_MATH.sub(piece, inner)
        if kind == "escaped" or (kind == "macro" and match.group("name") in _KNOWN):
            return whole
        if kind == "tie":
            return keep(" ")
        if kind == "typo":
            return keep(_TYPOGRAPHY[whole])
        return keep(whole)  # a URL, an unknown macro, a literal %, $, ~, & or #, a run of plain text, or one of our characters

    guarded = _PIECE.sub(piece, text)
    if len(kept) > _MAX_PIECES:
        return text
    read = guarded
    if _PRIVATE.sub("", guarded):  # something is left for pylatexenc to read
        try:
            read = str(_READER.latex_to_text(guarded, latex_context=_PARSER, tolerant_parsing=True))
        except Exception:  # pylatexenc on text it cannot read (it raises several kinds): leave the text as written
            return text
    return _PRIVATE.sub(lambda m: kept[ord(m.group()) - _FIRST_PRIVATE], read).replace("\xa0", " ")


def _script(match: re.Match[str]) -> str:
    """A numeric super- or subscript as Unicode: $H^3$ reads H³, $x_{12}$ reads x₁₂."""
    digits = match.group("braced") or match.group("bare")
    return digits.translate(_SUPERSCRIPTS if match.group("op") == "^" else _SUBSCRIPTS)
