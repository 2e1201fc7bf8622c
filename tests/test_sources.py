"""Source parsing against the real captured feeds in tests/fixtures (see tests/fixtures/SOURCES.md)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from newsletter.errors import SourceError
from newsletter.ingest.fields import plain_text, split_authors
from newsletter.ingest.ids import canonical_id, normalize_doi, parse_arxiv_id
from newsletter.ingest.sources import Parsed, first_urls, parse
from newsletter.model.config import SOURCE_TYPES, Source
from newsletter.model.paper import Paper

FIXTURES = Path(__file__).parent / "fixtures"
ALL_ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")
FULL_RSS = "arxiv_rss/aioarxiv__rss_all_archives_2024-11-28_full.xml"

# Expected paper counts per fixture (SOURCES.md's entry counts; arXiv RSS after the default new+cross filter).
EXPECTED: dict[str, tuple[str, int]] = {
    FULL_RSS: ("arxiv_rss", 935),
    "arxiv_rss/aioarxiv__rss_test_archive_empty.xml": ("arxiv_rss", 0),
    "arxiv_rss/all-news-ai__arxiv_cs_cl_weekend_empty.xml": ("arxiv_rss", 0),
    "arxiv_rss/distill__arxiv_cs_ai.xml": ("arxiv_rss", 3),
    "arxiv_rss/distill__arxiv_cs_cl.xml": ("arxiv_rss", 3),
    "arxiv_api/recorded_http/arxiv.py__id_0000_empty.json": ("arxiv_api", 0),
    "arxiv_api/recorded_http/arxiv.py__q_testing_s0_m10.json": ("arxiv_api", 10),
    "arxiv_api/arxiv.py__api_old_au_del_maestro_10.xml": ("arxiv_api", 10),
    "arxiv_api/arxiv.py__api_old_checkerboard_1.xml": ("arxiv_api", 1),
    "arxiv_api/arxiv.py__api_old_id_list_1111.2011v2.xml": ("arxiv_api", 1),
    "arxiv_api/arxiv.py__api_old_quantum_criticality_2.xml": ("arxiv_api", 2),
    "arxiv_api/brevio__api_cat_cs_LG_OR_cs_AI_20.xml": ("arxiv_api", 20),
    "arxiv_api/personal-news-feed__api_cs_AI_LG_CL_25.xml": ("arxiv_api", 25),
    "arxiv_api/sotawhat__api_all_transformer_cs_LG_5.xml": ("arxiv_api", 5),
    "hf_daily_papers/all-news-ai__daily_papers_2026-07-31_pretty5.json": ("hf_daily", 5),
    "hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json": ("hf_daily", 30),
    "hf_daily_papers/sotawhat__daily_papers_2026-06-12.json": ("hf_daily", 30),
    "other_feeds/journals/biorss__cambridge_core_canadian_entomologist_atom.xml": ("feed", 15),
    "other_feeds/journals/biorss__cnki_asian_herpetological_research_rss.xml": ("feed", 20),
    "other_feeds/journals/biorss__microbiologyresearch_ijsem_rss.xml": ("feed", 25),
    "other_feeds/journals/biorss__ojs_edinburgh_j_botany_rss10.xml": ("feed", 25),
    "other_feeds/journals/biorss__oup_zool_j_linn_soc_rss.xml": ("feed", 14),
    "other_feeds/journals/biorss__pubmed_search_rss_2021-12-21.xml": ("feed", 15),
    "other_feeds/journals/biorss__sciencedirect_mol_phylogenet_evol_rss.xml": ("feed", 51),
    "other_feeds/journals/biorss__tandfonline_nnfe20_rss10_rdf.xml": ("feed", 95),
    "other_feeds/journals/biorss__wiley_taxon_toc_rss.xml": ("feed", 66),
    "other_feeds/journals/translated_rss__nature_current_issue_rss10_rdf.xml": ("feed", 75),
    "other_feeds/brevio__takara_tldr_daily_ai_papers_rss.xml": ("feed", 50),
    "other_feeds/feeds__biorxiv_amyloid_search_atom_generated.xml": ("feed", 75),
    "other_feeds/hepml-digest__daily_hep_ml_digest_rss.xml": ("feed", 226),
}
ERRORS: dict[str, tuple[str, str]] = {  # fixture -> (type, text the SourceError must contain)
    "arxiv_rss/aioarxiv__rss_error_bad_archive.xml": ("arxiv_rss", "astroph"),
    "arxiv_api/recorded_http/arxiv.py__id_abc_error_400.json": ("arxiv_api", "incorrect id format for abc"),
}
# What each edge case gives: a paper count, or SourceError ("not a feed").
EDGE_OUTCOMES: dict[str, int | type[SourceError]] = {
    "biorss__jstage_atom_empty.xml": 0,
    "biorss__pensoft_zookeys_rss091_leading_blankline_bom_in_title.xml": 100,
    "fastfeedparser__utf16_encoded.xml": 1,
    "feedparser__encoding_bozo_bogus_encoding.xml": 0,  # well-formed, only the declared encoding is bogus
    "feedparser__encoding_bozo_double-encoded-html.xml": 0,  # its one entry has no id, link or title
    "feedparser__encoding_bozo_linenoise.xml": 0,
    "feedparser__encoding_utf-16le-bom.xml": 0,
    "feedparser__illformed_http_high_bit_date.xml": 0,
    "feedparser__illformed_rdf_channel_empty_textinput.xml": 1,
    "feedparser__illformed_rss_incomplete_cdata.xml": 0,
    "feedparser__illformed_rss_item_link_corrupted_ampersands.xml": 1,
    "feedparser__wellformed_atom10_entry_title_inline_markup.xml": 1,
    "feedparser__wellformed_sanitize_entry_title_script.xml": 1,
    "fastfeedparser__malformed_rss_namespaced.xml": SourceError,
    "feedparser__illformed_rss_empty_document.xml": SourceError,
    "feedparser__illformed_undeclared_namespace.xml": SourceError,
}
EDGE_CASES = sorted(p.name for p in (FIXTURES / "edge_cases").glob("*.xml"))
HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")


def body_of(relpath: str) -> bytes:
    """The bytes a fetch would have returned: recorded-HTTP wrappers hold them in `body`."""
    raw = (FIXTURES / relpath).read_bytes()
    if relpath.startswith("arxiv_api/recorded_http/"):
        return json.loads(raw)["body"].encode("utf-8")
    return raw


@cache
def load(relpath: str, kind: str, announce_types: tuple[str, ...] = ("new", "cross")) -> Parsed:
    """Parse one fixture once per test session (the full arXiv feed takes a second)."""
    source = Source(name="src", type=kind, announce_types=announce_types)
    return parse(source, body_of(relpath), "https://example.org/feed")


def by_id(papers: list[Paper], paper_id: str) -> Paper:
    """The paper with that id."""
    return next(p for p in papers if p.id == paper_id)


# --------------------------------------------------------------------------- every fixture


def sources_md_entries() -> dict[str, int]:
    """SOURCES.md's summary table: fixture path -> number of feed entries (or JSON array items)."""
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+ \| (\d+) \|", (FIXTURES / "SOURCES.md").read_text("utf-8"), re.MULTILINE)
    return {path: int(entries) for path, entries in rows}


