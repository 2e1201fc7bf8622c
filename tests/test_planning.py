"""Planning a send: digests composed once per selection are the very mails each reader would get composed alone."""

from __future__ import annotations

import email
import email.policy
import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter import config as config_mod
from newsletter import environment
from newsletter.ingest.sources import parse
from newsletter.mail import tokens
from newsletter.mail.render import Renderer
from newsletter.model.config import Config, Source, Subscriber
from newsletter.model.digest import Digest, compose
from newsletter.model.paper import Paper
from newsletter.pipeline import planning
from newsletter.pipeline.courier import Letters
from newsletter.pipeline.planning import Planner
from newsletter.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2024, 11, 29, 10, 30, tzinfo=UTC)  # Pacific/Kiritimati is on 30 November, Pacific/Pago_Pago on the 28th
TOPICS = """\
sources:
  - {name: hf, type: hf_daily}
  - {name: arxiv, type: arxiv_rss, categories: [cs]}
  - {name: api, type: arxiv_api, query: cat:cs.AI}
topics:
  trending:
    title: Trending on Hugging Face
    sources: [hf]
    sort: trending
  agents:
    title: LLM agents
    any: [agent*, tool use]
    all: ["/\\\\b(LLM|language model)s?\\\\b/"]
  tuning:
    title: Fine-tuning
    any: [fine-tuning, LoRA, adapter*, distillation]
    none: [diffusion]
  vision:
    title: Vision
    any: [image*, video, "category:cs.CV"]
    max_papers: 3
    sort: newest
  graphs:
    title: Graphs
    any: [graph*]
  quantum:
    title: Quantum
    any: [quantum, "author:John Preskill"]
  galaxies:
    title: Galaxies
    any: [galax*, dark matter]
  proteins:
    title: Proteins
    any: [protein*]
"""
# (topics, keywords, extra lines): each selection is taken by two readers
SELECTIONS = [
    ("[agents, tuning]", None, ""),
    ("[agents, tuning]", "[benchmark*, uncertainty]", ""),
    ("[agents, tuning]", "[benchmark*, uncertainty]", "    max_papers: 7\n"),
    ("[vision, graphs, quantum]", None, ""),
    ("[vision, graphs, quantum]", None, "    timezone: Pacific/Kiritimati\n"),
    ("[vision, graphs, quantum]", None, "    timezone: Pacific/Pago_Pago\n"),
    ("[trending, agents]", "[diffusion, 'author:Yann LeCun']", ""),
    ("[trending]", None, "    min_score: 30\n"),
    ("[galaxies, proteins, tuning]", "['/neural (network|field)s?/', 'category:cs.CL', sparse]", ""),
    ("[]", "[transformer*, 'title:graph']", ""),
    ("[proteins]", "[causal*]", "    timezone: Pacific/Kiritimati\n"),
    ("[quantum, galaxies]", "[quantum]", "    max_papers: 4\n"),
    ("[agents, vision]", "['author:Soujanya Poria', memory]", "    exclude: [video, 'category:cs.RO']\n"),
    ("[tuning]", None, "    exclude: [LoRA]\n"),
]


def make_config(tmp_path: Path) -> Config:
    readers = []
    for i in range(2 * len(SELECTIONS)):
        topics, keywords, extra = SELECTIONS[i % len(SELECTIONS)]
        name = "Zoë Ämmälä" if i % 5 == 0 else f"Reader {i}"
        readers.append(
            f"  - email: reader{i}@example.org\n    name: {name}\n    topics: {topics}\n" + (f"    keywords: {keywords}\n" if keywords else "") + extra
        )
    text = "settings:\n  max_papers_per_topic: 6\n" + TOPICS + "subscribers:\n" + "".join(readers)
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return config_mod.parse(text, str(path))


