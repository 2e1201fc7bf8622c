"""subscribers.yaml: the sample loads, and every kind of mistake is reported with file:line:col and path."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import time
from pathlib import Path

import pytest

from newsletter import config
from newsletter.errors import ConfigError
from newsletter.model.digest import all_topics
from newsletter.model.topics import Matcher, keyword_error

ROOT = Path(__file__).parent.parent

GOOD = """\
settings:
  timezone: Europe/Paris
  send_at: "06:45"
sources:
  - name: arxiv
    type: arxiv_rss
    categories: [cs.CL]
topics:
  fine-tuning:
    title: Fine-tuning
    any: [fine-tuning, LoRA]
    none: [diffusion]
subscribers:
  - email: ada@example.org
    topics: [fine-tuning]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.parse(text, "subs.yaml")
    return [str(p) for p in info.value.problems]


def test_sample_config_in_repo_is_valid() -> None:
    loaded = config.load(ROOT / "subscribers.yaml")
    assert [s.email for s in loaded.subscribers] == ["ada@example.org", "grace@example.org", "rosalind@example.org"]
    assert all(Path(s.url or "").is_file() for s in loaded.sources), "sample sources point at bundled files"


def test_good_config_builds_dataclasses_with_defaults_from_settings() -> None:
    loaded = config.parse(GOOD, "subs.yaml")
    ada = loaded.subscribers[0]
    assert ada.timezone == "Europe/Paris" and ada.send_at == time(6, 45) and ada.frequency == "daily"
    assert loaded.topics["fine-tuning"].any == ("fine-tuning", "LoRA")
    assert (loaded.topics["fine-tuning"].sort, loaded.topics["fine-tuning"].rising_hours) == ("relevance", 24)
    ranked = config.parse(GOOD.replace("    none: [diffusion]", "    none: [diffusion]\n    sort: rising\n    rising_hours: 6"), "subs.yaml")
    assert (ranked.topics["fine-tuning"].sort, ranked.topics["fine-tuning"].rising_hours) == ("rising", 6)
    assert loaded.sources[0].announce_types == ("new", "cross")


