"""When digests are due: slots in the reader's own timezone, weekdays and weekly, both DST changes, catch-up after downtime."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine

from newsletter import scheduler
from newsletter.config.load import parse
from newsletter.environment import Env
from newsletter.errors import ConfigError
from newsletter.mail.message import Letter
from newsletter.mail.pool import Pool
from newsletter.mail.transports import Outbox
from newsletter.model.config import Subscriber
from newsletter.model.paper import Paper
from newsletter.scheduler import daemon
from newsletter.scheduler.daemon import Clock, Daemon
from newsletter.scheduler.slots import (
    decide,
    edition_for,
    latest_slot,
    next_slot,
    slot_on,
)
from newsletter.storage.store import Store

UTC = UTC
GRACE = timedelta(hours=12)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def reader(send_at: str = "07:30", tz: str = "Europe/London", frequency: str = "daily", day: str = "monday") -> Subscriber:
    hour, minute = map(int, send_at.split(":"))
    return Subscriber(email="ada@example.org", topics=("t",), frequency=frequency, day=day, send_at=time(hour, minute), timezone=tz)


def sends(subscriber: Subscriber, start: datetime, end: datetime, step: timedelta = timedelta(minutes=1)) -> list[datetime]:
    """Drive decide() minute by minute like the daemon's tick, recording each slot it sends (from `start`, with
    nothing delivered before it)."""
    sent: list[datetime] = []
    now = start
    while now <= end:
        decision = decide(subscriber, now, sent[-1] if sent else start, GRACE, missed=not sent)
        if decision is not None:
            assert decision.action == "send"
            sent.append(decision.slot)
        now += step
    return sent


def test_slots_are_local_wall_clock_times_in_each_readers_zone() -> None:
    day = date(2026, 11, 25)
    assert slot_on(reader("07:30", "Europe/London"), day) == utc(2026, 11, 25, 7, 30)
    assert slot_on(reader("07:30", "America/New_York"), day) == utc(2026, 11, 25, 12, 30)
    assert slot_on(reader("07:30", "Asia/Kolkata"), day) == utc(2026, 11, 25, 2, 0)
    assert slot_on(reader("07:30", "Pacific/Auckland"), day) == utc(2026, 11, 24, 18, 30)  # the day before, in UTC


def test_next_slot_is_strictly_after_now_and_rolls_over_midnight_in_the_readers_zone() -> None:
    tokyo = reader("07:00", "Asia/Tokyo")
    assert next_slot(tokyo, utc(2026, 11, 24, 21, 59)) == utc(2026, 11, 24, 22, 0)
    assert next_slot(tokyo, utc(2026, 11, 24, 22, 0)) == utc(2026, 11, 25, 22, 0)


def test_weekdays_skip_the_readers_weekend_not_the_utc_one() -> None:
    # Friday 2026-11-27 23:30 UTC is already Saturday morning in Sydney: the next send is Monday there.
    sydney = reader("08:00", "Australia/Sydney", "weekdays")
    assert next_slot(sydney, utc(2026, 11, 27, 21, 30)) == utc(2026, 11, 29, 21, 0)  # Mon 30 Nov 08:00 AEDT
    assert [s.weekday() for s in sends(reader("07:30", "UTC", "weekdays"), utc(2026, 11, 23), utc(2026, 11, 30), timedelta(minutes=30))] == [0, 1, 2, 3, 4]


def test_weekly_sends_once_a_week_on_the_chosen_local_day() -> None:
    weekly = reader("18:00", "America/Los_Angeles", "weekly", "friday")
    got = sends(weekly, utc(2026, 11, 1), utc(2026, 11, 30), timedelta(minutes=15))
    assert got == [utc(2026, 11, 7, 2, 0), utc(2026, 11, 14, 2, 0), utc(2026, 11, 21, 2, 0), utc(2026, 11, 28, 2, 0)]  # Fri 18:00 PST


def test_spring_forward_sends_at_the_first_instant_after_a_nonexistent_time_and_never_skips_the_day() -> None:
    # 2026-03-08 America/New_York: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
    night = reader("02:30", "America/New_York")
    assert slot_on(night, date(2026, 3, 8)) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    assert sends(night, utc(2026, 3, 7, 0), utc(2026, 3, 10, 0)) == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]
    # An ordinary time that day moves with the clocks: 07:30 local is an hour earlier in UTC from then on.
    london = reader("07:30", "Europe/London")
    assert sends(london, utc(2026, 3, 28, 0), utc(2026, 3, 31, 0)) == [utc(2026, 3, 28, 7, 30), utc(2026, 3, 29, 6, 30), utc(2026, 3, 30, 6, 30)]


def test_fall_back_sends_an_ambiguous_time_once_at_its_first_occurrence() -> None:
    # 2026-11-01 America/New_York: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice.
    night = reader("01:30", "America/New_York")
    assert slot_on(night, date(2026, 11, 1)) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first one
    assert sends(night, utc(2026, 10, 31, 0), utc(2026, 11, 3, 0)) == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    london = reader("01:30", "Europe/London")  # 2026-10-25: 02:00 BST falls back to 01:00 GMT
    assert sends(london, utc(2026, 10, 24, 0), utc(2026, 10, 27, 0)) == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_downtime_gives_one_coalesced_catch_up_within_the_grace_window_and_none_after_it() -> None:
    ada = reader("07:30", "UTC")
    handled = utc(2026, 11, 22, 7, 30)
    three_days_later = decide(ada, utc(2026, 11, 25, 9, 0), handled, GRACE)
    assert three_days_later is not None and (three_days_later.action, three_days_later.slot) == ("send", utc(2026, 11, 25, 7, 30))
    assert decide(ada, utc(2026, 11, 25, 9, 0), three_days_later.slot, GRACE) is None, "once handled, the slot is not sent again"
    too_late = decide(ada, utc(2026, 11, 25, 20, 0), handled, GRACE)
    assert too_late is not None and too_late.action == "missed"
    assert decide(ada, utc(2026, 11, 25, 7, 29), handled, GRACE) is not None and decide(ada, utc(2026, 11, 25, 7, 29), utc(2026, 11, 24, 7, 30), GRACE) is None
    assert decide(replace(ada, paused=True), utc(2026, 11, 25, 9, 0), handled, GRACE) is None


def test_moving_the_send_time_later_on_a_day_already_served_waits_for_the_next_day() -> None:
    morning, evening = reader("08:00", "Europe/Berlin"), reader("18:00", "Europe/Berlin")
    served = utc(2026, 11, 25, 7, 0)  # 08:00 in Berlin, sent
    assert decide(evening, utc(2026, 11, 25, 17, 5), served, GRACE) is None, "one digest a local day"
    tomorrow = decide(evening, utc(2026, 11, 26, 17, 5), served, GRACE)
    assert tomorrow is not None and tomorrow.slot == utc(2026, 11, 26, 17, 0)
    missed = decide(evening, utc(2026, 11, 25, 17, 5), served, GRACE, missed=True)
    assert missed is not None and missed.slot == utc(2026, 11, 25, 17, 0), "a slot that was only missed does not use up the day"
    assert decide(morning, utc(2026, 11, 26, 7, 5), served, GRACE) is not None, "the next day's slot is due as usual"


def test_edition_names_the_slot_in_utc() -> None:
    assert edition_for(datetime(2026, 11, 25, 7, 30, tzinfo=ZoneInfo("Europe/Paris"))) == "slot-2026-11-25T06:30Z"
    assert latest_slot(reader("07:30", "UTC", "weekly", "monday"), utc(2026, 11, 25, 12)) == utc(2026, 11, 23, 7, 30)


CONFIG = """\
sources:
  - name: local
    type: feed
    url: feed.xml