@functools.cache
def fixture_papers() -> tuple[Paper, ...]:
    """The real arXiv listing of 28 Nov 2024, a day of Hugging Face papers and an arXiv API answer, parsed once."""
    feeds = [
        (Source("hf", "hf_daily"), FIXTURES / "hf_daily_papers" / "personal-news-feed__daily_papers_2026-07-31.json"),
        (Source("arxiv", "arxiv_rss"), FIXTURES / "arxiv_rss" / "aioarxiv__rss_all_archives_2024-11-28_full.xml"),
        (Source("api", "arxiv_api"), FIXTURES / "arxiv_api" / "personal-news-feed__api_cs_AI_LG_CL_25.xml"),
    ]
    return tuple(p for source, path in feeds for p in parse(source, path.read_bytes(), f"https://example.org/{source.name}").papers)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Config, Store]]:
    """The fixtures' papers stored, and readers over SELECTIONS, two each."""
    with Store(tmp_path / "state.db") as store:
        store.add_papers(fixture_papers(), now=NOW)
        yield make_config(tmp_path), store


def alone(planner: Planner, subscriber: Subscriber) -> Digest | None:
    """The digest composed for this one reader, from the matches a send shares, as sends composed before grouping."""
    day = NOW.astimezone(ZoneInfo(subscriber.timezone)).date()
    sent = planner.store.sent_paper_ids(subscriber.email)
    return compose(planner.config, subscriber, planner.matcher, planner.papers, planner.matches, sent, day)


LINKS = re.compile(r"/(unsubscribe|preferences|editions|feedback)/([A-Za-z0-9_-]{20,})")
PURPOSES = {"unsubscribe": tokens.UNSUBSCRIBE, "preferences": tokens.PREFERENCES, "editions": tokens.EDITION, "feedback": tokens.EDITION}


def message(letters: Letters, subscriber: Subscriber, digest: Digest) -> list[tuple[str, str]]:
    """The reader's mail as it goes on the wire, read back part by part, without what differs between any two makings
    of it: Date and Message-ID, and the random bytes of each link's token (each link must open for this reader)."""

    def opened(link: re.Match[str]) -> str:
        claim = tokens.verify("secret", PURPOSES[link[1]], link[2])
        assert claim is not None and claim.value.split("\0")[0] == subscriber.email, link[0]
        return f"/{link[1]}/<{claim.value}>"

    draft, stationery = letters.make(subscriber, digest, letters.layout(digest), "edition-1")
    mail = email.message_from_bytes(stationery.fill(draft).data, policy=email.policy.default)
    out = [(name, LINKS.sub(opened, str(value))) for name, value in mail.items() if name not in ("Date", "Message-ID")]
    for part in mail.walk():
        out += [("part", f"{part.get_content_type()} {part['Content-Transfer-Encoding']}")]
        if not part.is_multipart():
            out += [("body", LINKS.sub(opened, part.get_content()))]
    return out


def test_grouped_digests_are_byte_for_byte_the_mails_each_reader_gets_composed_alone(world: tuple[Config, Store]) -> None:
    config, store = world
    env = environment.load({"NEWSLETTER_BASE_URL": "https://digest.example.org", "NEWSLETTER_FROM": "Digest <digest@example.org>"})
    # some readers were mailed some of their papers before: their digests differ from their selection's others
    reference = Planner(config, store, NOW)
    for subscriber in config.subscribers[::5]:
        first = alone(reference, subscriber)
        assert first is not None
        store.record_sent(subscriber.email, [first.papers[0].id], "earlier", NOW)

    planner = Planner(config, store, NOW)
    shared = Letters(env, Renderer(env.base_url), "secret", {})
    grouped = {s.email: planner.next_digest(s) for s in config.subscribers}
    for subscriber in config.subscribers:
        mine = alone(reference, subscriber)
        digest = grouped[subscriber.email]
        assert mine is not None and digest is not None, subscriber.email
        assert digest.layout == mine.layout, subscriber.email  # same papers, sections and order, their own keywords' section
        own = Letters(env, Renderer(env.base_url), "secret", {})  # nothing shared with any other reader's making
        assert message(shared, subscriber, digest) == message(own, subscriber, mine), subscriber.email

    # readers i and i + 12 took the same selection: one digest (its entries the same objects), unless only one was mailed before
    digests = list(grouped.values())
    mailed_before = set(range(0, len(digests), 5))
    for i in range(len(SELECTIONS)):
        one, other = digests[i], digests[i + len(SELECTIONS)]
        assert one is not None and other is not None
        if (i in mailed_before) == (i + len(SELECTIONS) in mailed_before):
            assert one.sections[0].entries[0] is other.sections[0].entries[0], i
        else:
            assert one.covered_ids != other.covered_ids, i


