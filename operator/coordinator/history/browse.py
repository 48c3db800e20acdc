"""Browsing the history: stored runs, chaos events and test results by filter, a page at a time.

``coordinator history runs|events|results`` and the dashboard's history list read through here. Paging is by
keyset, never OFFSET: a page starts after the last row of the one before (its run's ``completed_at`` and ``uid``,
and for events and results the row's id), so the thousandth page costs what the first does. Every filter leads an
index (history/models.py; migration 0005 added those of the phase, fault, target name and result type filters).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.history.models import HistoryTables

PAGE_SIZE = 50


def utc(value: datetime | str) -> datetime:
    """SQLite hands back naive datetimes (and aggregates of them as text); everything stored is UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class BadQuery(ValueError):
    """A filter or cursor that cannot be read; the message names the parameter it came from."""


@dataclass(frozen=True)
class Cursor:
    """A position in a list ordered newest run first: the run at (completed_at, uid), and for events and results
    the row (its id) within that run."""

    completed_at: datetime
    uid: str
    row: int | None = None

    def encode(self) -> str:
        parts = [self.completed_at.astimezone(UTC).isoformat(), self.uid]
        if self.row is not None:
            parts.append(str(self.row))
        return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, parameter: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            parts = raw.split("|")
            if len(parts) not in (2, 3) or not parts[1]:
                raise ValueError(raw)
            row = int(parts[2]) if len(parts) == 3 else None
            return cls(utc(datetime.fromisoformat(parts[0])), parts[1], row)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadQuery(f"{parameter}: not a position in the history (use the cursor a page printed)") from None


def keyset(bounds: Sequence[tuple[ColumnElement[Any], Any, bool]]) -> list[ColumnElement[bool]]:
    """The conditions for the rows after a position in an ordering of ``(column, value at the position,
    descending)``: past it in the first column, or equal there and past it in the next, and so on.

    The plain bound on the first column comes first: with it the planners start the index at the cursor (the OR
    alone made SQLite scan from the newest row, 120 ms for a page halfway down 100,000 runs)."""
    first, value, descending = bounds[0]
    conditions: list[ColumnElement[bool]] = [first <= value if descending else first >= value]
    alternatives = []
    for index, (column, at, down) in enumerate(bounds):
        equal = [c == v for c, v, _ in bounds[:index]]
        alternatives.append(and_(*equal, column < at if down else column > at))
    conditions.append(or_(*alternatives))
    return conditions


def run_keyset(t: HistoryTables, cursor: Cursor, backwards: bool = False) -> list[ColumnElement[bool]]:
    """The runs after ``cursor`` newest first (or, ``backwards``, the runs before it)."""
    runs = t.test_runs
    at = cursor.completed_at.astimezone(UTC)
    return keyset([(runs.c.completed_at, at, not backwards), (runs.c.uid, cursor.uid, not backwards)])


# --- filters -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryQuery:
    """What ``coordinator history`` selects. Every filter is optional; those that do not concern a list are
    refused by the command line, not ignored here.

    - ``scenario``: ``name`` (any namespace) or ``namespace/name``;
    - ``phase``: the run's phase (runs); ``status``: the event's state (events) or the result's state (results);
    - ``fault_type`` (events), ``assertion_type`` (results: the assertion or probe type);
    - ``target``: ``name`` or ``namespace/name`` of an injected target (a run that injected it, and its results);
    - ``correlation_id``: the run's UID, in its log lines, Events and probe requests;
    - ``since``/``until``: the run's completion time.
    """

    namespace: str | None = None
    scenario: str | None = None
    phase: str | None = None
    status: str | None = None
    fault_type: str | None = None
    assertion_type: str | None = None
    target: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def run_conditions(conn: AsyncConnection, t: HistoryTables, q: HistoryQuery) -> list[ColumnElement[bool]] | None:
    """The conditions on the runs table ``q`` asks for; None when its scenario is not stored at all (no rows)."""
    runs, scenarios = t.test_runs, t.scenarios
    where: list[ColumnElement[bool]] = []
    if q.correlation_id:
        where.append(runs.c.uid == q.correlation_id)
    if q.scenario:
        namespace, _, name = q.scenario.rpartition("/")
        found = select(scenarios.c.id).where(scenarios.c.name == name)
        if namespace:
            found = found.where(scenarios.c.namespace == namespace)
        ids = list((await conn.execute(found)).scalars())
        if not ids:
            return None
        where.append(runs.c.scenario_id.in_(ids))
    if q.namespace:
        where.append(runs.c.namespace == q.namespace)
    if q.phase:
        where.append(runs.c.phase == q.phase)
    if q.since is not None:
        where.append(runs.c.completed_at >= q.since.astimezone(UTC))
    if q.until is not None:
        where.append(runs.c.completed_at <= q.until.astimezone(UTC))
    return where


def target_condition(t: HistoryTables, target: str) -> ColumnElement[bool]:
    """Events on ``target`` (``name`` or ``namespace/name``)."""
    events = t.chaos_events
    namespace, _, name = target.rpartition("/")
    condition = events.c.target_name == name
    return and_(condition, events.c.target_namespace == namespace) if namespace else condition


