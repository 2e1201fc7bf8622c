"""What a reader may choose from a paper's "Follow", "More like this" and "Fewer like this" links; no I/O here.

Each choice is a rule of the keyword syntax (newsletter.model.topics) that the reader sees before it is written:
an `author:` keyword for an author to follow, a keyword for more or for fewer, a topic to join.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsletter.model.config import Config, Subscriber, is_author_keyword
from newsletter.model.digest import subscriber_topics
from newsletter.model.paper import Paper
from newsletter.model.topics import Matcher, keyword_error, parse_keyword

ACTIONS = ("follow", "more", "fewer")
MAX_TERMS = 8  # terms offered per paper: a short list to tick, not the whole title
MAX_TERM_CHARS = 60  # as the preferences page allows for a keyword (subscriptions.forms.MAX_KEYWORD_CHARS)
# Words that name no subject: a title's terms are the runs of words between them.
_STOPWORD_TEXT = """a about across after against all along also among an and any are as at be been being between beyond both but by can
do does for from has have how in into is it its itself large learning model models more new non not of on only or our over per than
that the their them these this through to toward towards under up upon using via vs what when where which while who why will with
within without you your
analysis approach benchmark better centric effective efficient framework improving method methods next novel paper report
scalable study survey technical toward towards understanding evaluating exploring enhancing rethinking revisiting"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_CHUNKS = re.compile(r"[^\w\s+#-]+")  # what ends a run of words: punctuation other than hyphens (and + # of C++, C#)
_ARXIV_CATEGORY = re.compile(r"[a-z-]+(?:\.[A-Za-z-]+)?")  # cs.CL, hep-ex: not a feed's free-text tags
_NOT_KEYWORD = re.compile(r'^[/"]|[*,]')  # would read as a regex, a quote or a wildcard, or split on the preferences page


@dataclass(frozen=True)
class Option:
    """One rule the reader may tick: what is written, how it is shown, and whether they already have it."""

    rule: str
    label: str
    held: bool = False


@dataclass(frozen=True)
class Choices:
    """Everything the three links offer for one paper and reader."""

    authors: tuple[Option, ...]  # follow: the first and the last author, as `author:` keywords
    fewer: tuple[Option, ...]  # the keywords that matched the paper for this reader, then its distinctive terms
    more: tuple[Option, ...]  # its distinctive terms, as personal keywords
    topics: tuple[Option, ...]  # shared topics that take the paper, to join (value: the topic's name)


def author_keyword(name: str) -> str | None:
    """The `author:` keyword that follows exactly this name; None when the name cannot be one (a comma splits it on the preferences page)."""
    folded = " ".join(name.split())
    if not folded or "," in folded or any(ord(c) < 32 for c in folded):
        return None
    keyword = f'author:"{folded}"' if "*" in folded or folded.startswith(("/", '"')) else f"author:{folded}"
    return keyword if keyword_error(keyword) is None and len(keyword) <= MAX_TERM_CHARS else None


def distinctive_terms(paper: Paper) -> list[str]:
    """The title's runs of subject words (up to three words; of a longer run its last two and its other longer words),
    then its primary arXiv category: what the paper is about, as keywords a reader can read at a glance."""
    out: dict[str, str] = {}
    for chunk in _CHUNKS.split(paper.title):
        words: list[str] = []
        for word in [*chunk.split(), ""]:
            if word and word.lower() not in _STOPWORDS and re.search(r"[^\W\d]", word):
                words.append(word)
                continue
            # a longer run: its last two words (most often the head of the phrase), and its other longer words
            terms = [" ".join(words)] if len(words) <= 3 else [" ".join(words[-2:]), *(w for w in words[:-2] if len(w) >= 4 or w.isupper())]
            for term in terms:
                if term and len(term) >= 3 and usable(term):
                    out.setdefault(term.lower(), term)
            words = []
    if paper.categories and _ARXIV_CATEGORY.fullmatch(paper.categories[0]) and usable(f"category:{paper.categories[0]}"):
        out.setdefault(f"category:{paper.categories[0]}".lower(), f"category:{paper.categories[0]}")
    return list(out.values())


def usable(term: str) -> bool:
    """Whether a term can be written as a rule as it stands and edited on the preferences page."""
    return len(term) <= MAX_TERM_CHARS and not _NOT_KEYWORD.search(term) and not any(ord(c) < 32 for c in term) and keyword_error(term) is None


def choices(config: Config, subscriber: Subscriber, paper: Paper) -> Choices:
    """What the links offer this reader for this paper; what they already have is marked held."""
    keywords = {k.lower() for k in subscriber.keywords}
    excluded = {k.lower() for k in subscriber.exclude}
    names = list(dict.fromkeys(paper.authors[:1] + paper.authors[-1:]))
    authors = [(keyword, name) for name in names if (keyword := author_keyword(name)) is not None]
    topics = subscriber_topics(config, subscriber)
    matcher = Matcher(topics)
    hits = matcher.match(paper)[1].any
    matched = dict.fromkeys(text for t in topics for kid, text in matcher.keywords_of(t.name) if hits >> kid & 1)
    said = [parse_keyword(m) for m in matched]
    terms = [t for t in distinctive_terms(paper) if not any(kw.spans(t) == [(0, len(t))] for kw in said)]  # not one a matched keyword says already
    shared = Matcher(list(config.topics.values())).topics_for(paper)
    return Choices(
        authors=tuple(Option(keyword, name, keyword.lower() in keywords) for keyword, name in authors),
        fewer=tuple(Option(t, t, t.lower() in excluded) for t in [*matched, *terms][:MAX_TERMS]),
        more=tuple(Option(t, t, t.lower() in keywords) for t in terms[:MAX_TERMS]),
        topics=tuple(Option(name, config.topics[name].title, name in subscriber.topics) for name in shared),
    )


def rules_shown(keywords: tuple[str, ...], exclude: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...]]]:
    """The preferences page's list of a reader's own rules, each with its remove button: (kind posted, heading, rules)."""
    return [
        ("keywords", "Authors you follow", tuple(k for k in keywords if is_author_keyword(k))),
        ("keywords", "Your keywords", tuple(k for k in keywords if not is_author_keyword(k))),
        ("exclude", "Excluded", exclude),
    ]
