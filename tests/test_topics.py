"""The topic-rule contract, clause by clause, and agreement with the per-keyword regex oracle on real papers."""

from __future__ import annotations

import importlib.util
import itertools
import random
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from newsletter.model.paper import Paper
from newsletter.model.topics import (
    Marks,
    Matcher,
    Topic,
    _required_word,
    keyword_error,
    parse_keyword,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml"


def _bench() -> ModuleType:
    """bench/topics_bench.py holds the oracle (the straightforward per-keyword regex loop) and the loader."""
    spec = importlib.util.spec_from_file_location("topics_bench", ROOT / "bench/topics_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


def paper(title: str = "", abstract: str = "", **fields: Any) -> Paper:
    """A paper with only the fields a case cares about."""
    return Paper(id="2411.00001", title=title, abstract=abstract, **fields)


def topic(name: str = "t", **rule: Any) -> Topic:
    """A topic from lists, the way the config hands them over as tuples."""
    clauses: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in rule.items()}
    return Topic(name=name, title=name, **clauses)


def check_keyword(keyword: str, p: Paper, expected: bool) -> None:
    """The matcher and the oracle both give the expected verdict for one keyword."""
    assert keyword_error(keyword) is None
    assert (Matcher([topic(any=(keyword,))]).topics_for(p) == ["t"]) is expected
    assert bool(bench.reference_test(parse_keyword(keyword))(p)) is expected


# (keyword, abstract, expected)
TEXT_CASES = [
    # separators: a space or hyphen between words matches any run of spaces and hyphens, or none
    ("fine-tuning", "We study fine-tuning.", True),
    ("fine-tuning", "fine tuning", True),
    ("fine-tuning", "Fine-Tuning", True),
    ("fine-tuning", "finetuning", True),
    ("fine-tuning", "fine  -- tuning", True),
    ("fine-tuning", "fine\n    tuning", True),
    ("fine-tuning", "fine\u2010tuning", True),
    ("fine tuning", "fine-tuning", True),
    ("fine tuning", "FINE--TUNING", True),
    ("fine-tuning", "fine_tuning", False),
    ("fine-tuning", "fine, tuning", False),
    ("fine-tuning", "fine/tuning", False),
    ("fine-tuning", "fine tuned", False),
    ("large language model", "large-language-model", True),
    ("large language model", "LargeLanguage Model", True),
    ("large language model", "large language modeling", False),
    ("large language model", "large. Language model", False),
    ("parameter-efficient", "parameter efficient", True),
    ("parameter-efficient", "parameterefficient", True),
    ('"catastrophic forgetting"', "avoids Catastrophic-Forgetting", True),
    ("GPT-4o", "GPT4o", True),
    ("GPT-4o", "gpt 4o", True),
    ("GPT-4o", "GPT-4", False),
    ("3D", "3D-printed parts", True),
    ("3D", "3Dprinting", False),
    # case
    ("LoRA", "LORA adapters", True),
    ("lora", "LoRA", True),
    # trailing *
    ("distill*", "distillation", True),
    ("distill*", "Distilled", True),
    ("distill*", "distill", True),
    ("distill*", "undistilled", False),
    ("distill*", "distil", False),
    ("large language model*", "large language models", True),
    ("large language model*", "largelanguagemodels", True),
    ("fine-tun*", "finetuned", True),
    ("LLM*", "LLMs", True),
    # word boundaries
    ("RAG", "fragment", False),
    ("RAG", "RAG-based retrieval", True),
    ("RAG", "(RAG)", True),
    ("RAG", "RAGs", False),
    ("LoRA", "exploration", False),
    ("LoRA", "LoRA's rank", True),
    ("foo", "foo_bar", False),
    ("C++", "C++ code", True),
    ("C++", "written in C++.", True),
    ("C++", "(C++)", True),
    ("C++", "C++11", False),
    ("C++", "C code", False),
    ("C++", "C+ +", False),
    ("C++ code", "C++code", True),
    ("C++ code", "C++ - code", True),
    ("C#", "C# and F#", True),
    (".NET", "the .NET runtime", True),
    (".NET", "ASP.NET", False),
    ('"A*"', "the A* algorithm", True),
    ('"A*"', "Algorithm A", False),
    # non-ASCII
    ("Schrödinger", "the Schrödinger equation", True),
    ("schrödinger", "SCHRÖDINGER", True),
    ("Schrödinger", "Schrödingers", False),
    ("Ainu", "the Ainu language", True),
    ("Ainu", "Ainuyo", False),
    ("naïve Bayes", "naïve-Bayes", True),
    ("café*", "cafés", True),
    ("cat", "Schrödinger’s cat", True),
    ("model", "the model’s output", True),
    ("fine-tuning", "Schrödinger fine  -  tuning", True),
    ("Schrödinger", "Schrodinger", False),
    # regex: case-insensitive, no word boundaries added
    ("/diffusion (model|policy)/", "Diffusion Policy learning", True),
    ("/rag/", "fragment", True),
    (r"/\brag\b/", "fragment", False),
    ("/[A-Z]{3}/", "abc", True),
    ("/gpt-?4/", "GPT4", True),
    (r"/\d+B param/", "a 7B parameter model", True),
    ("/^we/", "We begin.", True),
    ("/^we/", "Here we begin.", False),
    # regex with a word that all its matches contain: found through the automaton, then searched
    ("/divides?/", "it subdivides the set", True),
    ("/divides?/", "a divine idea", False),
    ("/divide{2}/", "divide", False),
    ("/naïve b/", "Naïve Bayes", True),
    ("/model(s|ing)$/", "large language modeling", True),
    ("/model(s|ing)$/", "models of the world", False),
]


@pytest.mark.parametrize(("keyword", "abstract", "expected"), TEXT_CASES)
def test_keyword_in_abstract(keyword: str, abstract: str, expected: bool) -> None:
    """Each keyword form matches (or not) in the abstract exactly as the contract says."""
    check_keyword(keyword, paper(abstract=abstract), expected)


@pytest.mark.parametrize(("keyword", "abstract", "expected"), TEXT_CASES)
def test_keyword_in_title(keyword: str, abstract: str, expected: bool) -> None:
    """The same cases hold in the title, which goes through the same engine separately."""
    check_keyword(keyword, paper(title=abstract, abstract="Unrelated words."), expected)


# (keyword, paper fields, expected)
FIELD_CASES = [
    ("title:LoRA", {"title": "LoRA adapters"}, True),
    ("title:LoRA", {"abstract": "LoRA adapters"}, False),
    ("Title: LoRA", {"title": "LoRA adapters"}, True),
    ("abstract:LoRA", {"abstract": "LoRA adapters"}, True),
    ("abstract:LoRA", {"title": "LoRA adapters"}, False),
    ("title:fine-tun*", {"title": "Finetuned"}, True),
    ("title:/^lora/", {"title": "LoRA for all"}, True),
    ("title:/^lora/", {"abstract": "LoRA for all"}, False),
    ("title:/divides?/", {"title": "Subdivides", "abstract": "none"}, True),
    ("title:/divides?/", {"title": "Sets", "abstract": "it divides"}, False),
    ("abstract:/divides?/", {"title": "it divides", "abstract": "Sets"}, False),
    ('title:"A*"', {"title": "A* search"}, True),
    ("author:Yann LeCun", {"authors": ("Yann  LeCun",)}, True),
    ("author:yann lecun", {"authors": ("Ada Lovelace", "Yann LeCun")}, True),
    ("author:LeCun", {"authors": ("Yann LeCun",)}, False),
    ("author:Yann", {"authors": ("Yann LeCun",)}, False),
    ("author:Yann Le*", {"authors": ("Yann LeCun",)}, True),
    ("author:/lecun$/", {"authors": ("Yann LeCun",)}, True),
    ("author:Erwin Schrödinger", {"authors": ("ERWIN SCHRÖDINGER",)}, True),
    ("author:LeCun", {"title": "LeCun", "abstract": "LeCun"}, False),
    ("category:cs.CL", {"categories": ("cs.LG", "cs.CL")}, True),
    ("category:CS.cl", {"categories": ("cs.CL",)}, True),
    ("category:cs.C", {"categories": ("cs.CL",)}, False),
    ("category:cs.*", {"categories": ("cs.LG",)}, True),
    ("category:cs.*", {"categories": ("physics.cs", "csx.AB")}, False),
    ("category:/^(cs|stat)\\.ML$/", {"categories": ("stat.ML",)}, True),
    ("category:cs.CL", {"title": "cs.CL", "abstract": "cs.CL"}, False),
]


@pytest.mark.parametrize(("keyword", "fields", "expected"), FIELD_CASES)
def test_field_prefix(keyword: str, fields: dict[str, Any], expected: bool) -> None:
    """title:/abstract:/author:/category: look at their field only."""
    check_keyword(keyword, paper(**fields), expected)


def names(topics: list[Topic], p: Paper) -> list[str]:
    """The matcher's verdict, checked against the oracle's."""
    got = Matcher(topics).topics_for(p)
    assert got == bench.ReferenceMatcher(topics).topics_for(p)
    return got


@pytest.mark.parametrize(
    ("rule", "fields", "expected"),
    [
        ({"any": ["LoRA"], "none": ["survey"]}, {"title": "A survey of LoRA"}, False),
        ({"any": ["LoRA"], "none": ["survey"]}, {"title": "LoRA at scale"}, True),
        ({"any": ["LoRA"], "none": ["title:survey"]}, {"title": "LoRA", "abstract": "No survey."}, True),
        ({"all": ["LoRA", "quantiz*"]}, {"title": "LoRA", "abstract": "quantized"}, True),
        ({"all": ["LoRA", "quantiz*"]}, {"title": "LoRA"}, False),
        ({"any": ["LoRA", "adapter*"], "all": ["vision"]}, {"title": "Adapters for vision"}, True),
        ({"any": ["LoRA", "adapter*"], "all": ["vision"]}, {"title": "Vision transformers"}, False),
        ({}, {"title": "Anything at all"}, True),
        ({"none": ["survey"]}, {"title": "Anything at all"}, True),
        ({"none": ["survey"]}, {"title": "A survey"}, False),
        ({"any": ["LoRA"], "min_score": 5}, {"title": "LoRA", "score": None}, False),
        ({"any": ["LoRA"], "min_score": 5}, {"title": "LoRA", "score": 4}, False),
        ({"any": ["LoRA"], "min_score": 5}, {"title": "LoRA", "score": 5}, True),
        ({"any": ["LoRA"], "min_score": 0}, {"title": "LoRA", "score": None}, True),
        ({"min_score": 1}, {"title": "x", "score": None}, False),
        ({"any": ["LoRA"], "sources": ["hf"]}, {"title": "LoRA", "sources": ("arxiv",)}, False),
        ({"any": ["LoRA"], "sources": ["hf"]}, {"title": "LoRA", "sources": ("arxiv", "hf")}, True),
        ({"any": ["LoRA"], "sources": ["hf"]}, {"title": "LoRA"}, False),
        ({"any": ["LoRA"], "sources": None}, {"title": "LoRA"}, True),
        ({"any": ["LoRA"], "sources": ()}, {"title": "LoRA"}, True),
        ({"any": [], "all": []}, {"title": ""}, True),
    ],
)
def test_rule_clauses(rule: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    """any/all/none/min_score/sources combine as documented; `none` beats `any`."""
    assert names([topic(**rule)], paper(**fields)) == (["t"] if expected else [])


def test_topics_in_given_order_with_shared_keywords() -> None:
    """Callers rely on the topic order: a paper goes to the section of its first topic."""
    topics = [
        topic("zeta", any=["lora"]),
        topic("alpha", any=["LoRA", "adapters"]),
        topic("mid", any=["diffusion"]),
        topic("omega", all=["LORA"], none=["survey"]),
    ]
    assert names(topics, paper("LoRA adapters")) == ["zeta", "alpha", "omega"]
    assert names(topics, paper("LoRA survey")) == ["zeta", "alpha"]
    assert Matcher([]).topics_for(paper("LoRA")) == []


def test_keywords_of_one_topic_matching_together() -> None:
    """Several keywords of one topic matching one paper (in any field) switch that topic on, no other."""
    topics = [
        topic("a", any=["category:cs.*", "category:cs.CL", "author:Ada*", "author:Ada Lovelace", "LoRA", "lora*"]),
        topic("b", any=["diffusion"]),
        topic("c", all=["category:cs.*", "category:cs.CL"], none=["author:Ada*", "author:/lovelace/"]),
    ]
    p = paper("LoRA, loras", authors=("Ada Lovelace",), categories=("cs.CL",))
    assert names(topics, p) == ["a"]
    assert names(topics, paper("x", authors=("Alan Turing",), categories=("cs.CL",))) == ["a", "c"]


def test_invalid_keywords_are_reported_by_topic() -> None:
    """A bad rule fails at compile time with every offending keyword named."""
    with pytest.raises(ValueError, match=r"topic 'bad', any: 'autor:x'.*did you mean 'author:'") as e:
        Matcher([topic("ok", any=["LoRA"]), topic("bad", any=["autor:x"], none=["/(/"])])
    assert "topic 'bad', none: '/(/': invalid regex" in str(e.value)


@pytest.mark.parametrize(
    ("keyword", "message"),
    [
        ("", "empty keyword"),
        ("   ", "empty keyword"),
        (" - ", "empty keyword"),
        ("autor:Hinton", "unknown field 'autor:' (did you mean 'author:'?"),
        ("titel:LoRA", "did you mean 'title:'?"),
        ("foo:bar", "known: title:, abstract:, author:, category:"),
        ("*", "'*' alone"),
        ("fine *", "'*' must directly follow a letter or digit"),
        ("C++*", "'*' must directly follow a letter or digit"),
        ("a*b", "'*' is only allowed at the end"),
        ("**", "'*' is only allowed at the end"),
        ("/(/", "invalid regex /(/: missing ), unterminated subpattern"),
        ("//", "empty regex"),
        ("/abc", "a regex must be written /like this/"),
        ("++", "needs a letter or digit"),
        ("title:", "nothing after 'title:'"),
        ("author:  ", "nothing after 'author:'"),
        ('"unterminated', "unterminated quote"),
        ("one two three four five six seven eight nine", "at most 8 words"),
    ],
)
def test_keyword_error(keyword: str, message: str) -> None:
    """The config loader shows these messages to the user."""
    error = keyword_error(keyword)
    assert error is not None and message in error


@pytest.mark.parametrize(
    "keyword",
    ["LoRA", "distill*", '"A*"', "title:LoRA", "author:Yann Le*", "category:cs.*", "/x|y/", '"autor: x"', "C++", "Schrödinger"],
)
def test_valid_keywords(keyword: str) -> None:
    """Every documented form is accepted."""
    assert keyword_error(keyword) is None


def test_explain_lines() -> None:
    """`newsletter topics explain` prints exactly these aligned lines."""
    topics = [
        topic("fine-tuning", any=["LoRA", "fine-tuning"], none=["survey"]),
        topic("diffusion", any=["diffusion*", "score-based"]),
    ]
    lines = [str(e) for e in Matcher(topics).explain(paper("LoRA for everyone", "We adapt models."))]
    assert lines == [
        'fine-tuning  MATCH     any: "LoRA" in title; none: –',
        'diffusion    no match  any: none of ["diffusion*", "score-based"] matched',
    ]


def test_explain_clauses() -> None:
    """Explanations say which keyword hit in which field, and why a clause failed."""
    topics = [
        topic("a", any=["LoRA", "adapter*"], all=["vision", "title:vision"], none=["survey"], min_score=5, sources=["hf"]),
        topic("b", any=["author:Ada Lovelace", "category:cs.*"]),
    ]
    p = paper("LoRA for vision", "A survey of LoRA adapters.", authors=("Ada Lovelace",), categories=("cs.CV",), sources=("arxiv",))
    a, b = Matcher(topics).explain(p)
    assert not a.matched and b.matched
    clauses = {c.name: c for c in a.clauses}
    assert [(h.keyword, h.fields) for h in clauses["any"].hits] == [("LoRA", ("title", "abstract")), ("adapter*", ("abstract",))]
    assert clauses["all"].ok and not clauses["none"].ok and not clauses["min_score"].ok and not clauses["sources"].ok
    assert str(a).split("  ", 2)[2].strip() == 'none: "survey" in abstract; min_score: score unknown (0) < 5; sources: arxiv not in [hf]'
    assert str(b).endswith('any: "author:Ada Lovelace" in authors, "category:cs.*" in categories')
    missing = Matcher([topic("c", all=["LoRA", "diffusion", "GAN"])]).explain(p)[0]
    assert str(missing).endswith('all: missing "diffusion", "GAN"')
    assert str(Matcher([topic("d")]).explain(p)[0]).endswith("MATCH     no conditions: takes every paper")


def test_marks() -> None:
    """Highlights cover the positive keywords of the given topics only, merged and sorted."""
    title = "Efficient Fine-Tuning with LoRA: a survey"
    abstract = "Large language models via finetuning. Not a fragment of RAG; lora."
    p = paper(title, abstract)
    topics = [
        topic("ft", any=["fine-tuning", "LoRA"], none=["survey"]),
        topic("llm", any=["large language", "language model*"], all=["title:efficient"]),
        topic("rag", any=["RAG"]),
        topic("meta", any=["author:Ada", "category:cs.CL"]),
    ]
    m = Matcher(topics)

    def span(text: str, word: str) -> tuple[int, int]:
        i = text.index(word)
        return (i, i + len(word))

    assert m.marks(p, ["ft"]) == Marks(
        title=[span(title, "Fine-Tuning"), span(title, "LoRA")],
        abstract=[span(abstract, "finetuning"), span(abstract, "lora")],
    )
    # overlapping "large language" + "language models" merge; the title-only `all` keyword marks the title only
    assert m.marks(p, ["llm"]) == Marks(title=[span(title, "Efficient")], abstract=[span(abstract, "Large language models")])
    assert m.marks(p, ["rag", "meta", "unknown"]) == Marks(title=[], abstract=[span(abstract, "RAG")])
    touching = Matcher([topic(any=["fine", "tuning", "/e t/"])]).marks(paper("fine tuning"), ["t"])
    assert touching == Marks(title=[(0, 11)], abstract=[])


def test_counts() -> None:
    """`topics try` shows how many papers each topic would take, zeros included."""
    m = Matcher([topic("a", any=["LoRA"]), topic("b", any=["GAN"]), topic("c")])
    assert m.counts([paper("LoRA"), paper("LoRA and GAN"), paper("x")]) == {"a": 2, "b": 1, "c": 3}


# A few dozen research topics as a user would write them, over the real arXiv fixture
RESEARCH: dict[str, dict[str, Any]] = {
    "llm": {"any": ["large language model*", "LLM*", "GPT-4*", "ChatGPT"]},
    "fine-tuning": {"any": ["fine-tuning", "LoRA", "parameter-efficient", "instruction tun*", "PEFT"]},
    "rag": {"any": ["RAG", "retrieval-augmented", "retrieval augmented generation"]},
    "diffusion": {"any": ["diffusion model*", "score-based", "denoising diffusion", "DDPM"], "none": ["reaction-diffusion"]},
    "rl": {"any": ["reinforcement learning", "RLHF", "policy gradient*", "Q-learning", "reward model*"]},
    "gnn": {"any": ["graph neural network*", "GNN*", "message passing", "graph convolution*"]},
    "vision-language": {"any": ["vision-language", "VLM*", "multimodal", "multi-modal", "CLIP"]},
    "distillation": {"any": ["distill*", "knowledge transfer"], "none": ["distillation column*"]},
    "quantization": {
        "any": ["quantiz*", "low-bit", "INT8", "4-bit"],
        "none": ["quantized Hall", "/quantization of (the )?(electromagnetic|gauge) field/"],
    },
    "robotics": {"any": ["robot*", "manipulation", "locomotion", "embodied"]},
    "speech": {"any": ["speech recognition", "ASR", "text-to-speech", "TTS", "speech"]},
    "federated": {"any": ["federated learning", "federated"]},
    "privacy": {"any": ["differential privacy", "differentially private", "privacy-preserving", "membership inference"]},
    "safety": {"any": ["jailbreak*", "red-teaming", "red teaming", "alignment", "AI safety"], "none": ["sequence alignment"]},
    "transformers": {"any": ["transformer*", "self-attention", "attention mechanism*"], "none": ["power transformer*"]},
    "nlp-title": {"any": ["title:language model*", "title:NLP", "title:machine translation"]},
    "llm-eval": {"any": ["benchmark*", "evaluation"], "all": ["large language model*"]},
    "quantum-computing": {"any": ["quantum comput*", "qubit*", "quantum circuit*", "NISQ", "quantum error correction"]},
    "quantum-ml": {"all": ["quantum", "machine learning"]},
    "black-holes": {"any": ["black hole*", "event horizon", "Hawking radiation"]},
    "dark-matter": {"any": ["dark matter", "WIMP*", "axion*"]},
    "gravitational-waves": {"any": ["gravitational wave*", "LIGO", "GW150914", "gravitational-wave"]},
    "exoplanets": {"any": ["exoplanet*", "transiting planet*", "JWST", "habitable zone"]},
    "superconductivity": {"any": ["superconduct*", "Cooper pair*", "BCS"]},
    "topology": {"any": ["topological insulator*", "Chern number*", "topological phase*", "Majorana"]},
    "graph-theory": {"any": ["chromatic number", "Ramsey", "planar graph*", "hypergraph*"], "none": ["graph neural network*"]},
    "pde": {"any": ["Navier-Stokes", "partial differential equation*", "PDE*", "Schrödinger equation*"]},
    "protein": {"any": ["protein*", "AlphaFold", "molecular dynamics", "drug discovery"]},
    "medical-imaging": {"any": ["MRI", "CT scan*", "medical imag*", "segmentation"], "all": ["/medical|clinical|patient/"]},
    "epidemiology": {"any": ["epidemic*", "COVID-19", "SARS-CoV-2", "infection*"]},
    "finance": {"any": ["portfolio*", "asset pricing", "volatility", "stock*"], "sources": ["arxiv"]},
    "econ": {"any": ["category:econ.*", "category:q-fin.*"]},
    "cs-cl": {"any": ["category:cs.CL", "category:cs.IR"], "none": ["title:survey"]},
    "c-plus-plus": {"any": ["C++", "CUDA", "GPU kernel*", "compiler*"]},
    "3d": {"any": ["3D", "point cloud*", "NeRF*", "Gaussian splatting"]},
    "authors": {"any": ["author:Yoshua Bengio", "author:/\\bli$/", "author:Jun C*"]},
    "popular": {"any": ["LLM*", "diffusion*"], "min_score": 3},
}


@pytest.fixture(scope="module")
def arxiv() -> list[Paper]:
    """The real papers of the fixture, with made-up scores and sources so every clause gets exercised."""
    rng = random.Random(5)
    return [
        Paper(
            **{
                **p.to_dict(),
                "published": None,
                "score": rng.choice((None, 0, 2, 5)),
                "sources": rng.choice((("arxiv",), ("hf",), ("arxiv", "hf"))),
            }
        )
        for p in bench.load_arxiv_papers(FIXTURE)
    ]


def test_matches_oracle_on_real_papers(arxiv: list[Paper]) -> None:
    """On 1504 real arXiv papers the matcher, `explain` and the per-keyword regex loop all agree."""
    topics = [topic(name, **rule) for name, rule in RESEARCH.items()]
    matcher, oracle = Matcher(topics), bench.ReferenceMatcher(topics, prefilter=True)
    assert len(arxiv) == 1504
    counts = dict.fromkeys(RESEARCH, 0)
    for i, p in enumerate(arxiv):
        got = matcher.topics_for(p)
        assert got == oracle.topics_for(p), p.id
        if i % 5 == 0:
            assert [e.topic for e in matcher.explain(p) if e.matched] == got
        names, found = matcher.match(p)
        assert names == got, "match (for ranking) decides as topics_for does"
        for e in matcher.explain(p) if i % 25 == 0 else ():  # and the keyword hits it keeps are those explain shows
            explained = {h.keyword for c in e.clauses if c.name in ("any", "all") for h in c.hits}
            assert {text for kid, text in matcher.keywords_of(e.topic) if found.any >> kid & 1} == explained, (p.id, e.topic)
        for name in got:
            counts[name] += 1
    # the topics are realistic: each takes some papers, none takes them all
    assert all(0 < n < len(arxiv) / 3 for n in counts.values()), counts


# Real papers of the fixture and the research topics that take them, as a reader would expect
EXPECTED_MEMBERSHIP = {
    "2411.17726": ["quantum-computing", "quantum-ml"],  # EQNN: Enhanced Quantum Neural Network
    "2408.02895": ["gravitational-waves"],  # GAN for core-collapse gravitational waves: a GAN, not diffusion
    "2409.08326": ["black-holes"],  # Growth of light-seed black holes: no gravitational waves, no dark matter
    # JPPO: prompt optimisation for LLM services, with a made-up score ≥ 3, so also "popular"
    "2411.18010": ["llm", "rl", "quantization", "nlp-title", "cs-cl", "popular"],
    # fine-tuning a segmentation model on satellites: "segmentation" alone does not make it medical imaging (`all`)
    "2411.17831": ["fine-tuning"],
    "2411.18179": ["diffusion", "robotics", "transformers", "popular"],  # visual policy learning via joint denoising
    "2411.18320": ["fine-tuning", "speech", "cs-cl"],  # continual learning in a machine speech chain, fine-tuned
}


def test_real_papers_land_in_the_expected_research_topics(arxiv: list[Paper]) -> None:
    by_id = {p.id: p for p in arxiv}
    matcher = Matcher([topic(name, **rule) for name, rule in RESEARCH.items()])
    got = {pid: matcher.topics_for(by_id[pid]) for pid in EXPECTED_MEMBERSHIP}
    assert got == EXPECTED_MEMBERSHIP


def test_marks_on_real_papers(arxiv: list[Paper]) -> None:
    """Marks on real text stay sorted, disjoint and inside the field."""
    topics = [topic(name, **rule) for name, rule in RESEARCH.items()]
    matcher = Matcher(topics)
    marked = 0
    for p in arxiv[:300]:
        got = matcher.topics_for(p)
        marks = matcher.marks(p, got)
        for text, spans in ((p.title, marks.title), (p.abstract, marks.abstract)):
            assert spans == sorted(spans) and all(a < b <= c < d for (a, b), (c, d) in itertools.pairwise(spans))
            assert all(0 <= a < b <= len(text) for a, b in spans)
        marked += bool(marks.title or marks.abstract)
    assert marked > 50


def test_matches_oracle_on_tricky_texts() -> None:
    """Random texts glued from words, digits, punctuation and separators of every kind, ASCII or not."""
    rng = random.Random(11)
    words = ["fine", "tuning", "lora", "LoRA", "(lora)", "c", "c++", "C#", ".net", "net", "4o", "gpt", "café", "naïve"]
    words += ["x_y", "3d", "model", "models"]
    glue = [" ", "-", "--", " - ", "\n  ", "", ",", ", ", ".", "(", ")", "+", "++", "’", "\u2010", "_", "#", "\t"]
    keywords = [
        "fine-tuning",
        "fine tun*",
        "LoRA",
        "lora*",
        "C++",
        "C#",
        ".NET",
        "GPT-4o",
        "gpt*",
        "café",
        "naïve model*",
        "3D",
        "x_y",
        "model",
        "models",
        "C++ model",
        '"c++"',
        "/c\\+\\+/",
        "/Fine.Tuning/",
        "/fine.tun/",
        "/models?$/",
        "title:/lora\\)/",
        "/naïve model/",
        "/net model/",
        "(lora)",
        "net model",
    ]
    topics = [topic(f"k{i}", any=[k]) for i, k in enumerate(keywords)]
    matcher, oracle = Matcher(topics), bench.ReferenceMatcher(topics)
    for _ in range(3000):
        text = "".join(rng.choice(words) + rng.choice(glue) for _ in range(rng.randint(1, 6)))
        p = paper(text, text.upper())
        assert matcher.topics_for(p) == oracle.topics_for(p), repr(text)


@pytest.mark.parametrize(
    ("regex", "word"),
    [
        ("divides?", "divide"),
        ("large language models?", "language"),
        ("ab{2,3}cd", "cd"),
        ("x\\dyz", "yz"),
        ("lecun$", "lecun"),
        ("gpt-?4", "gpt"),
        ("model(s|ing)", ""),  # an alternation anywhere might be at the top level
        ("medical|clinical", ""),
        ("(the )?field", ""),
        ("[abc]+def", ""),
    ],
)
def test_required_word(regex: str, word: str) -> None:
    """The word a /regex/ is looked up by in the automaton: only what every match surely contains."""
    assert _required_word(regex) == word


def test_required_word_is_in_every_match() -> None:
    """Random regexes and texts: every match contains the required word, or the search could be skipped wrongly."""
    rng = random.Random(3)
    atoms = ["a", "b", "ab", "é", "_", "1", "\\w", "\\d", "\\.", ".", "?", "*", "+", "{2}", "{1,2}", "+?", "(a|b)", "(ab)?"]
    atoms += ["[ab]", "[^a]", "^", "$", "\\b", " ", "-", "\\\\"]
    for _ in range(20_000):
        regex = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))
        try:
            pattern = re.compile(regex)
        except re.error:
            continue
        word = _required_word(regex)
        for _ in range(3):
            text = "".join(rng.choice("ab1_é. -") for _ in range(rng.randint(0, 10)))
            assert all(word in m.group() for m in pattern.finditer(text)), (regex, word, text)


