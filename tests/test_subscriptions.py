"""subscribers.yaml edits that keep a person's file as they wrote it, pending opt-ins, rate limits and input checks."""

from __future__ import annotations

import dataclasses
import os
import threading
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from support.smtpserver import SMTPServer

from newsletter.config import edit
from newsletter.config.edit import SubscriberFile
from newsletter.config.load import load, load_snapshot
from newsletter.errors import ConcurrentEdit, ConfigError, InvalidInput
from newsletter.model.signup import Choice, Preferences
from newsletter.storage.store import Store
from newsletter.subscriptions.forms import check_preferences, normalise_email
from newsletter.subscriptions.optin import add_pending, confirm_token, find_pending

SAMPLE = Path(__file__).parent.parent / "subscribers.yaml"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(SAMPLE.read_text(encoding="utf-8").replace("url: samples/", f"url: {SAMPLE.parent}/samples/"), encoding="utf-8")
    return path


def test_adding_and_removing_leaves_every_other_line_as_written(yaml_file: Path) -> None:
    original = yaml_file.read_text(encoding="utf-8")
    assert SubscriberFile(yaml_file).add("new@example.com", Choice(("exoplanets",), "weekly"))
    assert yaml_file.read_text(encoding="utf-8") == original + "  - email: new@example.com\n    topics: [exoplanets]\n    frequency: weekly\n"
    assert not SubscriberFile(yaml_file).add("NEW@example.com", Choice(("hf-top",))), "an address is added once, whatever its case"
    assert SubscriberFile(yaml_file).remove("new@example.com")
    assert yaml_file.read_text(encoding="utf-8") == original
    assert not SubscriberFile(yaml_file).remove("new@example.com"), "removing twice is a no-op"


def test_the_list_an_append_wrote_is_known_without_a_scan_and_is_what_a_scan_finds(yaml_file: Path) -> None:
    """The next web edit starts from the list the last one wrote (at 100,000 readers the scan was most of a
    confirmation); it must be the very list a scan of the file finds, with a list after it and before it."""

    def shape(block: Any) -> tuple[object, ...]:
        return (block.lines, block.start, block.end, block.indent, [(i, m["email"], m["indent"]) for i, m in block.entries])

    text = yaml_file.read_text(encoding="utf-8")
    yaml_file.write_text(text + "\n# a comment after the list\n", encoding="utf-8")
    file = SubscriberFile(yaml_file)
    for n, choice in enumerate([Choice(("exoplanets",), "weekly"), Choice(("hf-top", "exoplanets")), Choice(("hf-top",), timezone="Asia/Tokyo")]):
        assert file.add(f"new{n}@example.com", choice)
        written = yaml_file.read_text(encoding="utf-8")
        known = edit._known_block
        assert known is not None and known[0] == written, "the text just written is the one known"
        assert shape(known[1]) == shape(edit._scan(written)), n
    assert file.remove("new1@example.com") and file.add("new3@example.com", Choice(("hf-top",)))
    written = yaml_file.read_text(encoding="utf-8")
    assert edit._known_block is not None and shape(edit._known_block[1]) == shape(edit._scan(written))
    assert [s.email for s in load(yaml_file).subscribers][-3:] == ["new0@example.com", "new2@example.com", "new3@example.com"]


def test_removing_someone_in_the_middle_keeps_comments_quotes_and_order(yaml_file: Path) -> None:
    original = yaml_file.read_text(encoding="utf-8")
    assert SubscriberFile(yaml_file).remove("grace@example.org")
    after = yaml_file.read_text(encoding="utf-8")
    grace = "  - email: grace@example.org\n    name: Grace\n    topics: [llm-agents, hf-top]\n    frequency: weekdays\n"
    assert after == original.replace(grace, "")