def test_every_documented_fixture_has_an_expectation() -> None:
    documented = sources_md_entries()
    assert len(documented) == 48
    assert set(documented) == set(EXPECTED) | set(ERRORS) | {f"edge_cases/{name}" for name in EDGE_CASES}
    assert sorted(EDGE_OUTCOMES) == EDGE_CASES
    for path, (_, count) in EXPECTED.items():
        assert count == (926 + 9 if path == FULL_RSS else documented[path]), path


@pytest.mark.parametrize("relpath", sorted(EXPECTED))
def test_fixture_paper_counts_and_invariants(relpath: str) -> None:
    kind, count = EXPECTED[relpath]
    papers = load(relpath, kind).papers
    assert len(papers) == count
    assert len({p.id for p in papers}) == count
    for paper in papers:
        assert paper.id and paper.id == paper.id.strip()
        assert paper.sources == ("src",)
        assert not HTML_TAG.search(paper.title), paper.title
        assert paper.title == " ".join(paper.title.split())
        assert all(a and not HTML_TAG.search(a) for a in paper.authors)
        assert paper.published is None or paper.published.tzinfo is not None
        assert all(url.startswith(("http://", "https://")) for url in paper.links.values())


@pytest.mark.parametrize("relpath", sorted(ERRORS))
def test_error_documents_raise_source_error(relpath: str) -> None:
    kind, needle = ERRORS[relpath]
    with pytest.raises(SourceError, match=re.escape(needle)):
        parse(Source(name="src", type=kind), body_of(relpath), "https://example.org/feed")


def test_arxiv_rss_announce_type_filter() -> None:
    default = load(FULL_RSS, "arxiv_rss").papers
    assert sum(p.announce_type == "new" for p in default) == 926
    assert sum(p.announce_type == "cross" for p in default) == 9
    everything = load(FULL_RSS, "arxiv_rss", ALL_ANNOUNCE_TYPES).papers
    assert len(everything) == 1504
    assert sum(p.announce_type == "replace" for p in everything) == 569


@pytest.mark.parametrize("name", EDGE_CASES)
def test_edge_cases_give_papers_or_source_error(name: str) -> None:
    body = (FIXTURES / "edge_cases" / name).read_bytes()
    for content_type in (None, "application/rss+xml; charset=utf-8", "text/html"):
        try:
            result = parse(Source(name="src", type="feed"), body, "https://example.org/feed", content_type)
        except SourceError as exc:
            assert str(exc)
            continue
        assert all(isinstance(p, Paper) and p.id for p in result.papers)
        assert all(not HTML_TAG.search(p.title) for p in result.papers)


