"""The dashboard's reads of the history store: the overview's figures, a scenario's trend, and the history list.

Each is a few statements over indexed columns (history/models.py), so the overview answers in a few
milliseconds with 100,000 runs stored (benchmarks/dashboard_overview.py). Paging is by keyset (the last row's
``completed_at`` and ``uid``), never OFFSET: the thousandth page costs what the first does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.api.models import TERMINAL_PHASES
from coordinator.history.browse import BadQuery, HistoryQuery, run_conditions, run_keyset, utc
from coordinator.history.browse import Cursor as Cursor  # the history list's position, shared with the CLI
from coordinator.history.models import HistoryTables

DAY = timedelta(days=1)
SLOWEST_WINDOW = timedelta(days=7)
SLOWEST_LIMIT = 5
TREND_LIMIT = 500  # a scenario's newest stored runs its charts draw
PAGE_SIZE = 50
# The phases a stored (finished) run may have, for the phase filter.
STORED_PHASES = tuple(sorted(str(phase) for phase in TERMINAL_PHASES))


@dataclass(frozen=True)
class DayFigures:
    """Runs finished in the last 24 h and how many passed."""

    runs: int
    passed: int

    @property
    def pass_rate(self) -> float | None:
        return None if self.runs == 0 else self.passed / self.runs


@dataclass(frozen=True)
class SlowScenario:
    namespace: str
    name: str
    runs: int
    mean_recovery: float
    max_recovery: float


async def last_day(conn: AsyncConnection, t: HistoryTables, now: datetime) -> DayFigures:
    """Runs completed in the 24 h before ``now`` (a range of the completed_at index)."""
    runs = t.test_runs
    query = select(func.count(), func.sum(case((runs.c.passed, 1), else_=0))).where(
        runs.c.completed_at >= (now - DAY).astimezone(UTC)
    )
    count, passed = (await conn.execute(query)).one()
    return DayFigures(int(count or 0), int(passed or 0))


async def slowest_recovery(
    conn: AsyncConnection, t: HistoryTables, now: datetime, limit: int = SLOWEST_LIMIT
) -> list[SlowScenario]:
    """The scenarios whose runs of the last 7 days took longest to recover, by mean recovery time."""
    runs, scenarios = t.test_runs, t.scenarios
    mean = func.avg(runs.c.recovery_seconds)
    grouped = (
        select(
            runs.c.scenario_id,
            func.count(runs.c.recovery_seconds).label("runs"),
            mean.label("mean"),
            func.max(runs.c.recovery_seconds).label("max"),
        )
        .where(runs.c.completed_at >= (now - SLOWEST_WINDOW).astimezone(UTC), runs.c.recovery_seconds.is_not(None))
        .group_by(runs.c.scenario_id)
        .order_by(mean.desc())
        .limit(limit)
        .subquery()
    )
    query = (
        select(scenarios.c.namespace, scenarios.c.name, grouped.c.runs, grouped.c.mean, grouped.c.max)
        .join(grouped, grouped.c.scenario_id == scenarios.c.id)
        .order_by(grouped.c.mean.desc())
    )
    return [
        SlowScenario(row.namespace, row.name, int(row.runs), round(float(row.mean), 3), float(row.max))
        for row in await conn.execute(query)
    ]


@dataclass(frozen=True)
class TrendPoint:
    completed_at: datetime
    passed: bool
    recovery_seconds: float | None


async def scenario_trend(
    conn: AsyncConnection, t: HistoryTables, namespace: str, name: str, limit: int = TREND_LIMIT
) -> list[TrendPoint]:
    """A scenario's newest ``limit`` stored runs, oldest first (index-only: the scenario index carries these)."""
    runs, scenarios = t.test_runs, t.scenarios
    scenario_id = (
        await conn.execute(select(scenarios.c.id).where(scenarios.c.namespace == namespace, scenarios.c.name == name))
    ).scalar_one_or_none()
    if scenario_id is None:
        return []
    query = (
        select(runs.c.completed_at, runs.c.passed, runs.c.recovery_seconds)
        .where(runs.c.scenario_id == scenario_id)
        .order_by(runs.c.completed_at.desc())
        .limit(limit)
    )
    rows = list(await conn.execute(query))
    return [TrendPoint(utc(r.completed_at), bool(r.passed), r.recovery_seconds) for r in reversed(rows)]


@dataclass(frozen=True)
class DailyRate:
    day: date
    runs: int
    passed: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.runs


def daily_pass_rate(points: Sequence[TrendPoint]) -> list[DailyRate]:
    """Runs and passes per UTC day of ``points``, oldest day first."""
    days: dict[date, list[int]] = {}
    for point in points:
        counts = days.setdefault(point.completed_at.astimezone(UTC).date(), [0, 0])
        counts[0] += 1
        counts[1] += int(point.passed)
    return [DailyRate(day, runs, passed) for day, (runs, passed) in sorted(days.items())]


def chart_data(points: Sequence[TrendPoint]) -> dict[str, Any]:
    """The charts' series as uPlot takes them (x in Unix seconds): recovery time per run, pass rate per day."""
    measured = [p for p in points if p.recovery_seconds is not None]
    daily = daily_pass_rate(points)
    return {
        "recovery": [
            [int(p.completed_at.timestamp()) for p in measured],
            [round(float(p.recovery_seconds or 0.0), 3) for p in measured],
        ],
        "passRate": [
            [int(datetime.combine(d.day, datetime.min.time(), UTC).timestamp()) for d in daily],
            [round(100 * d.pass_rate, 1) for d in daily],
        ],
    }


