"""The cache of validated configs: shared by processes through a folder, and never serving an edit or another file a stale config."""

from __future__ import annotations

import subprocess
import sys
import time as time_module
from datetime import time
from pathlib import Path

import pytest

from newsletter.config import cache, load
from newsletter.config.edit import SubscriberFile
from newsletter.config.load import parse
from newsletter.model.signup import Choice, Preferences

SAMPLE = Path(__file__).parent.parent / "subscribers.yaml"


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(SAMPLE.read_text(encoding="utf-8").replace("url: samples/", f"url: {SAMPLE.parent}/samples/"), encoding="utf-8")
    return path


def test_a_config_validated_by_one_process_is_read_by_another_without_parsing(yaml_file: Path, config_cache: Path) -> None:
    script = "import sys; from pathlib import Path; from newsletter.config import cache, load; load(Path(sys.argv[1])); cache.flush()"
    subprocess.run([sys.executable, "-c", script, str(yaml_file)], check=True)
    entries = list((config_cache / "newsletter").glob("config-*.pickle"))
    assert len(entries) == 1
    cache._memory.clear()
    fingerprint = cache.digest(yaml_file.read_bytes())
    found = cache.recall(yaml_file, fingerprint)
    assert found is not None and [s.email for s in found.subscribers] == ["ada@example.org", "grace@example.org", "rosalind@example.org"]
    assert cache.recall(yaml_file, cache.digest(b"other bytes")) is None, "another content is parsed, not served from the cache"
    assert cache.recall(yaml_file.parent / "other.yaml", fingerprint) is None, "the same bytes in another file count only for their own file"


def test_a_process_that_exits_without_flushing_still_leaves_its_entry_and_does_not_wait_for_edits_to_settle(yaml_file: Path, config_cache: Path) -> None:
    script = "import sys, time; from pathlib import Path; from newsletter.config import load; load(Path(sys.argv[1])); print(time.monotonic())"
    done = subprocess.run([sys.executable, "-c", script, str(yaml_file)], check=True, capture_output=True, text=True)
    exited = time_module.monotonic()
    assert len(list((config_cache / "newsletter").glob("config-*.pickle"))) == 1, "written on the way out"
    assert exited - float(done.stdout) < cache.SETTLE, "the exit wrote at once instead of waiting out SETTLE"


def test_a_burst_of_edits_is_written_once_when_they_settle_with_the_last_one(yaml_file: Path, config_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "SETTLE", 30.0)  # longer than the test: nothing is written until flush
    config = parse(yaml_file.read_text(encoding="utf-8"), str(yaml_file))
    cache.remember(yaml_file, b"first edit", config)
    cache.remember(yaml_file, b"second edit", config)
    time_module.sleep(0.3)  # long enough for a write (a few ms for this file)
    assert not list((config_cache / "newsletter").glob("config-*.pickle")), "no write while edits come"
    cache.flush()
    cache._memory.clear()
    assert cache.recall(yaml_file, b"second edit") is not None, "flush wrote the last edit's config"


def test_an_edit_is_read_fresh_and_an_entry_others_could_write_is_not_trusted(yaml_file: Path, config_cache: Path) -> None:
    assert len(load(yaml_file).subscribers) == 3
    cache.flush()
    yaml_file.write_text(yaml_file.read_text(encoding="utf-8") + "  - email: new@example.com\n    topics: [exoplanets]\n", encoding="utf-8")
    assert len(load(yaml_file).subscribers) == 4
    cache.flush()
    cache._memory.clear()
    (entry,) = (config_cache / "newsletter").glob("config-*.pickle")
    entry.chmod(0o666)
    assert cache.recall(yaml_file, cache.digest(yaml_file.read_bytes())) is None, "a world-writable entry is never unpickled"
    assert len(load(yaml_file).subscribers) == 4