def test_unsubscribing_takes_the_comment_about_that_reader_and_leaves_a_groups_heading(yaml_file: Path) -> None:
    rosalind = "  - email: rosalind@example.org\n"
    commented = (
        yaml_file.read_text(encoding="utf-8")
        .replace("  - email: ada@example.org\n", "  # the founders\n  - email: ada@example.org\n")
        .replace(rosalind, "\n  # Rosalind, met at the workshop\n  # (ask her about folding)\n" + rosalind)
    )
    yaml_file.write_text(commented, encoding="utf-8")
    assert SubscriberFile(yaml_file).remove("rosalind@example.org")
    assert SubscriberFile(yaml_file).remove("ada@example.org")
    after = yaml_file.read_text(encoding="utf-8")
    assert "met at the workshop" not in after and "ask her about folding" not in after, "the comment about her went with her"
    assert "  # the founders\n  - email: grace@example.org\n" in after, "the heading of a group stays while someone in it does"
    assert not after.endswith("\n\n")
    assert load(yaml_file).subscriber("grace@example.org") is not None


def test_an_edit_that_would_make_the_file_invalid_is_refused_and_nothing_is_written(yaml_file: Path) -> None:
    original = yaml_file.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown topic 'no-such-topic'"):
        SubscriberFile(yaml_file).add("x@example.com", Choice(("no-such-topic",)))
    assert yaml_file.read_text(encoding="utf-8") == original
    assert not list(yaml_file.parent.glob(".subscribers.yaml.*.tmp")), "no temp file is left behind"


def test_a_write_by_someone_not_taking_the_lock_is_never_overwritten(yaml_file: Path) -> None:
    edited_by_hand = yaml_file.read_text(encoding="utf-8").replace("max_papers_per_topic: 8", "max_papers_per_topic: 9")
    with pytest.raises(ConcurrentEdit, match="changed while it was being edited"), SubscriberFile(yaml_file).edit() as subscribers:
        subscribers.pop()
        yaml_file.write_text(edited_by_hand, encoding="utf-8")
    assert yaml_file.read_text(encoding="utf-8") == edited_by_hand


