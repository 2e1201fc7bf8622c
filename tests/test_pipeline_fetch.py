"""pipeline.fetch through a real local HTTP server and a real SQLite file: every captured feed,
failures recorded (never raised), conditional GET, retries, limits, the address guard, politeness,
cross-source merges and new arXiv versions."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.httpserver import LocalHTTPServer, Reply, redirect
from support.smtpserver import SMTPServer
from test_sources import EDGE_OUTCOMES, ERRORS, EXPECTED, FIXTURES, FULL_RSS

from newsletter import config as config_mod
from newsletter import environment, pipeline
from newsletter.cli import cli
from newsletter.environment import Env
from newsletter.errors import SourceError
from newsletter.mail.pool import transport as make_transport
from newsletter.model.config import Config
from newsletter.storage.store import Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CS_AI = "arxiv_rss/distill__arxiv_cs_ai.xml"  # three new cs.AI papers, the first 2604.21935v1 "Math Takes Two"
MATH_TAKES_TWO = "2604.21935"
HF = "hf_daily_papers/personal-news-feed__daily_papers_2026-07-31.json"
RECORDED = "arxiv_api/recorded_http/"
SENDER = "Paper Digest <digest@example.org>"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(sender=SENDER, db=tmp_path / "state.db")


@pytest.fixture
def store(env: Env) -> Any:
    with Store(env.db) as db:
        yield db


def make_config(tmp_path: Path, sources: list[dict[str, Any]], *, private: bool = True, **rest: Any) -> Config:
    """A real subscribers.yaml (JSON is YAML) loaded and validated the way the CLI does."""
    path = tmp_path / "subscribers.yaml"
    data = {"settings": {"allow_private_network": private}, "sources": sources, **rest}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return config_mod.load(path)


def run_fetch(config: Config, env: Env, store: Store, **policy: Any) -> dict[str, pipeline.SourceResult]:
    """pipeline.fetch with the run's own policy, minus the waiting (unless a test asks for it)."""
    base = pipeline.fetch_policy(config, env, date.today(), api_interval=0)
    results = pipeline.fetch(config, env, store, policy=dataclasses.replace(base, **{"backoff": 0.01, **policy}))
    return {r.name: r for r in results}


def stored(store: Store) -> list[Any]:
    return [sp.paper for sp in store.papers_seen_since(EPOCH)]


def fixture_source(server: LocalHTTPServer, relpath: str) -> dict[str, Any]:
    """One fixture as a configured source of its type; recorded HTTP exchanges replay their status and body."""
    kind = "feed" if relpath.startswith("edge_cases/") else (EXPECTED.get(relpath) or ERRORS[relpath])[0]
    url = server.url("/" + relpath)
    source: dict[str, Any] = {"name": relpath, "type": kind, "url": url}
    if relpath.startswith(RECORDED):
        recorded = json.loads((FIXTURES / relpath).read_bytes())
        path = "/recorded/" + Path(relpath).stem
        server.route(path, Reply(recorded["status_code"], recorded["body"].encode(), {"Content-Type": "application/atom+xml; charset=utf-8"}))
        source["url"] = server.url(path)
    if kind == "arxiv_api":  # the replaying server ignores `start`: ask for no more than the one page it has
        source["max_results"] = max(1, EXPECTED.get(relpath, ("", 1))[1])
    return source


ALL_FIXTURES = sorted([*EXPECTED, *ERRORS, *(f"edge_cases/{name}" for name in EDGE_OUTCOMES)])


# --------------------------------------------------------------------------- every captured file