@pytest.mark.parametrize(("name", "outcome"), sorted(EDGE_OUTCOMES.items()))
def test_edge_case_outcomes(name: str, outcome: int | type[SourceError]) -> None:
    body = (FIXTURES / "edge_cases" / name).read_bytes()
    source = Source(name="src", type="feed")
    if outcome is SourceError:
        with pytest.raises(SourceError, match="not a feed"):
            parse(source, body, "https://example.org/feed")
    else:
        assert len(parse(source, body, "https://example.org/feed").papers) == outcome


def test_hostile_titles_come_out_as_plain_text() -> None:
    def title(name: str) -> str:
        body = (FIXTURES / "edge_cases" / name).read_bytes()
        return parse(Source(name="src", type="feed"), body, "https://example.org/feed").papers[0].title

    assert title("feedparser__wellformed_sanitize_entry_title_script.xml") == "safe description"
    assert title("feedparser__wellformed_atom10_entry_title_inline_markup.xml") == "Example Atom"
    assert title("feedparser__illformed_rdf_channel_empty_textinput.xml") == "crashes here"


def test_bom_and_blank_line_feed() -> None:
    body = (FIXTURES / "edge_cases/biorss__pensoft_zookeys_rss091_leading_blankline_bom_in_title.xml").read_bytes()
    papers = parse(Source(name="src", type="feed"), body, "https://example.org/feed").papers
    assert papers[0].title == "Checklist and keys to Deltocephalinae leafhoppers (Hemiptera, Cicadellidae) from Pakistan"
    assert not any("\ufeff" in p.title for p in papers)
    assert papers[0].id == "https://zookeys.pensoft.net/article/47616/"


def test_bozo_document_with_entries_is_used() -> None:
    body = (FIXTURES / "edge_cases/feedparser__illformed_rss_item_link_corrupted_ampersands.xml").read_bytes()
    (paper,) = parse(Source(name="src", type="feed"), body, "https://example.org/feed").papers
    assert paper.id == "http://link/get?a=1&b=2"
    assert paper.links == {"abstract": "http://link/get?a=1&b=2"}


# --------------------------------------------------------------------------- arXiv RSS fields


def test_arxiv_rss_sample_entry() -> None:
    paper = load("arxiv_rss/distill__arxiv_cs_ai.xml", "arxiv_rss").papers[0]
    assert paper.id == "2604.21935"
    assert paper.version == 1
    assert paper.title == "Math Takes Two: A test for emergent mathematical reasoning in communication"
    assert paper.authors == ("Michael Cooper", "Samuel Cooper")
    assert paper.abstract.startswith("Although language models demonstrate remarkable proficiency")
    assert "Announce Type" not in paper.abstract and "arXiv:" not in paper.abstract
    assert paper.categories == ("cs.AI", "cs.LG")
    assert paper.announce_type == "new"
    assert paper.published == datetime(2026, 4, 27, 4, 0, tzinfo=UTC)
    assert paper.links == {"abstract": "https://arxiv.org/abs/2604.21935", "pdf": "https://arxiv.org/pdf/2604.21935"}
    assert paper.score is None and paper.doi is None


def test_arxiv_rss_doi_journal_ref_versions_and_authors() -> None:
    papers = load(FULL_RSS, "arxiv_rss", ALL_ANNOUNCE_TYPES).papers
    with_doi = by_id(papers, "2411.17758")
    assert with_doi.doi == "10.1016/j.segan.2024.101477"
    assert with_doi.journal_ref == "Sustainable Energy, Grids and Networks, Volume 39, 2024, 101477, ISSN 2352-4677"
    assert with_doi.links["doi"] == "https://doi.org/10.1016/j.segan.2024.101477"
    assert with_doi.authors == ("Kamil Erdayandi", "Mustafa Asan Mustafa")
    replaced = by_id(papers, "1401.3665")
    assert (replaced.announce_type, replaced.version) == ("replace", 4)
    cross = by_id(papers, "2411.16862")
    assert cross.announce_type == "cross"
    assert cross.authors == ("Bo Peng", "Nilanjan Roy", "Guangyue Ji", "Bo Yang")
    # TeX escapes in dc:creator, and affiliations in parentheses (with commas inside) dropped
    assert by_id(papers, "2411.17709").authors[-1] == "Jarosław Żygierewicz"
    assert "Benjamin Rémy" in by_id(papers, "2411.17748").authors
    assert by_id(papers, "2411.17817").authors[:3] == ("Tianliang Yan", "Yubao Liu", "Leonid Prokhorov")
    assert "Guðmundur K. Stefánsson" in by_id(papers, "2411.18567").authors
    assert "Caleb I. Cañas" in by_id(papers, "2411.18567").authors
    assert by_id(papers, "2411.17875").title == "On an Erdős-Szekeres Game"