def test_a_personal_keywords_section_names_its_own_reader_however_its_digest_was_shared(world: tuple[Config, Store]) -> None:
    config, store = world
    planner = Planner(config, store, NOW)
    twins = [s for s in config.subscribers if s.keywords == ("benchmark*", "uncertainty") and s.max_papers is None]
    assert len(twins) == 2
    for subscriber in twins:
        digest = planner.next_digest(subscriber)
        assert digest is not None
        keys = [shelf.key for shelf in digest.layout.sections]
        assert keys[-1] == f"keywords:{subscriber.email}", "the edition page finds the reader's own keywords by it"
        assert [k for k in keys if k.startswith("keywords:")] == keys[-1:]
    rendered = Renderer("https://digest.example.org").render(planner.next_digest(twins[0]))  # type: ignore[arg-type]
    assert all(s.key == "keywords:" for s in rendered.digest.sections if s.key.startswith("keywords:")), "rendered for no one in particular"


def test_followed_authors_and_keywords_sections_name_their_own_reader_however_their_digest_was_shared(world: tuple[Config, Store]) -> None:
    config, store = world
    planner = Planner(config, store, NOW)
    twins = [s for s in config.subscribers if s.exclude == ("video", "category:cs.RO")]
    assert len(twins) == 2
    for subscriber in twins:
        digest = planner.next_digest(subscriber)
        assert digest is not None
        keys = [shelf.key for shelf in digest.layout.sections]
        assert keys[0] == f"authors:{subscriber.email}" and keys[-1] == f"keywords:{subscriber.email}"
        assert not any("video" in (p.title + p.abstract).lower() for p in digest.papers), "their exclude: rule holds in the shared digest"


@pytest.mark.parametrize("share", [1000, 2], ids=["read-at-once", "one-by-one-then-at-once"])
def test_a_planner_for_one_reader_composes_what_the_send_s_planner_composes_for_them(
    world: tuple[Config, Store], monkeypatch: pytest.MonkeyPatch, share: int
) -> None:
    """The welcome mail's and `preview`'s planner compiles the shared topics that reader follows and their own rules
    only, and reads only their deliveries; a send's compiles everyone's and reads the deliveries of the first readers
    it plans one by one, then every reader's at once. Same digests."""
    monkeypatch.setattr(planning, "BULK_SHARE", share)  # 28 readers: all read at once, or the first 14 one by one
    config, store = world
    reference = Planner(config, store, NOW)
    for n, subscriber in enumerate(config.subscribers[::3]):  # a history: mailed, mailed and cut, waiting, refused
        first = reference.next_digest(subscriber)
        assert first is not None
        edition, ids = f"earlier-{n}", list(first.layout.ids)
        store.plan_delivery(edition, subscriber.email, first.layout, NOW)
        if n % 3 == 0:
            store.claim(edition, subscriber.email, NOW)
            store.mark_sent(edition, subscriber.email, "<m@x>", "250 ok", NOW)
        elif n % 3 == 1:
            store.claim(edition, subscriber.email, NOW)
            store.mark_failed(edition, subscriber.email, "550 no", hard=True, pause_after=3, now=NOW)
        store.record_sent(subscriber.email, ids[:2], f"welcome-{n}", NOW)

    everyone = Planner(config, store, NOW)
    for subscriber in config.subscribers:
        alone = Planner(config, store, NOW, readers=[subscriber])
        assert len(alone.matcher.topics) < len(everyone.matcher.topics)
        assert alone.next_digest(subscriber) == everyone.next_digest(subscriber), subscriber.email
    assert everyone._asked == (0 if share == 1000 else 14)