def test_a_save_landing_while_an_edit_is_written_to_disk_is_seen_before_anything_is_renamed(yaml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = yaml_file.read_text(encoding="utf-8").replace("max_papers_per_topic: 8", "max_papers_per_topic: 9")
    real_fsync, real_exchange = os.fsync, edit._exchange
    exchanges: list[object] = []

    def fsync_while_someone_saves(fd: int) -> None:  # the slow part of a write: a hand save (temp file + rename) lands
        real_fsync(fd)
        if not exchanges and "max_papers_per_topic: 9" not in yaml_file.read_text(encoding="utf-8"):
            tmp = yaml_file.with_name("saved.tmp")
            tmp.write_text(saved, encoding="utf-8")
            os.replace(tmp, yaml_file)

    def counted_exchange(a: Any, b: Any) -> bool:
        exchanges.append(a)
        return real_exchange(a, b)

    monkeypatch.setattr(os, "fsync", fsync_while_someone_saves)
    monkeypatch.setattr(edit, "_exchange", counted_exchange)
    assert SubscriberFile(yaml_file).remove("grace@example.org")

    after = load(yaml_file)
    assert after.settings.max_papers_per_topic == 9 and after.subscriber("grace@example.org") is None, "redone on the saved file"
    assert len(exchanges) == 1, "only the redone edit was swapped in: the spoilt one was caught before its rename, never shown to a reader"
    assert not [p for p in yaml_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_web_subscribes_and_hand_edits_all_survive(yaml_file: Path) -> None:
    rounds = 15
    lock = FileLock(str(yaml_file) + ".lock")

    def subscribe_many() -> None:
        for i in range(rounds):
            SubscriberFile(yaml_file).add(f"reader{i}@example.com", Choice(("hf-top",)))

    def hand_edit_many() -> None:  # e.g. a script or `flock subscribers.yaml.lock $EDITOR subscribers.yaml`
        for i in range(rounds):
            with lock:
                text = yaml_file.read_text(encoding="utf-8")
                text = text.replace(f"max_papers_per_topic: {8 + i}\n", f"max_papers_per_topic: {9 + i}\n")
                text = text.replace("topics:\n", f"topics:\n  # hand note {i}\n", 1)
                yaml_file.write_text(text, encoding="utf-8")

    threads = [threading.Thread(target=subscribe_many), threading.Thread(target=hand_edit_many)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    config = load(yaml_file)
    assert all(config.subscriber(f"reader{i}@example.com") for i in range(rounds))
    assert config.settings.max_papers_per_topic == 8 + rounds
    text = yaml_file.read_text(encoding="utf-8")
    assert all(f"# hand note {i}\n" in text for i in range(rounds))
    assert "# Sources, topics and subscribers for newsletter." in text


@pytest.mark.parametrize("path", ["round trip", "text edit"])
def test_an_app_edit_that_meets_an_unlocked_save_is_redone_on_the_saved_file(yaml_file: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    saved = yaml_file.read_text(encoding="utf-8").replace("max_papers_per_topic: 8", "max_papers_per_topic: 9")
    target = "_open" if path == "round trip" else "_remove_text"
    real = getattr(edit, target)
    calls: list[int] = []

    def edit_while_someone_saves(*args: Any) -> Any:  # a hand save (temp file + rename, no lock) lands while the app edits
        calls.append(1)
        if len(calls) == 1:
            tmp = yaml_file.with_name("saved.tmp")
            tmp.write_text(saved, encoding="utf-8")
            os.replace(tmp, yaml_file)
        return real(*args)

    monkeypatch.setattr(edit, target, edit_while_someone_saves)
    file = SubscriberFile(yaml_file)
    if path == "round trip":
        config = load(yaml_file)
        grace = config.subscriber("grace@example.org")
        assert grace is not None
        assert file.update("grace@example.org", dataclasses.replace(Preferences.of(grace), frequency="weekly"), config.settings)
    else:
        assert file.remove("grace@example.org")
    assert len(calls) == 2, "the edit was made again on the saved file, not refused"
    after = load(yaml_file)
    assert after.settings.max_papers_per_topic == 9, "the hand save is kept"
    grace_after = after.subscriber("grace@example.org")
    assert (grace_after is None) if path == "text edit" else (grace_after is not None and grace_after.frequency == "weekly")


def test_a_reader_never_parses_a_save_made_under_the_lock_half_way(yaml_file: Path) -> None:
    whole = yaml_file.read_text(encoding="utf-8")
    started = threading.Event()

    def save_in_place() -> None:  # `flock subscribers.yaml.lock $EDITOR`, the editor writing the file in place, slowly
        with FileLock(str(yaml_file) + ".lock"):
            yaml_file.write_text(whole[: len(whole) // 2], encoding="utf-8")
            started.set()
            threading.Event().wait(0.1)
            yaml_file.write_text(whole + "# saved\n", encoding="utf-8")

    writer = threading.Thread(target=save_in_place)
    writer.start()
    started.wait()
    config = SubscriberFile(yaml_file).load()
    writer.join()
    assert config.subscriber("rosalind@example.org") is not None and len(config.subscribers) == 3


def test_a_reader_that_catches_an_unlocked_in_place_save_just_truncated_waits_for_its_content(yaml_file: Path) -> None:
    whole = yaml_file.read_text(encoding="utf-8")
    yaml_file.write_text("", encoding="utf-8")  # an editor saving in place without the lock: truncated, not yet written

    def write_soon() -> None:
        threading.Event().wait(0.05)
        yaml_file.write_text(whole, encoding="utf-8")

    writer = threading.Thread(target=write_soon)
    writer.start()
    config, text = load_snapshot(yaml_file, "")
    writer.join()
    assert text == whole and len(config.subscribers) == 3, "an empty read is read again, not reported as an empty file"


def test_preferences_change_only_what_changed(yaml_file: Path) -> None:
    config = load(yaml_file)
    ada = config.subscriber("ada@example.org")
    assert ada is not None
    prefs = Preferences.of(ada)
    assert SubscriberFile(yaml_file).update("ada@example.org", prefs, config.settings)
    assert yaml_file.read_text(encoding="utf-8") == SAMPLE.read_text(encoding="utf-8").replace("url: samples/", f"url: {SAMPLE.parent}/samples/"), (
        "saving unchanged preferences changes nothing"
    )

    paused = Preferences(("hf-top",), (), "weekly", "friday", time(7, 30), "Europe/London", True)
    SubscriberFile(yaml_file).update("ada@example.org", paused, config.settings)
    text = yaml_file.read_text(encoding="utf-8")
    assert '    send_at: "07:30"\n' in text, "an untouched value keeps its quotes"
    assert "keywords" not in text.split("ada@example.org")[1].split("- email")[0], "an emptied list goes"
    ada = load(yaml_file).subscriber("ada@example.org")
    assert ada is not None and (ada.topics, ada.frequency, ada.day, ada.paused) == (("hf-top",), "weekly", "friday", True)

    later = dataclasses.replace(paused, send_at=time(17, 15))
    SubscriberFile(yaml_file).update("ada@example.org", later, config.settings)
    assert '    send_at: "17:15"\n' in yaml_file.read_text(encoding="utf-8"), "a changed time is quoted: YAML 1.1 reads a bare 17:15 as the number 1035"


def test_a_confirmation_is_valid_for_48_hours_once_and_only_the_latest(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as store:
        first = add_pending(store, "a@example.org", Choice(("x",)), NOW)
        second = add_pending(store, "a@example.org", Choice(("y",), "weekly"), NOW)
        assert find_pending(store, "k", confirm_token("k", first), NOW) is None, "a newer request voids the older link"
        found = find_pending(store, "k", confirm_token("k", second), NOW + timedelta(hours=47))
        assert found is not None and found.choice == Choice(("y",), "weekly")
        assert find_pending(store, "k", confirm_token("k", second), NOW + timedelta(hours=49)) is None
        assert find_pending(store, "other-key", confirm_token("k", second), NOW) is None
        assert store.take_pending(found) and not store.take_pending(found)


def test_rate_limit_counts_within_a_sliding_window(database: Path | str) -> None:
    with Store(database) as store:
        hour = timedelta(hours=1)
        assert [store.allow("k", "1.2.3.4", 2, hour, NOW + timedelta(minutes=m)) for m in range(3)] == [True, True, False]
        assert store.allow("k", "5.6.7.8", 2, hour, NOW), "keys are counted apart"
        assert store.allow("k", "1.2.3.4", 2, hour, NOW + timedelta(minutes=61)), "the oldest attempt has left the window"


def test_addresses_are_checked_without_dns(tmp_path: Path) -> None:
    assert normalise_email(" Ada@Example.ORG ") == "Ada@example.org"
    for bad in ("ada", "ada@localhost", "a b@example.org", "ada@example.org\r\nBcc: x@example.org"):
        with pytest.raises(InvalidInput):
            normalise_email(bad)


def test_preferences_form_refuses_regexes_unknown_zones_and_bad_times(yaml_file: Path) -> None:
    config = load(yaml_file)
    good = {"topics": ["hf-top"], "keywords": "LoRA, tool use", "frequency": "weekly", "day": "friday", "send_at": "7:05", "timezone": "Asia/Tokyo"}
    prefs = check_preferences(config, good)
    assert prefs == Preferences(("hf-top",), ("LoRA", "tool use"), "weekly", "friday", time(7, 5), "Asia/Tokyo", False)
    for bad in (
        {"keywords": "/(a+)+$/"},
        {"timezone": "Mars/Olympus"},
        {"send_at": "7pm"},
        {"frequency": "hourly"},
        {"keywords": "x" * 61},
        {"topics": [], "keywords": ""},
    ):
        with pytest.raises(InvalidInput):
            check_preferences(config, {**good, **bad})


def cli_env(smtp: SMTPServer, yaml_file: Path, tmp_path: Path) -> dict[str, str]:
    """What the CLI needs to mail through the local server with this config and a state file of its own."""
    return {
        **smtp.env(),
        "NEWSLETTER_FROM": "Paper Digest <digest@example.org>",
        "NEWSLETTER_SECRET_KEY": "k",
        "NEWSLETTER_DB": str(tmp_path / "state.db"),
        "NEWSLETTER_CONFIG": str(yaml_file),
    }


def test_cli_subscribe_unsubscribe_and_list(yaml_file: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from newsletter.cli import cli

    with SMTPServer() as smtp:
        env = cli_env(smtp, yaml_file, tmp_path)
        run = CliRunner().invoke
        sent = run(cli, ["subscribe", "new@example.com", "--topics", "hf-top,exoplanets"], env=env)
        assert sent.exit_code == 0, sent.output
        (mail,) = smtp.messages
        assert "/confirm/" in mail.get_content() and load(yaml_file).subscriber("new@example.com") is None

        assert run(cli, ["subscribe", "x@example.com", "--topics", "nope"], env=env).exit_code == 1
        keyless = run(cli, ["subscribe", "y@example.com"], env={**env, "NEWSLETTER_SECRET_KEY": ""})
        assert keyless.exit_code == 1 and "NEWSLETTER_SECRET_KEY is required" in keyless.output
        added = run(cli, ["subscribe", "direct@example.com", "--topics", "exoplanets", "--confirmed"], env=env)
        assert added.exit_code == 0 and "added to" in added.output
        listing = run(cli, ["subscribers"], env=env)
        assert "direct@example.com: exoplanets; daily at 07:00 UTC" in listing.output and "4 subscribers" in listing.output

        assert run(cli, ["unsubscribe", "direct@example.com"], env=env).exit_code == 0
        assert load(yaml_file).subscriber("direct@example.com") is None
        again = run(cli, ["unsubscribe", "direct@example.com"], env=env)
        assert again.exit_code == 1 and "is not a subscriber" in again.output


def test_cli_subscribe_says_which_mail_went_out_and_smtp_errors_are_one_line(yaml_file: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from newsletter.cli import cli

    with SMTPServer() as smtp:
        env = cli_env(smtp, yaml_file, tmp_path)
        run = CliRunner().invoke
        already = run(cli, ["subscribe", "ada@example.org"], env=env)
        assert already.exit_code == 0, already.output
        assert already.output.startswith("ada@example.org is already subscribed; a note saying so") and "Confirmation mail" not in already.output
        assert smtp.messages[-1]["Subject"] == "You are already subscribed to the paper digest"

        smtp.sink.reply = lambda rcpt: "550 5.1.1 no such user"
        refused = run(cli, ["subscribe", "nobody@example.com"], env=env)
        assert refused.exit_code == 1, refused.output
        assert refused.output == "error: the confirmation mail to nobody@example.com was not sent: 550 5.1.1 no such user\n"

        smtp.sink.reply = lambda rcpt: None
        for _ in range(3):  # Limits.mails_per_address
            assert run(cli, ["subscribe", "again@example.com"], env=env).output.startswith("Confirmation mail for again@example.com handed to SMTP")
        limited = run(cli, ["subscribe", "again@example.com"], env=env)
        assert limited.exit_code == 1 and limited.output.startswith("error: no mail sent: enough confirmation mails went to again@example.com")

    down = run(cli, ["subscribe", "late@example.com"], env=env)
    assert down.exit_code == 1 and down.output.startswith("error: the confirmation mail to late@example.com was not sent: cannot connect to 127.0.0.1:")
    assert "Traceback" not in down.output and len(down.output.splitlines()) == 1


def test_addresses_with_an_internationalised_domain_are_spelled_as_punycode() -> None:
    assert normalise_email("Leser@Bücher.DE") == normalise_email("Leser@xn--bcher-kva.de") == "Leser@xn--bcher-kva.de"
    with pytest.raises(InvalidInput, match="characters beyond ASCII before the @"):
        normalise_email("jörg@example.de")


def test_smtp_refuses_a_non_ascii_envelope_clearly_instead_of_crashing() -> None:
    from newsletter.errors import DeliveryError
    from newsletter.mail.message import Letter
    from newsletter.mail.transports import Smtp, SmtpSettings

    with SMTPServer() as smtp:
        transport = Smtp(SmtpSettings("127.0.0.1", smtp.port, "none"))
        try:
            with pytest.raises(DeliveryError, match="needs SMTPUTF8") as caught:
                transport.send(Letter("digest@example.org", "jörg@bücher.de", "<id@example.org>", b"Subject: x\r\n\r\nx\r\n"))
            assert caught.value.temporary is False
        finally:
            transport.close()
        assert smtp.messages == []


def test_reading_ahead_leaves_the_list_and_the_address_index_an_edit_starts_from(yaml_file: Path) -> None:
    """What `serve` does at start-up, so the first confirmation does not scan 100,000 readers' entries."""
    edit._known_block = None
    file = SubscriberFile(yaml_file)
    file.warm()
    text = yaml_file.read_text(encoding="utf-8")
    assert edit._known_block is not None and edit._known_block[0] == text
    assert "_by_address" in file.load().__dict__
    assert file.add("new@example.com", Choice(("exoplanets",)))
    assert load(yaml_file).subscriber("new@example.com") is not None