def test_arxiv_rss_keeps_math_intact() -> None:
    papers = load(FULL_RSS, "arxiv_rss", ALL_ANNOUNCE_TYPES).papers
    abstracts = "\n".join(p.abstract for p in papers)
    assert "where 1/3<s<1 and" in abstracts  # feedparser's sanitiser would have made "<s><1$" of "$\\frac{1}{3}<s<1$"
    assert "Explore and Exploit (E&E)" in abstracts
    titles = [p.title for p in papers]
    assert any("ζ-function for the Schrödinger operator with Pöschl–Teller" in t for t in titles)


def test_arxiv_rss_error_feed_names_the_query() -> None:
    body = body_of("arxiv_rss/aioarxiv__rss_error_bad_archive.xml")
    with pytest.raises(SourceError) as info:
        parse(Source(name="src", type="arxiv_rss", categories=("astroph",)), body, "https://rss.arxiv.org/rss/astroph")
    assert "http://rss.arxiv.org/rss/astroph" in str(info.value)
    assert "Bad archive 'astroph'" in str(info.value)


# --------------------------------------------------------------------------- arXiv API fields


def test_arxiv_api_old_format_fields() -> None:
    papers = load("arxiv_api/arxiv.py__api_old_au_del_maestro_10.xml", "arxiv_api").papers
    first = papers[0]
    assert first.id == "1201.4869" and first.version == 1
    assert first.title == "A Luttinger Liquid Core Inside Helium-4 Filled Nanopores"
    assert first.authors == ("Adrian Del Maestro",)
    assert first.abstract.startswith("As helium-4 is cooled below 2.17 K it undergoes a phase transition to a fundamentally")
    assert "\n" not in first.abstract
    assert first.doi == "10.1142/S021797921244002X"
    assert first.journal_ref == "Int. J. Mod. Phys. B, 26, 1244002 (2012)"
    assert first.categories == ("cond-mat.mes-hall", "cond-mat.other")
    assert first.published == datetime(2012, 1, 23, 21, 15, 2, tzinfo=UTC)
    assert first.links["pdf"] == "https://arxiv.org/pdf/1201.4869"
    old = by_id(papers, "cond-mat/0412498")
    assert old.version == 1 and old.authors == ("Adrian Del Maestro", "Subir Sachdev")
    assert 'commensurate "p x p" density wave ordering on the square lattice (p >= 3, integer)' in old.abstract
    assert by_id(papers, "1303.6954").version == 2


def test_arxiv_api_new_format_fields() -> None:
    (paper, *_) = load("arxiv_api/sotawhat__api_all_transformer_cs_LG_5.xml", "arxiv_api").papers
    assert paper.id == "2606.13677" and paper.version == 1
    assert paper.authors == ("Zhao-Heng Yin", "Guanya Shi", "Pieter Abbeel", "C. Karen Liu")
    assert paper.categories == ("cs.RO", "cs.AI", "cs.CV", "cs.LG")  # primary category first
    assert "(<1 minute per tool)" in paper.abstract
    (versioned,) = load("arxiv_api/arxiv.py__api_old_id_list_1111.2011v2.xml", "arxiv_api").papers
    assert (versioned.id, versioned.version) == ("1111.2011", 2)


def test_arxiv_api_paging() -> None:
    source = Source(name="src", type="arxiv_api", query="au:del_maestro", max_results=100)
    (first,) = first_urls(source, date(2026, 1, 5))
    query = parse_qs(urlsplit(first).query)
    assert first.startswith("https://export.arxiv.org/api/query?")
    assert query["search_query"] == ["au:del_maestro"] and query["start"] == ["0"] and query["max_results"] == ["100"]

    body = body_of("arxiv_api/arxiv.py__api_old_au_del_maestro_10.xml")  # totalResults 31, start 0, 10 per page
    next_url = parse(source, body, first).next_url
    assert next_url is not None
    next_query = parse_qs(urlsplit(next_url).query)
    assert next_query["start"] == ["10"] and next_query["max_results"] == ["10"]
    assert next_query["search_query"] == ["au:del_maestro"] and next_query["sortBy"] == ["submittedDate"]

    capped = parse(Source(name="src", type="arxiv_api", query="q", max_results=15), body, first).next_url
    assert capped is not None and parse_qs(urlsplit(capped).query)["max_results"] == ["5"]
    assert parse(Source(name="src", type="arxiv_api", query="q", max_results=10), body, first).next_url is None

    last_page = body.replace(b">0</opensearch:startIndex>", b">30</opensearch:startIndex>")
    assert parse(source, last_page, first).next_url is None
    assert load("arxiv_api/recorded_http/arxiv.py__id_0000_empty.json", "arxiv_api").next_url is None
    assert load("arxiv_api/arxiv.py__api_old_checkerboard_1.xml", "arxiv_api").next_url is None


