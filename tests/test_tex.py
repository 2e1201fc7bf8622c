"""LaTeX in feed text made readable: what pylatexenc renders, what must come through as written, and real arXiv titles."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from newsletter.ingest.fields import plain_text
from newsletter.ingest.sources import parse
from newsletter.ingest.tex import readable_tex
from newsletter.model.config import Source

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("tex", "expected"),
    [
        (r"Caf\'e", "Café"),
        (r"Schr\"odinger", "Schrödinger"),
        (r"M{\"u}ller", "Müller"),
        (r"Espa\~na", "España"),
        (r"Gar\c{c}on", "Garçon"),
        (r"Vavry\v{c}uk", "Vavryčuk"),
        (r"Erd\H{o}s", "Erdős"),
        (r"Kad{\i}o\u{g}lu", "Kadıoğlu"),
        (r"Mar\'{\i}a", "María"),
        (r"Jaros{\l}aw \.Zygierewicz", "Jarosław Żygierewicz"),
        (r"Holb{\ae}k Mar{\aa}k {\ss}", "Holbæk Maråk ß"),
        (r"AT\&T", "AT&T"),
        (r"the $\"o$ and $\frac{1}{2}$ read", "the ö and 1/2 read"),
        (r"{\Lambda}CDM and \textbf{bold}", "ΛCDM and bold"),
        ("no backslashes", "no backslashes"),
    ],
)
def test_tex_accents(tex: str, expected: str) -> None:
    assert readable_tex(tex) == expected


@pytest.mark.parametrize(
    ("tex", "expected"),
    [
        (r"Fig.~3, Section~2 and Eq.~(1)", "Fig. 3, Section 2 and Eq. (1)"),
        ("``quoted'' -- and --- dashes", "“quoted” – and — dashes"),
        (r"\emph{em}, \textbf{bold}, \textit{it}, {\em old} and \texttt{tt}", "em, bold, it, old and tt"),
        (r"50\% of AT\&T costs \$5", "50% of AT&T costs $5"),
        (r"$H^3$, $x_{12}$, $10^{-3}$ and $\alpha$-stable", "H³, x₁₂, 10⁻³ and α-stable"),
        (r"$(a,b)$, $[0,1]$, \(x\) and $$y$$", "(a,b), [0,1], x and y"),
        (r"$\mathcal{O}(n^2)$ as $n \to \infty$, $\sim$10 and $\leq 3$", "𝒪(n²) as n → ∞, ∼10 and ≤ 3"),
        (r"see \cite{x} and \url{https://example.org/a}", "see and https://example.org/a"),
        (r"$\RR^d$ and \DuMPOnline stay", r"\RR^d and \DuMPOnline stay"),  # an author's own macros: as written
    ],
)
def test_latex_reads_as_text(tex: str, expected: str) -> None:
    assert plain_text(tex) == expected  # as ingest reads every field: made readable, then whitespace folded


@pytest.mark.parametrize(
    "text",
    [
        "costs $5 and $10",  # dollars, not math (pandoc's rule)
        "from $5-$10 a month",
        "a 50% gain, ~10x faster",  # % is no comment, ~ no tie
        r"C:\Users\me and \foo{bar}",  # backslashes that are no LaTeX
        "see https://example.org/~user/a_b%20c#frag",
        "snake_case & #tag ^ caret",
        "z~2-5",  # about 2 to 5, not a tie
        "plain text with nothing to read",
        "\ue001 a private-use character $",
    ],
)
def test_text_that_only_looks_like_latex_comes_through_as_written(text: str) -> None:
    assert readable_tex(text) == text


def test_latex_pylatexenc_cannot_read_is_left_as_written() -> None:
    assert readable_tex(r"$\sqrt\sqrt$ and \emph{this}") == r"$\sqrt\sqrt$ and \emph{this}"  # pylatexenc raises


@functools.cache
def _arxiv_rss(name: str) -> dict[str, str]:
    source = Source(name="rss", type="arxiv_rss", announce_types=("new", "cross", "replace", "replace-cross"))
    return {p.id: p.title for p in parse(source, (FIXTURES / name).read_bytes(), "https://rss.arxiv.org/rss/all").papers}


@pytest.mark.parametrize(
    ("paper_id", "title"),
    [
        ("2411.17792", "H³Fusion: Helpful, Harmless, Honest Fusion of Aligned LLMs"),
        (
            "2411.17797",
            "A Precisão da Metrologia Quântica: Limite de Cramér-Rao, Informação de Fisher e possíveis Aplicações Tecnológicas",
        ),
        ("2411.17813", "New tools for studying planarity in galaxy satellite systems: Milky Way satellite planes are consistent with ΛCDM"),
        ("2411.17860", "The exotic structure of the spectral ζ-function for the Schrödinger operator with Pöschl–Teller potential"),
        ("2411.18031", "Pressure Dependence of Ultrafast Carrier Dynamics in Excitonic Insulator Ta₂NiSe₅"),
        ("2411.18035", "A primer on the formation and evolution of hydrogen deficient Central Stars of Planetary Nebulæ and Related Objects"),
        ("2411.18380", "SoK: Privacy Personalised – Mapping Personal Attributes & Preferences of Privacy Mechanisms for Shoulder Surfing"),
        ("2411.18439", "Exact Diophantine approximation: the simultaneous case in ℝ²"),
        ("2411.18574", "Generalized Fast Krasnosel'kiĭ-Mann Method with Preconditioners"),
        ("2403.06729", "Galaxy Morphologies Revealed with Subaru HSC and Super-Resolution Techniques II: Environmental Dependence of Galaxy Mergers at z~2-5"),
        ("2404.02992", "Searches for pair-produced multijet resonances using data scouting in proton-proton collisions at √(s) = 13 TeV"),
    ],
)
def test_real_arxiv_titles_come_out_clean(paper_id: str, title: str) -> None:
    assert _arxiv_rss("arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml")[paper_id] == title
