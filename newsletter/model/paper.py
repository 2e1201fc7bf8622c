"""The Paper record every source normalises into, and the identity rules that make merging possible."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Paper:
    """One paper as the rest of the pipeline sees it, whatever feed it came from."""

    id: str  # canonical: arXiv id without version ("2411.01234", "hep-th/9901001"), else "doi:10.x/y", else entry id/link
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)  # keys: abstract, pdf, code, project, hf, doi
    published: datetime | None = None  # timezone-aware
    sources: tuple[str, ...] = ()  # names of the configured sources that delivered it
    score: int | None = None  # Hugging Face upvotes; None when the source has no notion of it
    version: int | None = None  # arXiv version number, when known
    announce_type: str | None = None  # arXiv RSS: new, cross, replace, replace-cross
    doi: str | None = None
    journal_ref: str | None = None
    comments: int | None = None  # Hugging Face discussion count
    stars: int | None = None  # GitHub stars of the code repository
    keywords: tuple[str, ...] = ()  # Hugging Face ai_keywords
    arxiv_comment: str | None = None  # the authors' arXiv comments field: "12 pages, accepted at ACL 2025"
    primary_category: str | None = None  # arXiv's primary category; the others in `categories` are cross-lists
    ai_summary: str | None = None  # Hugging Face's machine-written one-line summary, shown beside the abstract, never for it

    def to_dict(self) -> dict[str, Any]:
        """Serialise for storage; datetimes become ISO strings."""
        data = dataclasses.asdict(self)
        data["published"] = self.published.isoformat() if self.published else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paper:
        """Inverse of to_dict, tolerant of fields added later."""
        kwargs = {k: v for k, v in data.items() if k in _FIELDS}
        for key in ("authors", "categories", "sources", "keywords"):
            kwargs[key] = tuple(kwargs.get(key) or ())
        kwargs["links"] = dict(kwargs.get("links") or {})
        if kwargs.get("published"):
            kwargs["published"] = datetime.fromisoformat(kwargs["published"])
        return cls(**kwargs)


_FIELDS = frozenset(f.name for f in dataclasses.fields(Paper))  # what from_dict takes: asking dataclasses each time was a third of reading a paper


def merge(old: Paper, new: Paper) -> Paper:
    """Combine two sightings of one paper: the HF score, the arXiv categories, every link and source."""
    return dataclasses.replace(
        old,
        title=old.title or new.title,
        abstract=old.abstract if len(old.abstract) >= len(new.abstract) else new.abstract,
        authors=old.authors or new.authors,
        categories=tuple(dict.fromkeys(old.categories + new.categories)),
        links={**new.links, **old.links},
        published=old.published or new.published,
        sources=tuple(dict.fromkeys(old.sources + new.sources)),
        score=max((s for s in (old.score, new.score) if s is not None), default=None),
        version=max((v for v in (old.version, new.version) if v is not None), default=None),
        announce_type=old.announce_type or new.announce_type,
        doi=old.doi or new.doi,
        journal_ref=old.journal_ref or new.journal_ref,
        comments=new.comments if new.comments is not None else old.comments,
        stars=new.stars if new.stars is not None else old.stars,
        keywords=tuple(dict.fromkeys(old.keywords + new.keywords)),
        arxiv_comment=new.arxiv_comment or old.arxiv_comment,
        primary_category=old.primary_category or new.primary_category,
        ai_summary=new.ai_summary or old.ai_summary,
    )


def stub(paper: Paper) -> Paper:
    """What is kept of a paper once its body is pruned: its id (dedup), version (a revision is news) and sources (`papers seen`)."""
    return Paper(id=paper.id, title="", sources=paper.sources, version=paper.version)