def test_arxiv_api_url_override_pages_by_rewriting_start() -> None:
    url = "https://export.arxiv.org/api/query?search_query=all:transformer+AND+cat:cs.LG&start=0&max_results=5"
    source = Source(name="src", type="arxiv_api", url=url)
    assert first_urls(source, date(2026, 1, 5)) == [url]
    next_url = parse(source, body_of("arxiv_api/sotawhat__api_all_transformer_cs_LG_5.xml"), url).next_url
    assert next_url is not None
    query = parse_qs(urlsplit(next_url).query)
    assert query["start"] == ["5"] and query["search_query"] == ["all:transformer AND cat:cs.LG"]


# --------------------------------------------------------------------------- Hugging Face


def test_hf_daily_fields() -> None:
    papers = load("hf_daily_papers/sotawhat__daily_papers_2026-06-12.json", "hf_daily").papers
    paper = by_id(papers, "2606.10423")
    assert paper.title == "WebChallenger: A Reliable and Efficient Generalist Web Agent"
    assert paper.authors == ("Jayoo Hwang", "Xiaowen Zhang", "Vedant Padwal")
    assert (paper.score, paper.comments, paper.stars) == (2, 2, 2)
    assert paper.links == {
        "abstract": "https://arxiv.org/abs/2606.10423",
        "pdf": "https://arxiv.org/pdf/2606.10423",
        "hf": "https://huggingface.co/papers/2606.10423",
        "code": "https://github.com/jayoohwang1/webchallenger",
        "project": "https://jayoohwang1.github.io/webchallenger-site/",
    }
    assert "web agent framework" in paper.keywords
    assert paper.published == datetime(2026, 6, 9, tzinfo=UTC)
    assert paper.abstract.startswith("Autonomous web navigation remains challenging")
    top = by_id(papers, "2606.13681")
    assert (top.score, top.stars) == (118, 9)
    no_code = by_id(papers, "2606.00467")
    assert no_code.stars is None and "code" not in no_code.links and no_code.score == 0


def test_hf_daily_score_only_from_paper_upvotes_and_titles_folded() -> None:
    data = json.loads(body_of("hf_daily_papers/all-news-ai__daily_papers_2026-07-31_pretty5.json"))
    data[0]["upvotes"] = 999  # a top-level upvotes must not be taken for the score
    data[0]["paper"]["title"] = "OmniScope:\n  Modality-Decoupled Token\r\nCompression\tfor Omnimodal LLMs "
    (first, *_) = parse(Source(name="hf", type="hf_daily"), json.dumps(data).encode(), "https://huggingface.co/api/daily_papers").papers
    assert first.title == "OmniScope: Modality-Decoupled Token Compression for Omnimodal LLMs"
    assert first.score == 3 and first.stars == 3 and first.links["code"] == "https://github.com/MAC-AutoML/OmniScope"
    assert first.sources == ("hf",)


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b'{"error": "Invalid date"}', b'"a string"', b"\xff\xfe\x00garbage", b"[" * 100_000],
)
def test_hf_daily_unusable_documents(body: bytes) -> None:
    with pytest.raises(SourceError):
        parse(Source(name="hf", type="hf_daily"), body, "https://huggingface.co/api/daily_papers")


def test_hf_daily_skips_junk_items_and_hostile_links() -> None:
    items = [
        1,
        {"paper": "x"},
        {"paper": {"id": "", "title": ""}},
        {"paper": {"id": "2411.01234", "title": "<b>Bold</b> claim", "upvotes": True, "githubRepo": "javascript:alert(1)",
                   "projectPage": "https://example.org/p", "githubStars": "9", "authors": [{"name": "J. M\\\"uller"}, "x"]}},
    ]  # fmt: skip
    (paper,) = parse(Source(name="hf", type="hf_daily"), json.dumps(items).encode(), "u").papers
    assert paper.id == "2411.01234" and paper.title == "Bold claim"
    assert paper.score is None and paper.stars is None
    assert "code" not in paper.links and paper.links["project"] == "https://example.org/p"
    assert paper.authors == ("J. Müller",)


def test_hf_daily_first_urls() -> None:
    source = Source(name="hf", type="hf_daily", days=3)
    assert first_urls(source, date(2026, 3, 1)) == [
        "https://huggingface.co/api/daily_papers?date=2026-03-01",
        "https://huggingface.co/api/daily_papers?date=2026-02-28",
        "https://huggingface.co/api/daily_papers?date=2026-02-27",
    ]
    override = Source(name="hf", type="hf_daily", days=3, url="http://127.0.0.1:9/hf.json")
    assert first_urls(override, date(2026, 3, 1)) == ["http://127.0.0.1:9/hf.json"]


# --------------------------------------------------------------------------- other feeds


