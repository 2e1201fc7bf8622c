"""Metadata blocks in descriptions read into fields, so the abstract is only the abstract."""

from __future__ import annotations

from pathlib import Path

from newsletter.ingest.blocks import Block, read_block
from newsletter.ingest.sources import parse
from newsletter.model.config import Source

FIXTURES = Path(__file__).parent / "fixtures"


def test_an_inline_block_is_read_into_fields() -> None:
    block = read_block("Authors: Ada Lovelace, Alan Turing Upvotes: 12 Summary: We propose a thing. It works.")
    assert block == Block("We propose a thing. It works.", {"authors": "Ada Lovelace, Alan Turing", "upvotes": "12"})


def test_arxiv_rss_id_line_announce_type_and_comments_are_fields() -> None:
    block = read_block("arXiv:2411.01234v2 Announce Type: replace Abstract: We study X. Comments: 12 pages, accepted at ACL 2025")
    assert block.abstract == "We study X."
    assert block.fields == {"arxiv": "2411.01234v2", "announce": "replace", "comment": "12 pages, accepted at ACL 2025"}


def test_prose_is_left_alone() -> None:
    for text in (
        "We find that summary: statistics suffice.",  # a label only as written, at the start
        "Our method works. Code: https://github.com/x/y",  # "Code:" ends many abstracts and is part of them
        "Two paragraphs.\n\nNo labels here at all.",
        "",
    ):
        assert read_block(text) == Block(text)


def test_labelled_paragraphs_of_a_journal_feed() -> None:
    """Pensoft's RSS: a citation, DOI, authors and abstract paragraphs, then link texts."""
    body = (FIXTURES / "edge_cases/biorss__pensoft_zookeys_rss091_leading_blankline_bom_in_title.xml").read_bytes()
    papers = parse(Source(name="zookeys", type="feed"), body, "https://zookeys.pensoft.net/rss.php").papers
    first = papers[0]
    assert first.abstract.startswith("Keys to all levels of the subfamily Deltocephalinae (Hemiptera: Cicadellidae) of Pakistan")
    assert first.abstract.endswith("a new junior synonym of Macrosteles indrina (Pruthi, 1930), syn. nov.")
    assert first.authors == ("Hassan Naveed", "Bismillah Shah", "Bilal Saeed Khan", "Chengquan Cao", "Mick Webb", "Yalin Zhang")
    assert first.doi == "10.3897/zookeys.1078.47616"
    assert first.id == "https://zookeys.pensoft.net/article/47616/"  # the id stays what it was before blocks were read
    for paper in papers:
        assert not paper.abstract.startswith(("ZooKeys", "DOI:", "Authors:", "Abstract:"))
        assert not paper.abstract.endswith(("HTML", "XML", "PDF"))


def test_arxiv_rss_abstracts_lose_their_id_line() -> None:
    body = (FIXTURES / "arxiv_rss/distill__arxiv_cs_cl.xml").read_bytes()
    papers = parse(Source(name="cl", type="arxiv_rss"), body, "https://rss.arxiv.org/rss/cs.CL").papers
    assert papers and all(p.abstract and not p.abstract.startswith(("arXiv:", "Abstract:")) for p in papers)
    assert all(p.announce_type == "new" and p.primary_category == "cs.CL" for p in papers)