def test_bad_yaml_names_line_and_column() -> None:
    assert problems("topics:\n  a: [x\nsubscribers: []\n") == ["subs.yaml:3:12: invalid YAML: expected ',' or ']', but got ':'"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("topics: [fine-tuning]", "topics: [fine-tunin]"),
            "subs.yaml:15:14: subscribers[0].topics[0]: unknown topic 'fine-tunin' (did you mean 'fine-tuning'?)",
        ),
        (("  - email: ada@example.org\n", "  - name: Ada\n"), "subs.yaml:14:5: subscribers[0]: missing 'email'"),
        (("ada@example.org", "ada-at-example"), "subs.yaml:14:5: subscribers[0].email: invalid email address 'ada-at-example'"),
        (("    none: [diffusion]", "    nnoe: [diffusion]"), "subs.yaml:12:5: topics.fine-tuning.nnoe: unknown key 'nnoe' (did you mean 'none'?)"),
        (("any: [fine-tuning, LoRA]", "any: [fine-tuning, '']"), "subs.yaml:11:24: topics.fine-tuning.any[1]: empty string"),
        (("Europe/Paris", "Europe/Pariss"), "subs.yaml:2:3: settings.timezone: unknown timezone 'Europe/Pariss' (did you mean 'Europe/Paris'?)"),
        (('"06:45"', "7"), 'subs.yaml:3:3: settings.send_at: bad send_at 7 (write it quoted, e.g. "07:30")'),
        (('"06:45"', '"25:00"'), "subs.yaml:3:3: settings.send_at: bad send_at '25:00' (expected HH:MM, 24-hour)"),
        (("type: arxiv_rss", "type: arxiv-rss"), "subs.yaml:6:5: sources[0].type: unknown type 'arxiv-rss' (did you mean 'arxiv_rss'?)"),
        # wrong types
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    min_score: high"),
            "subs.yaml:13:5: topics.fine-tuning.min_score: expected a whole number, got the text 'high'",
        ),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    min_score: 2.5"),
            "subs.yaml:13:5: topics.fine-tuning.min_score: expected a whole number, got the number 2.5",
        ),
        (("    none: [diffusion]", "    none: [diffusion]\n    max_papers: 0"), "subs.yaml:13:5: topics.fine-tuning.max_papers: must be at least 1, got 0"),
        # ranking: the sort and the rising window
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    sort: trendy"),
            "subs.yaml:13:5: topics.fine-tuning.sort: unknown sort 'trendy' (did you mean 'trending'?)",
        ),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    sort: popular"),
            "subs.yaml:13:5: topics.fine-tuning.sort: unknown sort 'popular' (one of: relevance, trending, rising, newest)",
        ),
        (("    none: [diffusion]", "    none: [diffusion]\n    sort: [rising]"), "subs.yaml:13:5: topics.fine-tuning.sort: expected text, got a list"),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    sort: rising\n    rising_hours: 0"),
            "subs.yaml:14:5: topics.fine-tuning.rising_hours: must be at least 1, got 0",
        ),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    rising_hours: 721"),
            "subs.yaml:13:5: topics.fine-tuning.rising_hours: must be at most 720 (30 days), got 721",
        ),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    rising_hours: 12h"),
            "subs.yaml:13:5: topics.fine-tuning.rising_hours: expected a whole number, got the text '12h'",
        ),
        (("any: [fine-tuning, LoRA]", "any: 5"), "subs.yaml:11:5: topics.fine-tuning.any: expected a list of strings, got the number 5"),
        (("any: [fine-tuning, LoRA]", "any: [fine-tuning, {a: b}]"), "subs.yaml:11:24: topics.fine-tuning.any[1]: expected a string, got a mapping"),
        (("    title: Fine-tuning", "    title: [Fine-tuning]"), "subs.yaml:10:5: topics.fine-tuning.title: expected text, got a list"),
        # a broken topic is reported once, not again by each subscriber that names it
        (
            ("  fine-tuning:\n    title: Fine-tuning\n", "  fine-tuning: [LoRA]\n  unused:\n    title: Fine-tuning\n"),
            "subs.yaml:9:3: topics.fine-tuning: expected a mapping, got a list",
        ),
        (
            ("  fine-tuning:\n    title: Fine-tuning\n", "  - fine-tuning\n  - x:\n    title: Fine-tuning\n"),
            "subs.yaml:8:1: topics: expected a mapping of topic names, got a list",
        ),
        (("    topics: [fine-tuning]", "    topics: 5"), "subs.yaml:15:5: subscribers[0].topics: expected a list of strings, got the number 5"),
        # duplicate keys: every one is reported with its path, the first value is the one checked further
        (
            ("subscribers:", "  fine-tuning:\n    any: [x]\nsubscribers:"),
            "subs.yaml:13:3: topics.fine-tuning: duplicate topic 'fine-tuning' (first at line 9; this one is ignored)",
        ),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    any: [x]"),
            "subs.yaml:13:5: topics.fine-tuning.any: duplicate key 'any' (first at line 11; this one is ignored)",
        ),
        # keywords: each error points at the keyword itself, in flow or block lists
        (
            ("any: [fine-tuning, LoRA]", "any: [fine-tuning, 'titel:LoRA']"),
            "subs.yaml:11:24: topics.fine-tuning.any[1]: unknown field 'titel:' (did you mean 'title:'?; quote the keyword to match a colon literally)",
        ),
        (("any: [fine-tuning, LoRA]", "any:\n      - ''\n      - LoRA"), "subs.yaml:12:9: topics.fine-tuning.any[0]: empty string"),
        (
            ("any: [fine-tuning, LoRA]", "any:\n      - fine-tuning\n      - 'a*b'"),
            "subs.yaml:13:9: topics.fine-tuning.any[1]: '*' is only allowed at the end of a keyword (use /regex/ for more)",
        ),
        (
            ("any: [fine-tuning, LoRA]", "any: ['/(x/']"),
            "subs.yaml:11:11: topics.fine-tuning.any[0]: invalid regex /(x/: missing ), unterminated subpattern at position 0",
        ),
        (("none: [diffusion]", "none: [diffusion, '*']"), "subs.yaml:12:23: topics.fine-tuning.none[1]: '*' alone would match everything"),
        (
            ("    topics: [fine-tuning]", "    topics: [fine-tuning]\n    keywords: [Ainu, '/(x/']"),
            "subs.yaml:16:22: subscribers[0].keywords[1]: invalid regex /(x/: missing ), unterminated subpattern at position 0",
        ),
        (("    topics: [fine-tuning]", "    topics: [fine-tuning]\n    keywords: [Ainu, ' ']"), "subs.yaml:16:22: subscribers[0].keywords[1]: empty string"),
        (("    topics: [fine-tuning]", "    keywords: ['author:']"), "subs.yaml:15:16: subscribers[0].keywords[0]: nothing after 'author:'"),
        (
            ("    none: [diffusion]", "    none: [diffusion]\n    sources: [arxv]"),
            "subs.yaml:13:15: topics.fine-tuning.sources[0]: unknown source 'arxv' (did you mean 'arxiv'?)",
        ),
        (
            ("    topics: [fine-tuning]", "    topics: [fine-tuning]\n    timezone: 5"),
            "subs.yaml:16:5: subscribers[0].timezone: expected text, got the number 5",
        ),
        (
            ("    topics: [fine-tuning]", "    topics: [fine-tuning]\n    timezone: Europe/Lundon"),
            "subs.yaml:16:5: subscribers[0].timezone: unknown timezone 'Europe/Lundon' (did you mean 'Europe/London'?)",
        ),
        (
            ("    topics: [fine-tuning]", "    topics: [fine-tuning]\n    send_at: 7am"),
            "subs.yaml:16:5: subscribers[0].send_at: bad send_at '7am' (expected HH:MM, 24-hour)",
        ),
        (
            ("  fine-tuning:", "  fine-tuning:\n    descripton: x"),
            "subs.yaml:10:5: topics.fine-tuning.descripton: unknown key 'descripton' (did you mean 'description'?)",
        ),
        (
            ("  - email: ada@example.org\n", "  - email: ada@example.org\n    keyword: [x]\n"),
            "subs.yaml:15:5: subscribers[0].keyword: unknown key 'keyword' (did you mean 'keywords'?)",
        ),
    ],
)
def test_each_mistake_is_one_located_message(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in GOOD
    assert problems(GOOD.replace(old, new)) == [expected]


def test_invalid_regex_keyword_is_reported_with_its_path() -> None:
    found = problems(GOOD.replace("any: [fine-tuning, LoRA]", "any: [fine-tuning, '/(unclosed/']"))
    assert len(found) == 1 and found[0].startswith("subs.yaml:11:24: topics.fine-tuning.any[1]: ")


def test_duplicate_subscriber_is_reported() -> None:
    text = GOOD + "  - email: Ada@Example.org\n    topics: [fine-tuning]\n"
    assert problems(text) == ["subs.yaml:16:5: subscribers[1].email: duplicate subscriber 'Ada@Example.org' (first at line 14)"]


def test_all_problems_are_reported_at_once() -> None:
    text = GOOD.replace("Europe/Paris", "Mars/Olympus").replace("topics: [fine-tuning]", "topics: [nope]").replace("ada@example.org", "bad")
    assert len(problems(text)) == 3


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        config.load(tmp_path / "missing.yaml")


def test_relative_source_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "subs.yaml"
    path.parent.mkdir()
    path.write_text("sources:\n  - name: local\n    type: feed\n    url: feeds/a.xml\n", encoding="utf-8")
    assert config.load(path).sources[0].url == str(tmp_path / "conf" / "feeds" / "a.xml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2.5", 2.5), ("10", 10.0), ("0", "0"), ("soon", "'soon'"), ("true", "True")],
)
def test_source_timeout(value: str, expected: float | str) -> None:
    text = GOOD.replace("    categories: [cs.CL]\n", f"    categories: [cs.CL]\n    timeout: {value}\n")
    if isinstance(expected, float):
        assert config.parse(text, "subs.yaml").sources[0].timeout == expected
    else:
        assert problems(text) == [f"subs.yaml:8:5: sources[0].timeout: expected seconds, more than 0 and at most 3600, got {expected}"]