topics:
  t:
    any: [agents]
subscribers:
  - email: ada@example.org
    topics: [t]
    send_at: "07:30"
    timezone: Europe/London
  - email: bob@example.org
    topics: [t]
    send_at: "07:30"
    timezone: Europe/London
  - email: cy@example.org
    topics: [t]
    send_at: "09:00"
    timezone: Europe/London
"""


def test_the_tick_sends_everyone_due_at_a_slot_as_one_edition_and_records_the_slot(tmp_path: Path) -> None:
    config = parse(CONFIG, str(tmp_path / "subscribers.yaml"))
    env = Env(outbox=tmp_path / "outbox", db=tmp_path / "state.db")
    with Store(env.db) as store:
        store.add_papers([Paper(id="2611.00001", title="Agents that read papers", sources=("local",))], utc(2026, 11, 25, 1, 0))
    daemon = Daemon(config, env, Clock(), tick=1)
    with time_machine.travel(utc(2026, 11, 25, 7, 29, 50), tick=False):
        daemon.tick()
    assert not (tmp_path / "outbox").exists(), "nobody is due before 07:30"
    with time_machine.travel(utc(2026, 11, 25, 7, 30, 5), tick=False):
        daemon.tick()
        daemon.tick()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2, "ada and bob, once each"
    with Store(env.db) as store:
        editions = {(r.subscriber, r.edition, r.status) for r in store.deliveries()}
        handled = store.handled_slots()
    assert editions == {("ada@example.org", "slot-2026-11-25T07:30Z", "sent"), ("bob@example.org", "slot-2026-11-25T07:30Z", "sent")}
    assert handled["ada@example.org"] == handled["bob@example.org"] == (utc(2026, 11, 25, 7, 30), "sent")
    with time_machine.travel(utc(2026, 11, 25, 9, 0, 1), tick=False):
        daemon.tick()
    with Store(env.db) as store:
        assert store.handled_slots()["cy@example.org"] == (utc(2026, 11, 25, 9, 0), "sent")
        assert scheduler.next_sends(config, store, utc(2026, 11, 25, 9, 1))[0][1] == utc(2026, 11, 26, 7, 30)


def test_a_stop_mid_batch_finishes_the_message_in_flight_and_leaves_the_rest_due_for_the_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse(CONFIG, str(tmp_path / "subscribers.yaml"))
    env = Env(outbox=tmp_path / "outbox", db=tmp_path / "state.db")
    with Store(env.db) as store:
        store.add_papers([Paper(id="2611.00001", title="Agents that read papers", sources=("local",))], utc(2026, 11, 25, 1, 0))
    first = Daemon(config, env, Clock(), tick=1)

    class StopAfterOne(Outbox):
        """The signal arrives while the first message is being written."""

        def send(self, letter: Letter) -> str:
            reply = super().send(letter)
            first.stopping.set()
            return reply

    monkeypatch.setattr(daemon, "make_transport", lambda smtp, outbox, pool, dkim: Pool(lambda: StopAfterOne(outbox), 1, None))
    with time_machine.travel(utc(2026, 11, 25, 7, 30, 5), tick=False):
        first.tick()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    with Store(env.db) as store:
        handled = store.handled_slots()
    assert handled["ada@example.org"] == (utc(2026, 11, 25, 7, 30), "sent")
    assert "bob@example.org" not in handled, "bob was not reached: his slot stays due"

    monkeypatch.undo()
    with time_machine.travel(utc(2026, 11, 25, 7, 31, 0), tick=False):
        Daemon(config, env, Clock(), tick=1).tick()
    assert sorted(p.name.split("-", 1)[1] for p in (tmp_path / "outbox").glob("*.eml")) == ["ada@example.org.eml", "bob@example.org.eml"]


def test_schedule_settings_are_validated_with_their_line() -> None:
    text = "settings:\n  catch_up_hours: -1\n  fetch_every: 1\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, "subscribers.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "subscribers.yaml:2:3: settings.catch_up_hours: must be at least 0, got -1",
        "subscribers.yaml:3:3: settings.fetch_every: must be at least 5, got 1",
    ]
    assert parse("settings:\n  catch_up_hours: 0\n", "s.yaml").settings.catch_up_hours == 0


def test_the_daemons_daily_prune_removes_what_the_command_would(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = parse(CONFIG, str(tmp_path / "subscribers.yaml"))
    env = Env(outbox=tmp_path / "outbox", db=tmp_path / "state.db")
    daemon = Daemon(config, env, Clock(), tick=1)
    with time_machine.travel(utc(2026, 11, 25, 7, 30, 5), tick=False):
        with Store(env.db) as store:
            store.add_papers([Paper(id="2611.00001", title="Agents that read papers", sources=("local",))], utc(2026, 11, 25, 1, 0))
        daemon.tick()
    with time_machine.travel(utc(2027, 3, 1, 3, 40), tick=False), caplog.at_level("INFO", logger="newsletter.scheduler"):
        daemon.prune()
    assert "prune: 2 deliveries, 1 layouts, 0 sent lists" in caplog.text, "both readers' sent rows went, with the one edition they shared"
    with Store(env.db) as store:
        assert store.deliveries() == [] and store.paper("2611.00001") is not None