def test_every_fixture_over_http_gives_its_papers_or_a_recorded_error(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    assert len(ALL_FIXTURES) == 48
    config = make_config(tmp_path, [fixture_source(http_server, relpath) for relpath in ALL_FIXTURES])
    results = run_fetch(config, env, store)
    health = store.source_health()
    papers = stored(store)
    assert sum(r.new for r in results.values()) == len(papers)

    for relpath in ALL_FIXTURES:
        result, state = results[relpath], health[relpath]
        outcome = EXPECTED[relpath][1] if relpath in EXPECTED else EDGE_OUTCOMES.get(Path(relpath).name, SourceError)
        if outcome is SourceError:
            assert result.error and state.last_error == result.error, relpath
            assert (state.consecutive_failures, state.last_success) == (1, None), relpath
            continue
        assert result.error is None and state.last_error is None, (relpath, result.error)
        assert result.papers == outcome, relpath
        assert sum(relpath in p.sources for p in papers) == outcome, relpath
        assert state.last_success is not None and state.consecutive_failures == 0

    assert "astroph" in results["arxiv_rss/aioarxiv__rss_error_bad_archive.xml"].error  # type: ignore[operator]
    assert results[RECORDED + "arxiv.py__id_abc_error_400.json"].error == "HTTP 400 Bad Request: arXiv API error: incorrect id format for abc"
    for name in ("fastfeedparser__malformed_rss_namespaced.xml", "feedparser__illformed_rss_empty_document.xml"):
        assert results[f"edge_cases/{name}"].error.startswith("not a feed")  # type: ignore[union-attr]

    # sample fields survive the whole trip: prefix stripped, authors split, HF score kept
    (rss,) = [p for p in papers if p.id == MATH_TAKES_TWO]
    assert rss.title == "Math Takes Two: A test for emergent mathematical reasoning in communication"
    assert rss.authors == ("Michael Cooper", "Samuel Cooper")
    assert rss.abstract.startswith("Although language models demonstrate") and rss.categories == ("cs.AI", "cs.LG")
    assert all(p.score is not None for p in papers if HF in p.sources)
    full = [p for p in papers if FULL_RSS in p.sources]
    assert len(full) == 935 and not any("Announce Type" in p.abstract for p in full)


def test_send_over_every_edge_case_never_raises(tmp_path: Path, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broken = ["arxiv_rss/aioarxiv__rss_error_bad_archive.xml", *(f"edge_cases/{n}" for n, o in EDGE_OUTCOMES.items() if o is SourceError)]
    names = [*(f"edge_cases/{name}" for name in EDGE_OUTCOMES), "arxiv_rss/aioarxiv__rss_error_bad_archive.xml"]
    sources = [fixture_source(http_server, relpath) for relpath in names]
    make_config(tmp_path, sources, topics={"everything": {"title": "Everything"}}, subscribers=[{"email": "ada@example.org", "topics": ["everything"]}])
    with SMTPServer() as smtp:
        environ = {**smtp.env(), "NEWSLETTER_FROM": SENDER, "NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_DB": str(tmp_path / "state.db")}
        result = CliRunner().invoke(cli, ["send"], env=environ, catch_exceptions=False)
        assert result.exit_code == 3, "some sources failed; the rest were fetched and sent"
        for relpath in broken:
            assert f"{relpath}: FAILED — " in result.output
        assert "edge_cases/biorss__pensoft_zookeys_rss091_leading_blankline_bom_in_title.xml: 100 papers, 100 new" in result.output
        (message,) = smtp.messages
        assert message["To"].addresses[0].addr_spec == "ada@example.org"
    with Store(tmp_path / "state.db") as store:
        health = store.source_health()
    assert {name for name, h in health.items() if h.last_error} == set(broken)
    assert set(health) == set(names)


# --------------------------------------------------------------------------- HTTP behaviour, end to end


def cs_ai(tmp_path: Path, url: str, **extra: Any) -> Config:
    return make_config(tmp_path, [{"name": "cs-ai", "type": "arxiv_rss", "url": url, **extra}])


def test_not_modified_costs_nothing(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    config = cs_ai(tmp_path, http_server.url("/" + CS_AI))
    first = run_fetch(config, env, store)["cs-ai"]
    assert (first.papers, first.new, first.not_modified) == (3, 3, False)
    second = run_fetch(config, env, store)["cs-ai"]
    assert (second.papers, second.new, second.not_modified, second.error) == (0, 0, True, None)
    requests = http_server.requests_to("/" + CS_AI)
    assert len(requests) == 2 and "if-none-match" not in requests[0].headers
    assert requests[1].headers["if-none-match"] and requests[1].headers["if-modified-since"]
    assert len(stored(store)) == 3
    health = store.source_health()["cs-ai"]
    assert (health.consecutive_failures, health.papers_seen) == (0, 3)


def test_429_with_retry_after_is_waited_out(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    http_server.route("/" + CS_AI, Reply(429, b"slow down", {"Retry-After": "1"}), Reply(static=True))
    started = time.monotonic()
    result = run_fetch(cs_ai(tmp_path, http_server.url("/" + CS_AI)), env, store)["cs-ai"]
    assert time.monotonic() - started >= 1.0  # backoff alone is 0.01 s: the wait is the server's
    assert (result.error, result.papers) == (None, 3)
    assert len(http_server.requests_to("/" + CS_AI)) == 2


def test_500_then_success(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    http_server.route("/" + CS_AI, Reply(500, b"oops"), Reply(502, b"oops"), Reply(static=True))
    result = run_fetch(cs_ai(tmp_path, http_server.url("/" + CS_AI)), env, store)["cs-ai"]
    assert (result.error, result.papers) == (None, 3)
    assert store.source_health()["cs-ai"].consecutive_failures == 0


def test_500_forever_is_recorded_and_counted(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    http_server.route("/" + CS_AI, Reply(503, b"down"))
    config = cs_ai(tmp_path, http_server.url("/" + CS_AI))
    for _ in range(2):
        assert run_fetch(config, env, store, retries=1)["cs-ai"].error == "HTTP 503 Service Unavailable (after 1 retry)"
    health = store.source_health()["cs-ai"]
    assert (health.consecutive_failures, health.last_success, health.last_error) == (2, None, "HTTP 503 Service Unavailable (after 1 retry)")


def test_per_source_timeout(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    http_server.route("/slow.xml", Reply(200, (FIXTURES / CS_AI).read_bytes(), delay=1.5))
    config = make_config(
        tmp_path,
        [
            {"name": "impatient", "type": "feed", "url": http_server.url("/slow.xml"), "timeout": 0.3},
            {"name": "patient", "type": "feed", "url": http_server.url("/slow.xml")},
        ],
    )
    assert config.sources[0].timeout == 0.3 and config.sources[1].timeout is None
    results = run_fetch(config, env, store, retries=1, timeout=5.0)
    assert results["impatient"].error == "timed out after 0.3 s (after 1 retry)"
    assert (results["patient"].error, results["patient"].papers) == (None, 3)
    assert store.source_health()["impatient"].last_error == "timed out after 0.3 s (after 1 retry)"


def test_oversize_body_is_refused_and_the_others_go_on(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    config = make_config(
        tmp_path,
        [
            {"name": "huge", "type": "arxiv_rss", "url": http_server.url("/" + FULL_RSS)},
            {"name": "small", "type": "arxiv_rss", "url": http_server.url("/" + CS_AI)},
        ],
    )
    results = run_fetch(config, env, store, max_bytes=64 * 1024)
    assert results["huge"].error == "body larger than 64 KiB"
    assert (results["small"].error, results["small"].papers) == (None, 3)


def test_redirect_to_loopback_is_refused(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    http_server.route("/hop", redirect(http_server.url("/" + CS_AI)))  # localhost -> 127.0.0.1
    base = f"http://localhost:{http_server.port}"
    config = make_config(
        tmp_path,
        [{"name": "direct", "type": "arxiv_rss", "url": f"{base}/{CS_AI}"}, {"name": "hop", "type": "arxiv_rss", "url": f"{base}/hop"}],
        private=False,
    )
    results = run_fetch(config, env, store, allowed_hosts=frozenset({"localhost"}))
    assert results["direct"].papers == 3
    assert results["hop"].error == "refused: 127.0.0.1 is a loopback address (set settings.allow_private_network to allow)"
    assert len(http_server.requests_to("/" + CS_AI)) == 1  # only the direct fetch reached it


def test_private_hosts_are_refused_by_default_settings(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    config = make_config(tmp_path, [{"name": "local", "type": "feed", "url": f"http://localhost:{http_server.port}/{CS_AI}"}], private=False)
    results = {r.name: r for r in pipeline.fetch(config, env, store)}
    assert results["local"].error.startswith("refused: localhost resolves to ")  # type: ignore[union-attr]
    assert http_server.requests == []


def test_arxiv_api_pages_are_paced_and_a_repeating_server_cannot_loop_us(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    # totalResults 31, 10 per page; this server ignores `start`, so every page claims to be the first
    http_server.route("/api", Reply(200, (FIXTURES / "arxiv_api/arxiv.py__api_old_au_del_maestro_10.xml").read_bytes()))
    url = http_server.url("/api?search_query=au:del_maestro&start=0&max_results=10")
    config = make_config(tmp_path, [{"name": "api", "type": "arxiv_api", "url": url, "max_results": 30}])
    policy = pipeline.fetch_policy(config, env, date.today())
    assert dict(policy.host_intervals) == {"export.arxiv.org": 3.0, "rss.arxiv.org": 3.0, "127.0.0.1": 3.0}
    paced = pipeline.fetch_policy(config, env, date.today(), api_interval=0.4)
    started = time.monotonic()
    (result,) = pipeline.fetch(config, env, store, policy=paced)
    assert time.monotonic() - started >= 0.4
    assert (result.error, result.papers) == (None, 10)
    pages = [r.path for r in http_server.requests_to("/api")]
    assert len(pages) == 2 and "start=10" in pages[1]


# --------------------------------------------------------------------------- validators only with the papers


API_PAGE = "arxiv_api/arxiv.py__api_old_au_del_maestro_10.xml"  # totalResults 31, 10 per page


def test_a_failed_second_page_saves_no_validators_so_the_next_fetch_gets_the_first_page_again(tmp_path: Path, env: Env, store: Store) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "api.xml").write_bytes((FIXTURES / API_PAGE).read_bytes())
    with LocalHTTPServer(www) as server:
        # the file with ETag/Last-Modified and conditional GET for page 1; page 2 (start=10) is refused this once
        server.route("/api.xml", Reply(static=True), Reply(404, b"gone"), Reply(static=True))
        first_url = server.url("/api.xml?search_query=au:del_maestro&start=0&max_results=10")
        config = make_config(tmp_path, [{"name": "api", "type": "arxiv_api", "url": first_url, "max_results": 30}])

        failed = run_fetch(config, env, store)["api"]
        assert failed.error is not None and "404" in failed.error
        pages = server.requests_to("/api.xml")
        assert len(pages) == 2 and "start=10" in pages[1].path
        assert stored(store) == [], "page 1's papers are not stored when page 2 fails"
        assert store.validators(first_url) == (None, None), "so neither are page 1's validators"

        again = run_fetch(config, env, store)["api"]
        assert (again.error, again.not_modified, again.papers) == (None, False, 10)
        retry = server.requests_to("/api.xml")[2]
        assert "start=0" in retry.path and "if-none-match" not in retry.headers and "if-modified-since" not in retry.headers
        assert len(stored(store)) == 10
        assert store.validators(first_url)[0], "saved once the papers are"

        third = run_fetch(config, env, store)["api"]
        assert (third.error, third.not_modified) == (None, True)
        assert server.requests_to("/api.xml")[-1].headers["if-none-match"] == store.validators(first_url)[0]


def test_a_page_that_does_not_parse_saves_no_validators_so_it_stays_an_error_next_time(tmp_path: Path, env: Env, store: Store) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "feed.xml").write_bytes(b"<!doctype html><html><body><p>Not a feed, but served with an ETag</p></body></html>")
    with LocalHTTPServer(www) as server:
        config = make_config(tmp_path, [{"name": "broken", "type": "feed", "url": server.url("/feed.xml")}])
        for _ in range(2):
            result = run_fetch(config, env, store)["broken"]
            assert result.error is not None and not result.not_modified, "a 304 would make a broken source look healthy"
            assert store.validators(server.url("/feed.xml")) == (None, None)
        requests = server.requests_to("/feed.xml")
        assert len(requests) == 2 and not {"if-none-match", "if-modified-since"} & set(requests[1].headers)
        assert store.source_health()["broken"].consecutive_failures == 2


# --------------------------------------------------------------------------- identity across sources


def hf_twin_of_math_takes_two() -> tuple[bytes, int]:
    """A real Hugging Face daily entry, re-pointed at the arXiv paper of the first cs.AI RSS item; and its upvotes."""
    items = json.loads((FIXTURES / HF).read_bytes())
    item = items[0]
    item["paper"]["id"] = MATH_TAKES_TWO
    item["paper"]["title"] = item["title"] = "Math Takes Two:\n  A test for emergent mathematical reasoning in communication"
    return json.dumps(items).encode(), item["paper"]["upvotes"]


def test_one_paper_from_hf_and_arxiv_rss_is_one_entry(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    body, upvotes = hf_twin_of_math_takes_two()
    http_server.route("/hf.json", Reply(200, body, {"Content-Type": "application/json"}))
    config = make_config(
        tmp_path,
        [{"name": "hf", "type": "hf_daily", "url": http_server.url("/hf.json")}, {"name": "cs-ai", "type": "arxiv_rss", "url": http_server.url("/" + CS_AI)}],
        topics={"maths": {"any": ["mathematical reasoning"]}},
        subscribers=[{"email": "ada@example.org", "topics": ["maths"]}],
    )
    results = run_fetch(config, env, store)
    assert (results["hf"].papers, results["cs-ai"].papers) == (30, 3)
    assert len(stored(store)) == 32
    seen = store.source_health()
    assert (seen["hf"].papers_seen, seen["cs-ai"].papers_seen) == (30, 3), "the shared paper counts for both sources"
    paper = store.paper(MATH_TAKES_TWO)
    assert paper is not None
    assert paper.score == upvotes and upvotes > 0
    assert paper.categories == ("cs.AI", "cs.LG")
    assert sorted(paper.sources) == ["cs-ai", "hf"]
    assert paper.title == "Math Takes Two: A test for emergent mathematical reasoning in communication"
    assert paper.links["hf"] == f"https://huggingface.co/papers/{MATH_TAKES_TWO}"

    digest = pipeline.Planner(config, store, datetime.now(UTC)).next_digest(config.subscribers[0])
    assert digest is not None
    assert [p.id for p in digest.papers].count(MATH_TAKES_TWO) == 1


# --------------------------------------------------------------------------- new versions


def version_of_cs_ai(version: int) -> bytes:
    """The real cs.AI feed with its first item re-announced as a replacement at `version`."""
    body = (FIXTURES / CS_AI).read_bytes()
    if version == 1:
        return body
    body = body.replace(b"2604.21935v1 Announce Type: new", b"2604.21935v%d Announce Type: replace" % version)
    body = body.replace(b"oai:arXiv.org:2604.21935v1", b"oai:arXiv.org:2604.21935v%d" % version)
    return body.replace(b"<arxiv:announce_type>new<", b"<arxiv:announce_type>replace<", 1)


@pytest.mark.parametrize("replace", [False, True])
def test_new_version_is_sent_again_only_when_the_source_asks(tmp_path: Path, http_server: LocalHTTPServer, replace: bool) -> None:
    source = {"name": "cs-ai", "type": "arxiv_rss", "url": http_server.url("/feed.xml"), "announce_types": ["new", "cross", "replace"], "replace": replace}
    config = make_config(tmp_path, [source], topics={"maths": {"any": ["Math Takes Two"]}}, subscribers=[{"email": "ada@example.org", "topics": ["maths"]}])
    with SMTPServer() as smtp, Store(tmp_path / "state.db") as store:
        environ = {**smtp.env(), "NEWSLETTER_FROM": SENDER, "NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_DB": str(store.path)}
        env = environment.load(environ, dotenv=tmp_path / ".env")

        def cycle(version: int) -> int:
            """Serve this version, fetch, send; how many mails went out."""
            http_server.route("/feed.xml", Reply(200, version_of_cs_ai(version)))
            assert run_fetch(config, env, store)["cs-ai"].error is None
            return pipeline.send(config, env, store, make_transport(env.smtp, env.outbox, env.pool, env.dkim)).count("sent")

        assert cycle(1) == 1
        assert store.paper(MATH_TAKES_TWO).version == 1  # type: ignore[union-attr]
        assert cycle(2) == (1 if replace else 0)
        assert store.paper(MATH_TAKES_TWO).version == 2  # type: ignore[union-attr]
        assert cycle(2) == 0, "the same new version is news once"
        assert cycle(3) == (1 if replace else 0)
        assert all("Math Takes Two" in m.get_body(("plain",)).get_content() for m in smtp.messages)
        assert len(smtp.messages) == (3 if replace else 1)


def test_replace_source_reads_replacement_entries(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    http_server.route("/feed.xml", Reply(200, version_of_cs_ai(2)))
    plain = run_fetch(cs_ai(tmp_path, http_server.url("/feed.xml")), env, store)["cs-ai"]
    assert plain.papers == 2, "replacements are not news by default"
    wanting = run_fetch(cs_ai(tmp_path, http_server.url("/feed.xml"), replace=True), env, store)["cs-ai"]
    assert wanting.papers == 3


# --------------------------------------------------------------------------- newsletter sources


def test_sources_command_prints_each_sources_health(tmp_path: Path, http_server: LocalHTTPServer, env: Env, store: Store) -> None:
    one_paper = "/edge_cases/feedparser__wellformed_atom10_entry_title_inline_markup.xml"
    http_server.route(one_paper, Reply(404, b"gone"), Reply(404, b"gone"), Reply(static=True))
    good = {"name": "cs-ai", "type": "arxiv_rss", "url": http_server.url("/" + CS_AI)}
    flaky = {"name": "flaky", "type": "feed", "url": http_server.url(one_paper)}
    config = make_config(tmp_path, [good, flaky])
    run_fetch(config, env, store)
    run_fetch(config, env, store)
    make_config(tmp_path, [good, flaky, {"name": "later", "type": "feed", "url": http_server.url("/x.xml")}])

    def sources() -> str:
        environ = {"NEWSLETTER_DB": str(env.db), "NEWSLETTER_CONFIG": str(tmp_path / "subscribers.yaml")}
        result = CliRunner().invoke(cli, ["sources"], env=environ, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    output = sources()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
    assert re.search(rf"^cs-ai \(arxiv_rss\): ok; last success {stamp}; papers seen 3$", output, re.MULTILINE)
    assert re.search(r"^flaky \(feed\): FAILING \(2 in a row\); last success never; papers seen 0$", output, re.MULTILINE)
    assert re.search(rf"^    last error {stamp}: HTTP 404 Not Found$", output, re.MULTILINE)
    assert "later (feed): never fetched" in output

    run_fetch(config, env, store)  # flaky recovers: ok again, the last error still shown for the record
    output = sources()
    assert re.search(rf"^flaky \(feed\): ok; last success {stamp}; papers seen 1$", output, re.MULTILINE)
    assert "HTTP 404 Not Found" in output