@dataclass(frozen=True)
class Page:
    """One page of a list, and where the next starts (None on the last page)."""

    items: list[dict[str, Any]]
    next: Cursor | None = None


async def _page(
    conn: AsyncConnection, query: Select[Any], size: int, position: Any
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Fetch one row more than the page to know whether another follows; ``position`` makes a row's cursor."""
    rows = [dict(r) for r in (await conn.execute(query.limit(size + 1))).mappings()]
    more = len(rows) > size
    rows = rows[:size]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = utc(value)
    return rows, position(rows[-1]) if more and rows else None


async def runs_page(
    conn: AsyncConnection, t: HistoryTables, q: HistoryQuery, after: Cursor | None = None, size: int = PAGE_SIZE
) -> Page:
    """Stored runs matching ``q``, newest first, after ``after``."""
    runs, scenarios = t.test_runs, t.scenarios
    where = await run_conditions(conn, t, q)
    if where is None:
        return Page([])
    if q.target:
        events = t.chaos_events
        where.append(runs.c.uid.in_(select(events.c.run_uid).where(target_condition(t, q.target))))
    if after is not None:
        where += run_keyset(t, after)
    query = (
        select(
            runs.c.uid,
            runs.c.namespace,
            runs.c.name,
            (scenarios.c.namespace + "/" + scenarios.c.name).label("scenario"),
            runs.c.workflow,
            runs.c.phase,
            runs.c.reason,
            runs.c.message,
            runs.c.dry_run,
            runs.c.started_at,
            runs.c.completed_at,
            runs.c.duration_seconds,
            runs.c.recovery_seconds,
            runs.c.resilience_score,
            runs.c.targets,
        )
        .join(scenarios, scenarios.c.id == runs.c.scenario_id)
        .where(and_(true(), *where))
        .order_by(runs.c.completed_at.desc(), runs.c.uid.desc())
    )
    items, cursor = await _page(conn, query, size, lambda row: Cursor(row["completed_at"], row["uid"]))
    return Page(items, cursor)


async def events_page(
    conn: AsyncConnection, t: HistoryTables, q: HistoryQuery, after: Cursor | None = None, size: int = PAGE_SIZE
) -> Page:
    """Chaos events of the runs matching ``q``, newest run first and in ledger order within a run."""
    runs, events = t.test_runs, t.chaos_events
    where = await run_conditions(conn, t, q)
    if where is None:
        return Page([])
    if q.status:
        where.append(events.c.state == q.status)
    if q.fault_type:
        where.append(events.c.fault == q.fault_type)
    if q.target:
        where.append(target_condition(t, q.target))
    if after is not None:
        at = after.completed_at.astimezone(UTC)
        where += keyset(
            [(runs.c.completed_at, at, True), (runs.c.uid, after.uid, True), (events.c.id, after.row, False)]
        )
    query = (
        select(
            events.c.id,
            runs.c.uid.label("run_uid"),
            runs.c.namespace,
            runs.c.name.label("run"),
            runs.c.completed_at,
            events.c.injection_id,
            events.c.step,
            events.c.step_name,
            events.c.fault,
            events.c.target_kind,
            events.c.target_namespace,
            events.c.target_name,
            events.c.state,
            events.c.injected_at,
            events.c.reverted_at,
            events.c.recovered_at,
            events.c.message,
        )
        .join(runs, runs.c.uid == events.c.run_uid)
        .where(and_(true(), *where))
        .order_by(runs.c.completed_at.desc(), runs.c.uid.desc(), events.c.id.asc())
    )
    items, cursor = await _page(
        conn, query, size, lambda row: Cursor(row["completed_at"], row["run_uid"], int(row["id"]))
    )
    return Page(items, cursor)


async def results_page(
    conn: AsyncConnection, t: HistoryTables, q: HistoryQuery, after: Cursor | None = None, size: int = PAGE_SIZE
) -> Page:
    """Probe and assertion results of the runs matching ``q``, newest run first."""
    runs, results = t.test_runs, t.test_results
    where = await run_conditions(conn, t, q)
    if where is None:
        return Page([])
    if q.status:
        where.append(results.c.state == q.status)
    if q.assertion_type:
        where.append(results.c.type == q.assertion_type)
    if q.target:
        events = t.chaos_events
        where.append(results.c.run_uid.in_(select(events.c.run_uid).where(target_condition(t, q.target))))
    if after is not None:
        at = after.completed_at.astimezone(UTC)
        where += keyset(
            [(runs.c.completed_at, at, True), (runs.c.uid, after.uid, True), (results.c.id, after.row, False)]
        )
    query = (
        select(
            results.c.id,
            runs.c.uid.label("run_uid"),
            runs.c.namespace,
            runs.c.name.label("run"),
            runs.c.completed_at,
            results.c.kind,
            results.c.name,
            results.c.type,
            results.c.state,
            results.c.passed,
            results.c.expected,
            results.c.actual,
            results.c.message,
        )
        .join(runs, runs.c.uid == results.c.run_uid)
        .where(and_(true(), *where))
        .order_by(runs.c.completed_at.desc(), runs.c.uid.desc(), results.c.id.asc())
    )
    items, cursor = await _page(
        conn, query, size, lambda row: Cursor(row["completed_at"], row["run_uid"], int(row["id"]))
    )
    return Page(items, cursor)
