"""Labelled metadata that feeds put in a description ("Authors: … Upvotes: 12 Summary: …", arXiv RSS's
"arXiv:2411.01234v1 Announce Type: new Abstract: …", a journal's "DOI: …" paragraphs): read into fields,
so that the abstract is the abstract.

A description counts as such a block only when it opens with a known label (or arXiv's id line), or when
whole paragraphs of it are labelled and one of them is the abstract; labels are matched as written
("Abstract:", not "abstract:"), so prose that happens to hold "summary:" is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# label as written -> the field it fills; None: metadata with no field of its own, dropped
_LABELS: dict[str, str | None] = {
    "Abstract": "abstract", "Summary": "abstract",
    "Authors": "authors", "Author": "authors", "Author(s)": "authors",
    "Comments": "comment", "Comment": "comment",
    "DOI": "doi",
    "Journal-ref": "journal", "Journal ref": "journal", "Journal reference": "journal",
    "Upvotes": "upvotes",
    "Announce Type": "announce",
    "Categories": None, "Subjects": None, "Published": None, "Submitted": None,
}  # fmt: skip
# Not labels, though feeds write them so: "Code:", "Keywords:", "Links:" end many abstracts, and are part of them.
_LABEL = re.compile(r"(?:(?<=\s)|^)(" + "|".join(re.escape(k) for k in sorted(_LABELS, key=len, reverse=True)) + r"):\s*")
_ARXIV_LINE = re.compile(r"^\s*arXiv:(?P<id>\d{4}\.\d{4,5}(?:v\d+)?|[a-z-]+(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)\s+(?=[A-Z])")
_PROSE = re.compile(r"\w+[\s,;]+\w+[\s,;]+\w+")  # three words: not a lone link text such as "PDF" or "XML"


@dataclass(frozen=True)
class Block:
    """What a description held: the abstract and whatever labelled metadata came with it."""

    abstract: str
    fields: dict[str, str] = field(default_factory=dict)  # "authors", "comment", "doi", "journal", "upvotes", "announce", "arxiv"


def read_block(text: str) -> Block:
    """The description split into its abstract and labelled fields; unchanged when it holds no such block."""
    if ":" not in text:
        return Block(text)
    fields: dict[str, str] = {}
    arxiv = _ARXIV_LINE.match(text)
    if arxiv:
        fields["arxiv"] = arxiv["id"]
        text = text[arxiv.end() :]
    paragraphs = text.split("\n\n")
    opens = _LABEL.match(paragraphs[0]) is not None
    labelled = [i for i, p in enumerate(paragraphs) if _LABEL.match(p)]
    has_abstract = any(_LABELS[_LABEL.match(paragraphs[i])[1]] == "abstract" for i in labelled)  # type: ignore[index]
    if not (opens or arxiv or (labelled and has_abstract)):
        return Block(text)
    abstract: list[str] = []
    unlabelled: list[str] = []
    in_abstract = False
    for paragraph in paragraphs:
        if not _LABEL.match(paragraph):
            if in_abstract and _PROSE.search(paragraph):
                abstract.append(paragraph)
            elif not has_abstract:
                unlabelled.append(paragraph)
            continue
        in_abstract = False
        parts = _LABEL.split(paragraph)  # "", label, value, label, value, ...
        for label, value in zip(parts[1::2], parts[2::2], strict=True):
            name, value = _LABELS[label], value.strip()
            if name == "abstract":
                abstract.append(value)
                in_abstract = True
            elif name is not None and value and name not in fields:
                fields[name] = value
    return Block("\n\n".join(p for p in abstract or unlabelled if p), fields)