# --- the history list ----------------------------------------------------------------------------------------


BadFilter = BadQuery  # a filter or cursor in the URL that cannot be read; the message names the parameter


@dataclass(frozen=True)
class HistoryFilters:
    """The history page's filters, as in its URL's query (shareable)."""

    namespace: str = ""
    scenario: str = ""  # a name, or namespace/name
    phase: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_query(cls, query: Any) -> HistoryFilters:
        """From a request's query (``namespace``, ``scenario``, ``phase``, ``from``, ``to``; dates or times)."""
        return cls(
            namespace=str(query.get("namespace", "")).strip(),
            scenario=str(query.get("scenario", "")).strip(),
            phase=str(query.get("phase", "")).strip(),
            since=parse_time(str(query.get("from", "")), "from"),
            until=parse_time(str(query.get("to", "")), "to", end_of_day=True),
        )

    def query(self) -> dict[str, str]:
        """The non-empty filters as URL query parameters (the inverse of ``from_query``)."""
        out = {"namespace": self.namespace, "scenario": self.scenario, "phase": self.phase}
        if self.since is not None:
            out["from"] = self.since.strftime("%Y-%m-%dT%H:%M")
        if self.until is not None:
            out["to"] = self.until.strftime("%Y-%m-%dT%H:%M")
        return {k: v for k, v in out.items() if v}

    def history_query(self) -> HistoryQuery:
        """The same selection as ``coordinator history runs`` takes it, so both read the runs by one set of rules
        (history/browse.py ``run_conditions``)."""
        return HistoryQuery(
            namespace=self.namespace or None,
            scenario=self.scenario or None,
            phase=self.phase or None,
            since=self.since,
            until=self.until,
        )


def parse_time(text: str, parameter: str, end_of_day: bool = False) -> datetime | None:
    """A date (``2026-12-06``) or a time (``2026-12-06T14:30``), UTC when no offset is given. A date as ``to``
    means the end of that day."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{parameter}: {text!r} is not a date (2026-12-06) or a time (2026-12-06T14:30)") from None
    if end_of_day and len(text) == 10:
        value += DAY - timedelta(microseconds=1)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class HistoryRow:
    uid: str
    namespace: str
    name: str
    scenario: str
    workflow: str | None
    phase: str
    reason: str | None
    completed_at: datetime
    duration_seconds: float | None
    recovery_seconds: float | None


@dataclass(frozen=True)
class HistoryPage:
    rows: list[HistoryRow]
    older: Cursor | None = None  # the next page's position, when there are older rows
    newer: Cursor | None = None  # the previous page's position, when there are newer rows
    unknown_scenario: bool = False


async def history_page(
    conn: AsyncConnection,
    t: HistoryTables,
    filters: HistoryFilters,
    after: Cursor | None = None,
    before: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> HistoryPage:
    """One page of stored runs matching ``filters``, newest first: those older than ``after``, or the page just
    newer than ``before``, or the newest. Fetches one row more than the page to know whether another follows."""
    runs, scenarios = t.test_runs, t.scenarios
    where = await run_conditions(conn, t, filters.history_query())
    if where is None:
        return HistoryPage([], unknown_scenario=True)
    backwards = before is not None and after is None
    cursor = before if backwards else after
    if cursor is not None:
        where += run_keyset(t, cursor, backwards=backwards)
    order = (
        (runs.c.completed_at.asc(), runs.c.uid.asc()) if backwards else (runs.c.completed_at.desc(), runs.c.uid.desc())
    )
    query = (
        select(
            runs.c.uid,
            runs.c.namespace,
            runs.c.name,
            scenarios.c.namespace.label("scenario_namespace"),
            scenarios.c.name.label("scenario_name"),
            runs.c.workflow,
            runs.c.phase,
            runs.c.reason,
            runs.c.completed_at,
            runs.c.duration_seconds,
            runs.c.recovery_seconds,
        )
        .join(scenarios, scenarios.c.id == runs.c.scenario_id)
        .where(and_(true(), *where))
        .order_by(*order)
        .limit(size + 1)
    )
    fetched = [
        HistoryRow(
            uid=r.uid,
            namespace=r.namespace,
            name=r.name,
            scenario=f"{r.scenario_namespace}/{r.scenario_name}",
            workflow=r.workflow,
            phase=r.phase,
            reason=r.reason,
            completed_at=utc(r.completed_at),
            duration_seconds=r.duration_seconds,
            recovery_seconds=r.recovery_seconds,
        )
        for r in await conn.execute(query)
    ]
    more = len(fetched) > size
    rows = fetched[:size]
    if backwards:
        rows.reverse()
    first = Cursor(rows[0].completed_at, rows[0].uid) if rows else None
    last = Cursor(rows[-1].completed_at, rows[-1].uid) if rows else None
    if backwards:
        # Coming back from an older page: older rows exist (the one we came from); newer ones if more were found.
        return HistoryPage(rows, older=last, newer=first if more else None)
    return HistoryPage(rows, older=last if more else None, newer=first if cursor is not None else None)
