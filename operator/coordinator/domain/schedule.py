"""When a scheduled ChaosScenario runs, as pure functions of a clock reading (a ChaosScenario acts like a CronJob).

Schedules are five-field cron expressions (``*/10 * * * *``), the macros ``@hourly``, ``@daily`` (``@midnight``),
``@weekly``, ``@monthly``, ``@yearly`` (``@annually``), or ``@every <duration>``. Cron expressions are read in the
scenario's ``timeZone`` (UTC by default); ``@every`` ticks are whole multiples of the duration since the Unix
epoch, so every operator process and replica computes the same times without sharing any state.

Missed schedules are handled as the CronJob controller handles them: only the most recent unmet time is ever run
(never a burst of catch-up runs), and not at all once it is older than ``startingDeadlineSeconds``. Each scheduled
time maps to one deterministic TestRun name, so a restarted operator or a second replica creating "the same" run
gets 409 AlreadyExists instead of a duplicate.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from coordinator.api.durations import parse_duration
from coordinator.api.models import ConcurrencyPolicy

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EVERY_PREFIX = "@every "
# Shorter intervals would make the operator a load generator rather than a scheduler.
MIN_EVERY_SECONDS = 1.0
MAX_EVERY_SECONDS = 8784 * 3600.0  # a leap year: every yearly schedule fits
# A fixed instant from which a cron expression must reach back to a time that exists (croniter gives up after
# some years of search, so an impossible date raises instead of hanging).
NEVER_CHECK_FROM = datetime(2030, 1, 1, tzinfo=UTC)
# Kubernetes object names in labels and most tooling: keep generated run names within a DNS label.
MAX_NAME_LENGTH = 63


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: either a cron expression in a time zone, or a fixed interval in seconds."""

    text: str
    cron: str | None = None
    every: float | None = None
    zone: ZoneInfo | None = None

    def previous(self, now: datetime) -> datetime:
        """The latest scheduled time at or before ``now`` (aware, UTC)."""
        now = _aware(now)
        if self.every is not None:
            return datetime.fromtimestamp(math.floor(now.timestamp() / self.every) * self.every, UTC)
        assert self.cron is not None
        local = now.astimezone(self.zone or UTC)
        prev: datetime = croniter(self.cron, local).get_prev(datetime)
        # croniter's get_prev is exclusive: a clock reading exactly on a scheduled time belongs to that time.
        following: datetime = croniter(self.cron, prev).get_next(datetime)
        return (following if following <= local else prev).astimezone(UTC).replace(fold=0)

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after ``moment`` (aware, UTC)."""
        moment = _aware(moment)
        if self.every is not None:
            ticks = math.floor(moment.timestamp() / self.every) + 1
            return datetime.fromtimestamp(ticks * self.every, UTC)
        assert self.cron is not None
        following: datetime = croniter(self.cron, moment.astimezone(self.zone or UTC)).get_next(datetime)
        return following.astimezone(UTC).replace(fold=0)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: schedule arithmetic needs an aware time")
    return moment


def parse_zone(name: str | None) -> ZoneInfo | None:
    """The IANA time zone ``name`` (None for UTC); ScheduleError if this machine's tz database lacks it."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: expected an IANA name such as Europe/Berlin") from None


