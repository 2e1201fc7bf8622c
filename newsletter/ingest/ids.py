"""Paper identity: arXiv ids (old and new style, with versions), DOIs, and the canonical id of an entry."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

# --------------------------------------------------------------------------- identity

_NEW_ID = r"(?P<new>(?P<yymm>\d{4})\.\d{4,5})"
_OLD_ID = r"(?P<old>[a-z]+(?:-[a-z]+)?(?:\.[A-Z]{2})?/\d{7})"
_VERSION = r"(?:v(?P<version>\d+))?"
_ID_BODY = rf"(?:{_NEW_ID}|{_OLD_ID}){_VERSION}(?![\w.])"
_BARE_ID = re.compile(rf"^{_ID_BODY}$")
_PREFIXED_ID = re.compile(rf"(?:^|[^\w.])(?:arxiv:|oai:arxiv\.org:|arxiv\.)\s*{_ID_BODY}", re.IGNORECASE)
_URL_ID = re.compile(rf"^/(?:abs|pdf|html|format|papers)/{_ID_BODY}/?$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


def parse_arxiv_id(value: str | None) -> tuple[str, int | None] | None:
    """Find an arXiv id and version in a URL, OAI guid, `arXiv:` string, arXiv DOI or bare id.

    Returns ("2411.01234", 2) / ("hep-th/9901001", None), or None when the value names no arXiv paper;
    arbitrary numbers that merely look like ids (journal URLs, dates) are not taken.
    """
    text = (value or "").strip()
    if not text:
        return None
    match = _BARE_ID.match(text) or _PREFIXED_ID.search(text)
    if match is None and "://" in text:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        if host == "arxiv.org" or host.endswith(".arxiv.org") or (host == "huggingface.co" and parts.path.startswith("/papers/")):
            match = _URL_ID.match(re.sub(r"\.pdf$", "", unquote(parts.path)))
    if match is None:
        return None
    if match.group("new") and not 1 <= int(match.group("yymm")[2:]) <= 12:
        return None
    version = match.group("version")
    return match.group("new") or match.group("old"), int(version) if version else None


def normalize_doi(value: str | None) -> str | None:
    """A bare DOI ("10.1038/x") from a DOI, `doi:` string or doi.org URL; None when it is not one."""
    text = (value or "").strip()
    if "://" in text:
        parts = urlsplit(text)
        if (parts.hostname or "").lower() not in ("doi.org", "dx.doi.org", "www.doi.org"):
            return None
        text = unquote(parts.path.lstrip("/"))
    tokens = re.sub(r"^doi:\s*", "", text, flags=re.IGNORECASE).split()
    text = tokens[0].rstrip(".,;") if tokens else ""
    return text if _DOI.match(text) else None


def canonical_id(candidates: Iterable[str | None], doi: str | None = None) -> str | None:
    """The id that merges sightings: arXiv id without version, else `doi:<lowercased DOI>`, else the first candidate.

    `candidates` are the entry's own identifiers in order of preference (guid/id first, then links).
    """
    values = [c.strip() for c in candidates if c and c.strip()]
    for value in [*values, doi]:
        found = parse_arxiv_id(value)
        if found:
            return found[0]
    bare = normalize_doi(doi)
    if bare:
        return f"doi:{bare.lower()}"
    return values[0] if values else None


def arxiv_links(arxiv: str) -> dict[str, str]:
    """Version-less arXiv abstract and PDF links, identical from every source so merges keep one copy."""
    return {"abstract": f"https://arxiv.org/abs/{arxiv}", "pdf": f"https://arxiv.org/pdf/{arxiv}"}


def http_url(value: Any) -> str | None:
    """The value as an absolute http(s) URL (inner spaces escaped), or None; control characters disqualify it."""
    if not isinstance(value, str):
        return None
    text = value.strip().replace(" ", "%20")
    if not text or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in text):
        return None
    parts = urlsplit(text)
    return text if parts.scheme.lower() in ("http", "https") and parts.netloc else None
