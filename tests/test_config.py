"""subscribers.yaml: the sample loads, and every kind of mistake is reported with file:line:col and path."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from newsletter import config
from newsletter.config import ConfigError

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
    assert loaded.sources[0].announce_types == ("new", "cross")


def test_bad_yaml_names_line_and_column() -> None:
    assert problems("topics:\n  a: [x\nsubscribers: []\n") == [
        "subs.yaml:3:12: invalid YAML: expected ',' or ']', but got ':'"
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("topics: [fine-tuning]", "topics: [fine-tunin]"), "subs.yaml:15:14: subscribers[0].topics[0]: unknown topic 'fine-tunin' (did you mean 'fine-tuning'?)"),
        (("  - email: ada@example.org\n", "  - name: Ada\n"), "subs.yaml:14:5: subscribers[0]: missing 'email'"),
        (("ada@example.org", "ada-at-example"), "subs.yaml:14:5: subscribers[0].email: invalid email address 'ada-at-example'"),
        (("    none: [diffusion]", "    nnoe: [diffusion]"), "subs.yaml:12:5: topics.fine-tuning.nnoe: unknown key 'nnoe' (did you mean 'none'?)"),
        (("any: [fine-tuning, LoRA]", "any: [fine-tuning, '']"), "subs.yaml:11:24: topics.fine-tuning.any[1]: empty string"),
        (("Europe/Paris", "Europe/Pariss"), "subs.yaml:2:3: settings.timezone: unknown timezone 'Europe/Pariss' (use an IANA name such as Europe/London)"),
        (('"06:45"', "7"), "subs.yaml:3:3: settings.send_at: bad send_at 7 (write it quoted, e.g. \"07:30\")"),
        (('"06:45"', '"25:00"'), "subs.yaml:3:3: settings.send_at: bad send_at '25:00' (expected HH:MM, 24-hour)"),
        (("type: arxiv_rss", "type: arxiv-rss"), "subs.yaml:6:5: sources[0].type: unknown type 'arxiv-rss' (did you mean 'arxiv_rss'?)"),
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
    assert problems(text) == ["subs.yaml:16:5: subscribers[1].email: duplicate subscriber 'Ada@Example.org'"]


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