def test_feed_dois_and_ids() -> None:
    nature = load("other_feeds/journals/translated_rss__nature_current_issue_rss10_rdf.xml", "feed").papers
    assert nature[0].id == "doi:10.1038/s41586-024-07811-4"
    assert nature[0].title == "Catalysis of an SN2 pathway by geometric preorganization"
    assert nature[0].authors == ("Gabriel J. Lovinger", "Marcus H. Sak", "Eric N. Jacobsen")
    assert any(p.title == "Psilocybin desynchronizes the human brain" for p in nature)  # &#xa0; folded
    pubmed = load("other_feeds/journals/biorss__pubmed_search_rss_2021-12-21.xml", "feed").papers
    assert pubmed[0].id == "doi:10.1016/j.parint.2021.102531"  # from dc:identifier
    assert pubmed[0].links["abstract"].startswith("https://pubmed.ncbi.nlm.nih.gov/34929406/?utm_source=Mobile%20Safari")
    assert pubmed[0].published == datetime(2021, 12, 20, 11, 0, tzinfo=UTC)
    cambridge = load("other_feeds/journals/biorss__cambridge_core_canadian_entomologist_atom.xml", "feed").papers
    assert cambridge[0].id == "doi:10.4039/tce.2021.38" and cambridge[0].doi == "10.4039/tce.2021.38"
    assert cambridge[0].authors == ("Inoda, Toshio",)  # "Last, First" is one name
    ojs = load("other_feeds/journals/biorss__ojs_edinburgh_j_botany_rss10.xml", "feed").papers
    assert ojs[0].id == "doi:10.24823/ejb.2021.321" and ojs[0].doi == "10.24823/EJB.2021.321"
    sciencedirect = load("other_feeds/journals/biorss__sciencedirect_mol_phylogenet_evol_rss.xml", "feed").papers
    assert sciencedirect[0].id == "https://www.sciencedirect.com/science/article/pii/S1055790321002906"
    assert any(p.title.endswith("viviparous genus Salamandra") for p in sciencedirect)  # <em> stripped
    assert sciencedirect[0].published is None


def test_feed_authors_and_abstracts() -> None:
    oup = load("other_feeds/journals/biorss__oup_zool_j_linn_soc_rss.xml", "feed").papers
    assert oup[0].authors == ("Brandão S", "Saeedi H", "Brandt A.")
    assert oup[1].authors == ("Chen C", "Zhou Y", "Watanabe H")  # "et al." dropped
    wiley = load("other_feeds/journals/biorss__wiley_taxon_toc_rss.xml", "feed").papers
    assert wiley[0].authors == ("Rachel M. Binks", "Margaret Heslewood", "Peter G. Wilson", "Margaret Byrne")
    assert wiley[0].categories == ("RESEARCH ARTICLE",)
    assert wiley[0].abstract.startswith("Abstract\n\nLeptospermum is an ecologically")
    ijsem = load("other_feeds/journals/biorss__microbiologyresearch_ijsem_rss.xml", "feed").papers
    assert ijsem[0].abstract.startswith("Four bacterial strains (LJ126T/S18 and Z-34T/S20)")
    assert "Qinghai–Tibet" in ijsem[0].abstract  # &#8211; decoded once


def test_feed_entries_with_arxiv_links_get_arxiv_ids() -> None:
    papers = load("other_feeds/hepml-digest__daily_hep_ml_digest_rss.xml", "feed").papers
    paper = papers[0]
    assert paper.id == "2601.02610" and paper.version is None  # guid "arxiv:2601.02610:hepml-v1" is not a version
    assert paper.links["abstract"] == "https://arxiv.org/abs/2601.02610"
    assert "stat.ML" in paper.categories
    assert sum(bool(parse_arxiv_id(p.id)) for p in papers) == len(papers)


def test_feed_resolves_relative_links_and_decodes_once() -> None:
    rss = (
        b'<rss version="2.0"><channel><title>t</title><item>'
        b"<title>A &amp;amp; B &lt;i&gt;x&lt;/i&gt;</title><link>/p/1</link><guid isPermaLink='false'>abc</guid>"
        b"<description>&lt;p&gt;One&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;p&gt;Two &amp;amp;lt; 3&lt;/p&gt;</description>"
        b"</item></channel></rss>"
    )
    (paper,) = parse(Source(name="s", type="feed"), rss, "https://journal.example/feeds/rss.xml", "application/rss+xml").papers
    assert paper.id == "abc"
    assert paper.title == "A & B x"
    assert paper.abstract == "One\n\nTwo &lt; 3"
    assert paper.links == {"abstract": "https://journal.example/p/1"}