def test_matches_oracle_with_generated_topics(arxiv: list[Paper]) -> None:
    """The benchmark's 200 generated topics (phrases, stems, field prefixes, regexes, all/none, scores,
    sources) give the oracle's topics on real papers."""
    topics = bench.research_topics(arxiv, 200)
    matcher, oracle = Matcher(topics), bench.ReferenceMatcher(topics, prefilter=True)
    for p in arxiv[::4]:
        assert matcher.topics_for(p) == oracle.topics_for(p), p.id


def test_phrases_across_runs_of_separators() -> None:
    """Separators in a row between the words of a phrase, however many and wherever (title, abstract, near
    their junction, several in one phrase), are looked at again: the matcher agrees with the oracle."""
    rng = random.Random(17)
    keywords = ["large language model", "fine-tuning", "state-of-the-art", "a b c d e", "model*", "c++ code", "lora"]
    words = ["large", "language", "model", "models", "fine", "tuning", "state", "of", "the", "art", "a", "b", "c"]
    words += ["d", "e", "c++", "code", "lora", "x"]
    topics = [topic(f"k{i}", any=[k]) for i, k in enumerate(keywords)]
    matcher, oracle = Matcher(topics), bench.ReferenceMatcher(topics)

    def text() -> str:
        glue = [" ", "-", " " * rng.randint(2, 60), " -- ", "\n   ", "- ", ", "]
        return "".join(rng.choice(words) + rng.choice(glue) for _ in range(rng.randint(0, 8)))

    for _ in range(1500):
        p = paper(text(), text())
        assert matcher.topics_for(p) == oracle.topics_for(p), (p.title, p.abstract)