def test_duplicates_and_other_problems_are_reported_together() -> None:
    text = GOOD.replace("    none: [diffusion]", "    none: [diffusion]\n    none: [GAN]").replace("Europe/Paris", "Mars/Olympus")
    assert [p.split(": ", 2)[1] for p in problems(text)] == ["settings.timezone", "topics.fine-tuning.none"]


WEIRD_KEYWORDS = [
    "",
    " ",
    "*",
    "**",
    "a*b",
    "x*",
    '"a*"',
    '"',
    "/",
    "//",
    "/(/",
    "/a/",
    "titel:x",
    "title:",
    "author:",
    "author:*",
    "category:cs.*",
    "---",
    "C++",
    "c#",
    "a " * 9,
    "fine-tuning",
    "naïve",
    "title:/x(/",
    "2024",
    "(lora)",
    "-",
    "é*",
]


@pytest.mark.parametrize("keyword", WEIRD_KEYWORDS)
def test_a_config_that_loads_always_compiles_to_a_matcher(keyword: str) -> None:
    """Config validation and the matcher read keywords with the same rules, so a loaded config never fails later."""
    text = GOOD.replace("any: [fine-tuning, LoRA]", f"any: [{keyword!r}]").replace("    topics: [fine-tuning]", f"    keywords: [{keyword!r}]")
    try:
        loaded = config.parse(text, "subs.yaml")
    except ConfigError as exc:
        assert {p.path for p in exc.problems} == {"topics.fine-tuning.any[0]", "subscribers[0].keywords[0]"}, exc.problems
        assert keyword_error(keyword.strip()) is not None or not keyword.strip()
        return
    assert keyword_error(keyword.strip()) is None
    Matcher(all_topics(loaded))