def test_a_cache_folder_that_cannot_be_written_only_costs_the_parse(yaml_file: Path, config_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = config_cache / "file-not-folder"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert len(load(yaml_file).subscribers) == 3
    cache.flush()


def test_an_app_edit_leaves_the_config_it_derived_which_is_the_one_a_parse_gives(yaml_file: Path) -> None:
    file = SubscriberFile(yaml_file)
    rosalind = "    topics: [protein-folding, exoplanets]\n"
    text = yaml_file.read_text(encoding="utf-8").replace("  - email: grace", "  # the lab\n  - email: grace")
    yaml_file.write_text(text.replace(rosalind, rosalind + "    keywords: ['speech, ASR']\n"), encoding="utf-8")
    before = file.load()
    assert [w.path for w in before.warnings] == ["subscribers[2].keywords[0]"]
    assert file.add("new@example.com", Choice(("exoplanets",), "weekly"))
    assert file.remove("ada@example.org")
    derived = cache.recall(yaml_file, cache.digest(yaml_file.read_bytes()))
    assert derived is not None and derived.subscribers[-1].email == "new@example.com"
    assert derived == parse(yaml_file.read_text(encoding="utf-8"), str(yaml_file)), "subscribers and warnings (lines, paths) alike"
    assert [w.path for w in derived.warnings] == ["subscribers[1].keywords[0]"] and derived.warnings[0].line < before.warnings[0].line


def test_an_app_edit_carries_the_address_index_over_and_it_finds_what_a_fresh_one_finds(yaml_file: Path) -> None:
    """A confirmation at 100,000 readers does not rebuild the index of every address: the derived config's is the one
    before, less those removed, plus those added."""
    file = SubscriberFile(yaml_file)
    assert file.load().subscriber("ADA@example.org") is not None  # the index of the config before is built
    assert file.add("new@example.com", Choice(("exoplanets",), "weekly"))
    assert file.remove("grace@example.org")
    derived = cache.recall(yaml_file, cache.digest(yaml_file.read_bytes()))
    assert derived is not None and "_by_address" in derived.__dict__, "carried over, not left to be rebuilt"
    fresh = parse(yaml_file.read_text(encoding="utf-8"), str(yaml_file))
    for address in ("new@example.com", "New@Example.com", "grace@example.org", "ada@example.org", "rosalind@example.org", "nobody@example.org"):
        assert derived.subscriber(address) == fresh.subscriber(address), address
    assert derived.subscriber("grace@example.org") is None and derived.subscriber("new@example.com") is not None


def test_preferences_saved_through_the_readers_own_lines_are_what_the_whole_round_trip_writes(tmp_path: Path, yaml_file: Path) -> None:
    text = yaml_file.read_text(encoding="utf-8").replace("    name: Grace\n", "    name: Grace   # since 2024\n    # weekdays suit her\n")
    other = tmp_path / "other" / "subscribers.yaml"
    other.parent.mkdir()
    for path in (yaml_file, other):
        path.write_text(text, encoding="utf-8")
    settings = load(yaml_file).settings  # validated: its edit takes the reader's lines only; the other file's, the whole file
    prefs = Preferences(("hf-top", "exoplanets"), ("LoRA",), "weekly", "friday", time(7, 30), "Europe/London", False)
    assert SubscriberFile(yaml_file).update("grace@example.org", prefs, settings)
    assert SubscriberFile(other)._known(SubscriberFile(other).snapshot()) is None
    assert SubscriberFile(other).update("grace@example.org", prefs, settings)
    assert yaml_file.read_text(encoding="utf-8") == other.read_text(encoding="utf-8")
    assert "    # weekdays suit her\n" in yaml_file.read_text(encoding="utf-8")
    derived = cache.recall(yaml_file, cache.digest(yaml_file.read_bytes()))
    assert derived == parse(yaml_file.read_text(encoding="utf-8"), str(yaml_file))
    grace = derived.subscriber("grace@example.org") if derived else None
    assert grace is not None and (grace.keywords, grace.day, grace.send_at) == (("LoRA",), "friday", time(7, 30))