def test_matches_oracle_on_authors_and_categories() -> None:
    """Overlapping author:/category: keywords across topics and clauses, on random authors and categories."""
    rng = random.Random(23)
    keywords = ["author:Ada*", "author:Ada Lovelace", "author:/lace$/", "author:alan  turing", "category:cs.*"]
    keywords += ["category:cs.CL", "category:/^(cs|stat)\\.ml$/", "category:math.*", "LoRA", "lora*"]
    topics = [
        topic(f"t{i}", **{clause: rng.sample(keywords, rng.randint(1, 3)) for clause in rng.sample(["any", "all", "none"], rng.randint(1, 3))})
        for i in range(12)
    ]
    matcher, oracle = Matcher(topics), bench.ReferenceMatcher(topics)
    people = ["Ada Lovelace", "Ada  Byron", "Alan Turing", "ALAN TURING", "Grace Hopper", "Lace"]
    fields = ["cs.CL", "cs.LG", "stat.ML", "math.AG", "physics.optics"]
    for _ in range(1000):
        p = paper(
            rng.choice(["LoRA", "loras", "", "x"]),
            authors=tuple(rng.sample(people, rng.randint(0, 3))),
            categories=tuple(rng.sample(fields, rng.randint(0, 3))),
        )
        assert matcher.topics_for(p) == oracle.topics_for(p), p