def test_watcher_swaps_in_valid_edits_and_keeps_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(GOOD, encoding="utf-8")
    watcher = config.ConfigWatcher(path, config.load(path))
    assert watcher.poll() is None, "unchanged file: nothing to do"

    path.write_text(GOOD.replace("LoRA", "QLoRA"), encoding="utf-8")
    assert watcher.poll() == []
    assert watcher.config.topics["fine-tuning"].any == ("fine-tuning", "QLoRA")

    path.write_text(GOOD.replace("topics: [fine-tuning]", "topics: [fine-tunin]"), encoding="utf-8")
    found = watcher.poll()
    assert found is not None and [str(p) for p in found] == [
        f"{path}:15:14: subscribers[0].topics[0]: unknown topic 'fine-tunin' (did you mean 'fine-tuning'?)"
    ]
    assert watcher.config.topics["fine-tuning"].any == ("fine-tuning", "QLoRA"), "last good config keeps working"
    assert watcher.poll() is None, "the same bad edit is reported once"

    path.unlink()
    missing = watcher.poll()
    assert missing is not None and "cannot read file" in missing[0].message
    path.write_text(GOOD, encoding="utf-8")
    assert watcher.poll() == [] and watcher.config.topics["fine-tuning"].any == ("fine-tuning", "LoRA")


# --------------------------------------------------------------------------- hostile files

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.timeout(20)  # a hang guard: the unbounded walk took hours
def test_a_yaml_alias_bomb_is_refused_at_its_line_instead_of_hanging_every_command() -> None:
    assert len(BILLION_LAUGHS.encode()) < 700, "a few hundred bytes that expand to 9**9 values"
    found = problems(BILLION_LAUGHS)
    assert len(found) == 1 and found[0].startswith("subs.yaml:7:") and "aliases expand this value to more than 2,000,000 values" in found[0]


