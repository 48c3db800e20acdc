"""Scheduling with a fake clock: cron and @every times, missed schedules, concurrency policies, run names."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.api.models import ConcurrencyPolicy
from coordinator.domain.schedule import (
    MAX_NAME_LENGTH,
    Action,
    ScheduleError,
    decide,
    due_time,
    label_value,
    parse_schedule,
    run_name,
)

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)  # a Monday, on the hour


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


class FakeClock:
    """A clock the test moves by hand: the scheduler's only notion of time is the ``now`` it is given."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cron"),
    [("*/5 * * * *", "*/5 * * * *"), ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *")],
)
def test_cron_and_macros_parse(text: str, cron: str) -> None:
    schedule = parse_schedule(text)
    assert schedule.cron == cron
    assert schedule.every is None


def test_every_parses_to_seconds() -> None:
    assert parse_schedule("@every 1m30s").every == 90.0


@pytest.mark.parametrize(
    ("text", "zone", "message"),
    [
        ("* * * *", None, "five fields"),
        ("* * * * * *", None, "five fields"),
        ("61 * * * *", None, "not a valid cron expression"),
        ("@fortnightly", None, "unknown macro"),
        ("@every 10", None, "missing unit"),
        ("@every 500ms", None, "at least 1s"),
        ("TZ=UTC 0 * * * *", None, "spec.timeZone"),
        ("0 * * * *", "Mars/Olympus_Mons", "unknown time zone"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, zone: str | None, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(text, zone)


# --- scheduled times ----------------------------------------------------------------------------------------


def test_a_one_minute_cron_is_due_once_per_minute_on_the_minute() -> None:
    schedule = parse_schedule("* * * * *")
    clock = FakeClock(at(seconds=0.5))
    created = at(seconds=-30)
    last = None
    runs = []
    for _ in range(600):  # ten minutes in 1 s ticks
        due = due_time(schedule, clock.now, last, created)
        if due is not None:
            runs.append((due, clock.now))
            last = due
        clock.advance(1)
    assert [due for due, _ in runs] == [at(minutes=m) for m in range(10)]
    assert all(timedelta(0) <= seen - due < timedelta(seconds=1) for due, seen in runs), "on time, within a tick"


def test_a_time_exactly_on_the_schedule_is_due_at_that_instant() -> None:
    schedule = parse_schedule("*/5 * * * *")
    assert schedule.previous(at(minutes=5)) == at(minutes=5)
    assert schedule.previous(at(minutes=5, seconds=-1)) == at(minutes=0)
    assert schedule.next_after(at(minutes=5)) == at(minutes=10)


def test_every_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    schedule = parse_schedule("@every 7s")
    moment = at(seconds=3.2)
    previous = schedule.previous(moment)
    assert previous.timestamp() % 7 == 0
    assert previous <= moment < previous + timedelta(seconds=7)
    assert schedule.next_after(moment) == previous + timedelta(seconds=7)
    assert schedule.next_after(previous) == previous + timedelta(seconds=7), "strictly after"


def test_cron_follows_the_time_zone_across_daylight_saving() -> None:
    schedule = parse_schedule("0 9 * * *", "Europe/Berlin")
    winter = schedule.next_after(datetime(2026, 3, 27, 12, tzinfo=UTC))  # Saturday 28 March, CET (UTC+1)
    summer = schedule.next_after(winter)  # clocks go forward in the night to Sunday 29 March: CEST (UTC+2)
    assert winter == datetime(2026, 3, 28, 8, tzinfo=UTC)
    assert summer == datetime(2026, 3, 29, 7, tzinfo=UTC)


def test_nothing_is_due_before_the_first_time_after_creation() -> None:
    schedule = parse_schedule("@hourly")
    created = at(minutes=10)
    assert due_time(schedule, at(minutes=59), None, created) is None
    assert due_time(schedule, at(minutes=60), None, created) == at(minutes=60)


def test_missed_times_give_one_run_for_the_most_recent_not_a_burst() -> None:
    schedule = parse_schedule("* * * * *")
    # The operator was down from 12:00:30 to 12:17:10: seventeen times were missed.
    due = due_time(schedule, at(minutes=17, seconds=10), last_scheduled=at(minutes=0), created=at(minutes=-60))
    assert due == at(minutes=17)
    assert due_time(schedule, at(minutes=17, seconds=11), last_scheduled=due, created=at(minutes=-60)) is None


def test_a_missed_time_older_than_the_starting_deadline_is_skipped() -> None:
    schedule = parse_schedule("*/10 * * * *")
    created = at(minutes=-60)
    assert due_time(schedule, at(minutes=10, seconds=20), at(minutes=0), created, starting_deadline_seconds=30) == (
        at(minutes=10)
    )
    assert due_time(schedule, at(minutes=10, seconds=40), at(minutes=0), created, starting_deadline_seconds=30) is None


def test_a_restart_recomputes_the_same_due_time_and_name() -> None:
    """Two processes (or one before and after a crash) reading the same status decide the same run."""
    schedule = parse_schedule("@every 5s")
    now = at(seconds=12.3)
    first = due_time(schedule, now, at(seconds=5), at(minutes=-1))
    second = due_time(schedule, now + timedelta(seconds=0.4), at(seconds=5), at(minutes=-1))
    assert first == second == at(seconds=10)
    assert first is not None
    assert run_name("nightly", first) == run_name("nightly", second or first)


# --- concurrency policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "active", "expected"),
    [
        (ConcurrencyPolicy.ALLOW, 0, Action.CREATE),
        (ConcurrencyPolicy.ALLOW, 2, Action.CREATE),
        (ConcurrencyPolicy.FORBID, 0, Action.CREATE),
        (ConcurrencyPolicy.FORBID, 1, Action.WAIT),
        (ConcurrencyPolicy.REPLACE, 0, Action.CREATE),
        (ConcurrencyPolicy.REPLACE, 1, Action.REPLACE),
    ],
)
def test_concurrency_policies_act_like_cronjob(policy: ConcurrencyPolicy, active: int, expected: Action) -> None:
    assert decide(at(), already_created=False, policy=policy, active=active) == expected


def test_nothing_to_do_without_a_due_time_or_when_its_run_exists() -> None:
    assert decide(None, already_created=False, policy=ConcurrencyPolicy.ALLOW, active=0) == Action.NONE
    assert decide(at(), already_created=True, policy=ConcurrencyPolicy.REPLACE, active=1) == Action.NONE


def test_forbid_runs_the_owed_time_once_the_active_run_ends() -> None:
    """Simulate a Forbid scenario on a one-minute cron whose runs last 90 s: runs never overlap, and the time
    that came while a run was active is run (once) when it ends, as CronJob does without a starting deadline."""
    schedule = parse_schedule("* * * * *")
    clock = FakeClock(at(seconds=0.5))
    last: datetime | None = None
    active_until: datetime | None = None
    started: list[tuple[datetime, datetime]] = []  # (scheduled, started)
    for _ in range(6 * 60):
        active = 1 if active_until is not None and clock.now < active_until else 0
        due = due_time(schedule, clock.now, last, at(minutes=-1))
        action = decide(due, False, ConcurrencyPolicy.FORBID, active)
        if due is not None and action == Action.CREATE:
            started.append((due, clock.now))
            last = due
            active_until = clock.now + timedelta(seconds=90)
        clock.advance(1)
    for (_, first), (_, second) in itertools.pairwise(started):
        assert second - first >= timedelta(seconds=90), "a run starts only after the previous one ended"
    # 12:01 came while 12:00 ran (until 12:01:30): owed, it started then and ran past 12:02, which is skipped.
    assert [due for due, _ in started] == [at(minutes=m) for m in (0, 1, 3, 4)]
    assert started[1][1] == at(minutes=1, seconds=30.5)


def test_forbid_with_a_starting_deadline_drops_the_owed_time() -> None:
    schedule = parse_schedule("* * * * *")
    # 12:01 came while a run was active; it ended at 12:01:40, past the 30 s deadline of 12:01.
    due = due_time(schedule, at(minutes=1, seconds=40), at(minutes=0), at(minutes=-1), starting_deadline_seconds=30)
    assert due is None


# --- names --------------------------------------------------------------------------------------------------


def test_run_names_are_the_scenario_and_the_unix_time() -> None:
    assert run_name("nightly", at()) == f"nightly-{int(at().timestamp())}"


def test_long_scenario_names_are_cut_to_63_characters_and_stay_distinct() -> None:
    first = run_name("a" * 70 + "-one", at())
    second = run_name("a" * 70 + "-two", at())
    assert len(first) == len(second) == MAX_NAME_LENGTH
    assert first != second
    assert first.endswith(f"-{int(at().timestamp())}")


def test_label_values_fit_and_end_alphanumeric() -> None:
    assert label_value("short.name") == "short.name"
    value = label_value("x" * 62 + "-yyyy")
    assert len(value) <= MAX_NAME_LENGTH
    assert value[-1].isalnum()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0 0 30 2 *", "it never fires"),
        ("0 0 31 4 *", "it never fires"),
        ("@every 8785h", "at most 8784h"),
        ("@every 99999999999999999999h", "at most 8784h"),
    ],
)
def test_schedules_that_never_fire_are_refused(text: str, fragment: str) -> None:
    """February 30th used to reach the scheduler, whose croniter search raised on every tick."""
    with pytest.raises(ScheduleError, match=fragment):
        parse_schedule(text)