def test_matches_oracle_on_random_rules() -> None:
    """Random topics (every clause, field prefixes, stems, phrases, regexes with and without a required
    word, min_score, sources) on random texts with separators in a row: the matcher agrees with the oracle."""
    rng = random.Random(29)
    pool = ["lora", "LoRA*", "fine-tuning", "large language model*", "title:model", "abstract:fine tun*", "C++"]
    pool += ["/models?/", "title:/lora\\b/", "/fine.tuning/", "/^large/", "/c\\+\\+|lora/", "category:cs.*", "x_y"]
    words = ["lora", "LoRA", "loras", "fine", "tuning", "large", "language", "model", "models", "C++", "x_y", "finetuning"]
    glue = [" ", "-", "  ", " -- ", ", ", "(", ")", "\n    ", "."]
    topics = [
        topic(
            f"t{i}",
            **{clause: rng.sample(pool, rng.randint(1, 3)) for clause in rng.sample(["any", "all", "none"], rng.randint(0, 3))},
            min_score=rng.choice([0, 0, 3]),
            sources=rng.choice([None, ("hf",)]),
        )
        for i in range(25)
    ]
    matcher, oracle = Matcher(topics), bench.ReferenceMatcher(topics)

    def text() -> str:
        return "".join(rng.choice(words) + rng.choice(glue) for _ in range(rng.randint(0, 7)))

    for _ in range(1500):
        p = paper(
            text(),
            text(),
            categories=rng.choice([(), ("cs.CL",), ("math.AG",)]),
            score=rng.choice([None, 1, 5]),
            sources=rng.choice([("arxiv",), ("hf",)]),
        )
        assert matcher.topics_for(p) == oracle.topics_for(p), (p.title, p.abstract)
        assert [e.topic for e in matcher.explain(p) if e.matched] == matcher.topics_for(p)