def test_feed_never_reads_a_local_file_named_by_the_body(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_bytes(b'<rss version="2.0"><channel><item><title>SECRET</title><link>http://x/</link></item></channel></rss>')
    with pytest.raises(SourceError):
        parse(Source(name="s", type="feed"), str(secret).encode(), "https://example.org/feed")


def test_html_page_is_not_a_feed() -> None:
    page = b"<!doctype html><html><head><title>Sign in</title></head><body><form></form></body></html>"
    with pytest.raises(SourceError, match="not a feed"):
        parse(Source(name="s", type="feed"), page, "https://example.org/feed", "text/html; charset=utf-8")


def test_duplicate_entries_in_one_document_merge() -> None:
    atom = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b'<entry><id>http://arxiv.org/abs/2411.01234v1</id><title>Short</title><category term="cs.LG"/></entry>'
        b'<entry><id>https://arxiv.org/abs/2411.01234v2</id><title>Short</title><category term="cs.CL"/></entry>'
        b"</feed>"
    )
    (paper,) = parse(Source(name="s", type="feed"), atom, "https://example.org/feed").papers
    assert paper.id == "2411.01234" and paper.version == 2 and paper.categories == ("cs.LG", "cs.CL")


# --------------------------------------------------------------------------- identity helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://arxiv.org/abs/2101.00001v2", ("2101.00001", 2)),
        ("https://arxiv.org/pdf/2411.01234v3.pdf", ("2411.01234", 3)),
        ("https://export.arxiv.org/abs/0704.0001", ("0704.0001", None)),
        ("oai:arXiv.org:2604.21935v1", ("2604.21935", 1)),
        ("arXiv:2411.01234v12", ("2411.01234", 12)),
        ("http://arxiv.org/abs/hep-th/9901001v1", ("hep-th/9901001", 1)),
        ("arXiv:math.AG/0601001", ("math.AG/0601001", None)),
        ("oai:arXiv.org:cond-mat/0412498", ("cond-mat/0412498", None)),
        ("2411.01234", ("2411.01234", None)),
        ("hep-th/9901001v2", ("hep-th/9901001", 2)),
        ("https://huggingface.co/papers/2411.01234", ("2411.01234", None)),
        ("10.48550/arXiv.2411.01234", ("2411.01234", None)),
        ("arxiv:2601.02610:hepml-v1", ("2601.02610", None)),
        ("https://www.biorxiv.org/content/10.64898/2026.01.19.700241v1", None),
        ("https://example.com/abs/2411.01234", None),
        ("https://tldr.takara.ai/p/2604.26238", None),
        ("2413.01234", None),  # month 13
        ("1234.5678.9", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_arxiv_id(value: str | None, expected: tuple[str, int | None] | None) -> None:
    assert parse_arxiv_id(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.1038/s41586-024-07811-4", "10.1038/s41586-024-07811-4"),
        ("doi:10.1016/j.parint.2021.102531", "10.1016/j.parint.2021.102531"),
        ("https://dx.doi.org/10.4039/tce.2021.38?rft_dat=source%3Ddrss", "10.4039/tce.2021.38"),
        ("https://doi.org/10.1000/a%2Fb", "10.1000/a/b"),
        ("https://example.org/10.1000/x", None),
        ("pmid:34929406", None),
        ("", None),
    ],
)
def test_normalize_doi(value: str, expected: str | None) -> None:
    assert normalize_doi(value) == expected


def test_canonical_id_order() -> None:
    assert canonical_id(["oai:arXiv.org:2411.01234v2", "https://example.org/x"], "10.1/x") == "2411.01234"
    assert canonical_id(["https://journal.example/a", "https://arxiv.org/abs/hep-th/9901001v3"]) == "hep-th/9901001"
    assert canonical_id(["https://journal.example/a"], "https://doi.org/10.1038/ABC.Def") == "doi:10.1038/abc.def"
    assert canonical_id(["urn:x:1", "https://journal.example/a"], "not a doi") == "urn:x:1"
    assert canonical_id([None, " ", "https://journal.example/a"]) == "https://journal.example/a"
    assert canonical_id([None, ""]) is None


# --------------------------------------------------------------------------- text helpers


@pytest.mark.parametrize(
    ("raw", "html", "expected"),
    [
        ("safe<script>location.href='x'</script> description", False, "safe description"),
        ("Example <b>Atom</b>", True, "Example Atom"),
        ("<style>p{}</style><p>A</p><p>B</p>", True, "A B"),
        ("Fish &amp;amp; Chips", False, "Fish &amp; Chips"),  # decoded once, never twice
        ("Fish &amp; Chips", False, "Fish & Chips"),
        ("Naveed & Zhang, 2018", False, "Naveed & Zhang, 2018"),
        ("x < y and y > z", False, "x < y and y > z"),
        ("$a<b$ and $c>d$", False, "a<b and c>d"),
        ("\ufeffTitle\u202e with\u200b hidden\x07 chars", False, "Title with hidden chars"),
        ("  lots\n of\t\twhitespace \r\n", False, "lots of whitespace"),
        (None, False, ""),
    ],
)
def test_plain_text(raw: str | None, html: bool, expected: str) -> None:
    assert plain_text(raw, html=html) == expected