def parse_schedule(text: str, time_zone: str | None = None) -> Schedule:
    """Parse a cron expression, a macro or ``@every <duration>``; ScheduleError names what is wrong."""
    stripped = text.strip()
    zone = parse_zone(time_zone)
    if stripped.startswith(EVERY_PREFIX):
        try:
            seconds = parse_duration(stripped.removeprefix(EVERY_PREFIX).strip())
        except ValueError as exc:
            raise ScheduleError(f"invalid schedule {text!r}: {exc}") from None
        if seconds < MIN_EVERY_SECONDS:
            raise ScheduleError(f"invalid schedule {text!r}: @every needs at least {MIN_EVERY_SECONDS:g}s")
        if seconds > MAX_EVERY_SECONDS:
            raise ScheduleError(f"invalid schedule {text!r}: @every can be at most 8784h (a leap year)")
        return Schedule(text=text, every=seconds)
    expression = MACROS.get(stripped, stripped)
    if stripped.startswith("@") and stripped not in MACROS:
        raise ScheduleError(f"invalid schedule {text!r}: unknown macro; use {', '.join(MACROS)} or '@every <duration>'")
    if stripped.upper().startswith(("TZ=", "CRON_TZ=")):
        raise ScheduleError(f"invalid schedule {text!r}: set spec.timeZone instead of a TZ= prefix")
    if len(expression.split()) != 5:
        raise ScheduleError(
            f"invalid schedule {text!r}: a cron expression has five fields (minute hour day month weekday)"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"invalid schedule {text!r}: not a valid cron expression")
    schedule = Schedule(text=text, cron=expression, zone=zone)
    try:  # a valid expression may still never fire ("0 0 30 2 *", February 30th)
        schedule.previous(NEVER_CHECK_FROM)
    except (CroniterBadDateError, CroniterBadCronError):
        raise ScheduleError(f"invalid schedule {text!r}: it never fires (no such date)") from None
    return schedule


def due_time(
    schedule: Schedule,
    now: datetime,
    last_scheduled: datetime | None,
    created: datetime,
    starting_deadline_seconds: int | None = None,
) -> datetime | None:
    """The scheduled time a run is owed for now, or None.

    That is the most recent scheduled time after the last one run (or after the scenario's creation) and at or
    before ``now`` — one time however many were missed, as CronJob does. With ``starting_deadline_seconds`` a time
    older than that many seconds is missed for good.
    """
    earliest = last_scheduled or created
    if starting_deadline_seconds is not None:
        earliest = max(earliest, now - timedelta(seconds=starting_deadline_seconds))
    candidate = schedule.previous(now)
    return candidate if candidate > earliest else None


class Action(StrEnum):
    """What the scheduler does about a due time."""

    CREATE = "Create"  # start the run
    REPLACE = "Replace"  # abort the active runs, then start the run
    WAIT = "Wait"  # Forbid and a run is active: keep the time owed (it may still start within the deadline)
    NONE = "None"  # nothing is due, or the due run exists already


def decide(due: datetime | None, already_created: bool, policy: ConcurrencyPolicy | str, active: int) -> Action:
    """Apply the concurrency policy to a due time, given how many scheduled runs of the scenario are active."""
    if due is None or already_created:
        return Action.NONE
    if active and policy == ConcurrencyPolicy.FORBID:
        return Action.WAIT
    if active and policy == ConcurrencyPolicy.REPLACE:
        return Action.REPLACE
    return Action.CREATE


def run_name(scenario: str, scheduled: datetime) -> str:
    """The TestRun name for one scheduled time: ``<scenario>-<unix seconds>``, at most 63 characters.

    A long scenario name is cut and a hash of the full name keeps cut names of different scenarios apart.
    """
    suffix = f"-{int(_aware(scheduled).timestamp())}"
    if len(scenario) + len(suffix) <= MAX_NAME_LENGTH:
        return f"{scenario}{suffix}"
    digest = "-" + hashlib.sha256(scenario.encode()).hexdigest()[:6]
    prefix = scenario[: MAX_NAME_LENGTH - len(suffix) - len(digest)].rstrip("-.")
    return f"{prefix}{digest}{suffix}"


def run_now_name(scenario: str, token: str) -> str:
    """The TestRun a ``run-now`` token starts: ``<scenario>-now-<hash of the token>``, the same for the same token
    (so a repeated reconcile creates it once), at most 63 characters."""
    suffix = "-now-" + hashlib.sha256(token.encode()).hexdigest()[:8]
    return scenario[: MAX_NAME_LENGTH - len(suffix)].rstrip("-.") + suffix


def label_value(name: str) -> str:
    """``name`` as a label value (at most 63 characters, alphanumeric at both ends)."""
    if len(name) <= MAX_NAME_LENGTH:
        return name
    return re.sub(r"[^A-Za-z0-9]+$", "", name[:MAX_NAME_LENGTH])