def test_aliases_of_reasonable_size_still_work() -> None:
    shared = GOOD.replace("    any: [fine-tuning, LoRA]", "    any: &words [fine-tuning, LoRA]").replace(
        "    none: [diffusion]", "    none: [diffusion]\n  again:\n    any: *words"
    )
    assert config.parse(shared, "subs.yaml").topics["again"].any == ("fine-tuning", "LoRA")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("LoRA]", "Lo\x00RA]"), "subs.yaml:11:26: invalid YAML: character U+0000 is not allowed"),
        ("topics: " + "[" * 5000 + "]" * 5000 + "\n", "subs.yaml:1:264: invalid YAML: nested too deeply to read"),  # at the 256th [
        ("a:\n  b: [" + "{c: [" * 200 + "]}" * 200 + "]\n", "subs.yaml:2:642: invalid YAML: nested too deeply to read"),  # at the { that opens the 256th level
    ],
)
def test_a_nul_byte_or_absurd_nesting_is_one_located_problem_not_a_traceback(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize("name", ["Eve\r\nBcc: all@example.org", "Eve\nX-Evil: 1", "Eve\x1b[31m", "Eve\u2028Bcc: x"])
def test_a_subscriber_name_that_could_add_a_mail_header_is_refused_by_check(name: str) -> None:
    text = GOOD + "    name: " + '"' + name.encode("unicode_escape").decode().replace('"', '\\"') + '"\n'
    found = problems(text)
    assert len(found) == 1 and found[0].startswith("subs.yaml:16:5: subscribers[0].name: control character U+")
    assert "not allowed (this text goes into mail headers)" in found[0]


def test_a_readers_exclude_list_and_author_keywords_are_read_and_each_bad_one_is_named_by_line_and_field() -> None:
    text = GOOD.replace(
        "    topics: [fine-tuning]\n", "    topics: [fine-tuning]\n    keywords: ['author:Ada Lovelace', RAG]\n    exclude: [survey, category:cs.CV]\n"
    )
    loaded = config.parse(text, "subs.yaml")
    (ada,) = loaded.subscribers
    assert ada.keywords == ("author:Ada Lovelace", "RAG") and ada.exclude == ("survey", "category:cs.CV")
    assert [t.title for t in loaded.personal_topics(ada)] == ["Followed authors", "Your keywords"]
    assert problems(text.replace("exclude: [survey,", "exclude: [autor:Ada,")) == [
        "subs.yaml:17:15: subscribers[0].exclude[0]: unknown field 'autor:' (did you mean 'author:'?; quote the keyword to match a colon literally)"
    ]
    assert problems(text.replace("'author:Ada Lovelace'", "'author:'")) == ["subs.yaml:16:16: subscribers[0].keywords[0]: nothing after 'author:'"]
    assert problems(text.replace("exclude: [survey, category:cs.CV]", "exclude: survey")) == [
        "subs.yaml:17:5: subscribers[0].exclude: expected a list, got the text 'survey': write exclude: [survey]"
    ]


TRICKY_SCALARS = (
    "yes",
    "no",
    "on",
    "07:30",
    "0o17",
    "012",
    "0x1F",
    "1_000",
    "1e3",
    ".inf",
    ".nan",
    "~",
    "2024-01-01",
    "true",
    "'x'",
    '"a\\tb"',
    "!!str 12",
    "<<",
    "=",
)


@pytest.mark.parametrize("value", TRICKY_SCALARS)
@pytest.mark.parametrize("key", ["name", "send_at", "paused", "max_papers", "frequency"])
def test_the_fast_reading_accepts_exactly_what_the_positioned_one_does_and_reads_it_the_same(key: str, value: str) -> None:
    from newsletter.config.load import _parse_positioned

    text = GOOD + f"    {key}: {value}\n"
    try:
        expected: object = _parse_positioned(text, "subs.yaml")
    except ConfigError as exc:
        expected = [str(p) for p in exc.problems]
    try:
        found: object = config.parse(text, "subs.yaml")
    except ConfigError as exc:
        found = [str(p) for p in exc.problems]
    assert found == expected


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "    name: Ada\n    name: Lovelace\n",  # a duplicate key: yaml-rs refuses, ruamel locates
        GOOD.replace("topics: [fine-tuning]", "topics: [fine-tuning, 'speech, ASR']"),  # a warning: located too
        GOOD + "    keywords: [!!str 12]\n",  # a tag: only ruamel's reading counts
        GOOD.replace("topics:\n  fine", "topics:\n  \tfine"),  # a tab
    ],
)
def test_what_the_fast_reading_finds_or_is_unsure_of_is_reported_as_the_positioned_reading_reports_it(text: str) -> None:
    from newsletter.config.load import _parse_positioned

    try:
        positioned = _parse_positioned(text, "subs.yaml")
    except ConfigError as exc:
        assert problems(text) == [str(p) for p in exc.problems]
        assert all(p.line > 1 for p in exc.problems), "located, not 1:1"
        return
    assert config.parse(text, "subs.yaml") == positioned and positioned.warnings and positioned.warnings[0].line == 16


def test_a_long_list_reads_the_same_fast_as_with_positions() -> None:
    from newsletter.config.load import _parse_positioned

    readers = "".join(
        f'  - email: r{i}@example.org\n    name: Reader {i}\n    topics: [fine-tuning]\n    keywords: ["/\\\\bLoRA{i}\\\\b/"]\n' for i in range(300)
    )
    text = GOOD.split("subscribers:\n")[0] + "subscribers:\n" + readers
    assert config.parse(text, "subs.yaml") == _parse_positioned(text, "subs.yaml")


def test_small_slips_anywhere_are_taken_or_refused_by_the_fast_reading_exactly_as_by_the_positioned_one() -> None:
    from newsletter.config.load import _parse_positioned

    def outcome(read: Callable[[str, str], object], text: str) -> object:
        try:
            return read(text, "subs.yaml")
        except ConfigError as exc:
            return [str(p) for p in exc.problems]
        except Exception as exc:  # a slip ruamel itself trips over (an unhashable key) says nothing about the fast reading
            return type(exc)

    rng = random.Random(18)
    marks = [" ", "\n", ":", "-", "[", "]", "{", "}", ",", "#", "'", '"', "a", "&", "*", "?", "|", ">", "\\", "@", "1", "%", "`", "!", "=", "<", "\t"]
    for _ in range(300):
        text = GOOD
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice([*marks, ""]) + text[i + rng.randint(0, 1) :]
        positioned = outcome(_parse_positioned, text)
        if isinstance(positioned, type):
            continue
        assert outcome(config.parse, text) == positioned, text