def test_plain_text_is_bounded() -> None:
    assert len(plain_text("a" * 300_000)) == 100_000
    assert plain_text("<!--" * 50_000, html=True) == ""


def test_plain_text_paragraphs() -> None:
    assert plain_text("First line\nwraps here.\n\n  Second   para.", paragraphs=True) == "First line wraps here.\n\nSecond para."
    assert plain_text("<p>One</p>\n<p>Two<br>Three</p>", html=True, paragraphs=True) == "One\n\nTwo\n\nThree"


@pytest.mark.parametrize(
    ("raw", "comma_separated", "expected"),
    [
        ("A. Author, B. Writer and C. Poet", True, ["A. Author", "B. Writer", "C. Poet"]),
        ("Ada Lovelace (Analytical Engine Co., London), Mao", True, ["Ada Lovelace", "Mao"]),
        ("A. Author, B. Writer, and C. Poet", True, ["A. Author", "B. Writer", "C. Poet"]),
        ("Jane Doe (MIT, Cambridge", True, ["Jane Doe (MIT", "Cambridge"]),  # unbalanced: nothing dropped
        ("Inoda, Toshio", False, ["Inoda, Toshio"]),
        ("Brandão S, Saeedi H, Brandt A.", False, ["Brandão S", "Saeedi H", "Brandt A."]),
        ("Guocheng SHU;Ping LIU;", False, ["Guocheng SHU", "Ping LIU"]),
        ("Chen C, Zhou Y, et al.", False, ["Chen C", "Zhou Y"]),
        ("<i>Jane</i> Doe", False, ["Jane Doe"]),
        ("", False, []),
    ],
)
def test_split_authors(raw: str, comma_separated: bool, expected: list[str]) -> None:
    assert split_authors(raw, comma_separated=comma_separated) == expected


# --------------------------------------------------------------------------- URLs


def test_first_urls() -> None:
    today = date(2026, 4, 27)
    rss = Source(name="a", type="arxiv_rss", categories=("cs.CL", "cs.LG"))
    assert first_urls(rss, today) == ["https://rss.arxiv.org/rss/cs.CL+cs.LG"]
    feed = Source(name="n", type="feed", url="https://www.nature.com/nature.rss")
    assert first_urls(feed, today) == ["https://www.nature.com/nature.rss"]
    assert first_urls(Source(name="a", type="arxiv_rss", url="http://127.0.0.1:8/x.xml"), today) == ["http://127.0.0.1:8/x.xml"]
    query = parse_qs(urlsplit(first_urls(Source(name="q", type="arxiv_api", query="cat:cs.LG AND abs:transformer", max_results=250), today)[0]).query)
    assert query["search_query"] == ["cat:cs.LG AND abs:transformer"] and query["max_results"] == ["100"]
    assert set(SOURCE_TYPES) == {"hf_daily", "arxiv_rss", "arxiv_api", "feed"}


@pytest.mark.parametrize(
    "source",
    [Source(name="x", type="feed"), Source(name="x", type="arxiv_rss"), Source(name="x", type="arxiv_api"), Source(name="x", type="rss")],
)
def test_first_urls_rejects_sources_with_nothing_to_fetch(source: Source) -> None:
    with pytest.raises(ValueError):
        first_urls(source, date(2026, 1, 1))


def test_one_invalid_utf8_byte_costs_one_character_not_the_whole_feeds_text(caplog: pytest.LogCaptureFixture) -> None:
    """feedparser alone reads such a document as Windows-1252: every accented name and symbol turns to mojibake."""
    body = body_of("other_feeds/hepml-digest__daily_hep_ml_digest_rss.xml")  # as captured, it holds two U+FFFD already
    source = Source(name="hepml", type="feed")
    clean = parse(source, body, "https://example.org/feed").papers
    assert caplog.text == "", "valid UTF-8 is read as it is"
    cut = body.index(b"<item>", len(body) // 2)  # between two items: no paper's text holds the new bad byte
    damaged = parse(source, body[:cut] + b"\xff" + body[cut:], "https://example.org/feed").papers
    assert sum(not (p.title + p.abstract + "".join(p.authors)).isascii() for p in clean) > 10, "the fixture has plenty of non-ASCII text"
    assert [(p.id, p.title, p.abstract, p.authors) for p in damaged] == [(p.id, p.title, p.abstract, p.authors) for p in clean]
    assert "1 invalid UTF-8 byte replaced by U+FFFD" in caplog.text


def test_a_document_declared_in_another_encoding_is_left_to_feedparser() -> None:
    latin = '<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>t</title><item><title>Caf\xe9 models</title><link>https://example.org/1</link></item></channel></rss>'
    [paper] = parse(Source(name="l", type="feed"), latin.encode("latin-1"), "https://example.org/feed").papers
    assert paper.title == "Café models"