# --------------------------------------------------------------------------- hostile regexes


@pytest.mark.parametrize("keyword", ["/^(a|aa)+$/", "title:/^(a|aa)+$/", "abstract:/(a|aa)+$/"])
def test_a_regex_that_backtracks_without_end_is_refused_at_check(keyword: str) -> None:
    message = keyword_error(keyword)
    assert message is not None and "backtracks without end" in message and "over 50 ms" in message


@pytest.mark.parametrize("regex", ["(a+)+$", r"(\w+\s?)+$", r"(x+x+)+y"])
def test_the_classic_catastrophic_regexes_are_harmless_in_the_engine_user_regexes_run_in(regex: str) -> None:
    assert keyword_error(f"/{regex}/") is None
    hostile = paper("Attack", "a" * 5000 + " " + "word " * 2000 + "x" * 3000 + "!")
    assert Matcher([topic("t", any=(f"/{regex}/",))]).topics_for(hostile) in ([], ["t"])


@pytest.mark.timeout(30)  # a hang guard; unbounded, the first of these papers would never finish
def test_a_regex_that_passes_check_but_stalls_on_one_abstract_counts_as_no_match_and_is_given_up() -> None:
    """The check cannot foresee every text: at run time a search that runs out of time is no match, and a
    regex that keeps running out is given up, so a send over thousands of papers is never stalled."""
    rule = "/^(b|bb)+$/"
    assert keyword_error(rule) is None, "the probes at check have no long run of b"
    matcher = Matcher([topic("slow", any=(rule,)), topic("fine", any=("LoRA",))])
    stalling = [paper(f"LoRA {i}", "b" * 80 + "!") for i in range(200)]
    assert [matcher.topics_for(p) for p in stalling] == [["fine"]] * 200
    assert Matcher([topic("slow", any=(rule,))]).topics_for(paper("b", "bb")) == ["slow"], "it does match what it can decide"
    assert matcher.topics_for(paper("b", "bb")) == [], "but this matcher gave it up after three searches ran out of time"
    assert matcher.marks(stalling[0], ["slow", "fine"]).title == [(0, 4)], "highlighting skips the slow regex too"
