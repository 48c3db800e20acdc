"""The history's SQL, run in a transaction the store opens: the batch upsert of finished runs, the reads, and
the report's aggregates (computed in SQL over indexed columns, so a report over 100k runs stays well under a
second)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Table,
    and_,
    case,
    delete,
    false,
    func,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.domain.percentiles import percentile_rank
from coordinator.history.browse import HistoryQuery, run_conditions, utc
from coordinator.history.models import HistoryTables
from coordinator.history.records import RunRecord
from coordinator.history.report import LAST_FAILURES, TREND_POINTS, Report, ReportFilters, RunSummary, ScenarioStats

UNION_CHUNK = 100  # per-scenario lookups per statement (SQLite allows 500 terms in a compound SELECT)


async def write_runs(conn: AsyncConnection, t: HistoryTables, backend: str, unique: Sequence[RunRecord]) -> int:
    """Upsert ``unique`` runs (one record per UID), their scenarios, events and results, in ``conn``'s
    transaction; returns how many runs were written."""
    now = datetime.now(UTC)
    insert = postgresql.insert if backend == "postgresql" else sqlite.insert
    scenario_ids: dict[tuple[str, str], int] = {}
    for scenario in {(r.scenario.namespace, r.scenario.name): r.scenario for r in unique}.values():
        stmt = insert(t.scenarios).values(
            namespace=scenario.namespace,
            name=scenario.name,
            type=scenario.type,
            description=scenario.description,
            steps=scenario.steps,
            first_seen_at=now,
            last_seen_at=now,
        )
        excluded = stmt.excluded
        returning = stmt.on_conflict_do_update(
            index_elements=["namespace", "name"],
            set_={
                "type": func.coalesce(excluded.type, t.scenarios.c.type),
                "description": func.coalesce(excluded.description, t.scenarios.c.description),
                "steps": func.coalesce(excluded.steps, t.scenarios.c.steps),
                "last_seen_at": excluded.last_seen_at,
            },
        ).returning(t.scenarios.c.id)
        scenario_ids[(scenario.namespace, scenario.name)] = (await conn.execute(returning)).scalar_one()

    rows = [
        {
            "uid": r.uid,
            "namespace": r.namespace,
            "name": r.name,
            "scenario_id": scenario_ids[(r.scenario.namespace, r.scenario.name)],
            "phase": r.phase,
            "passed": r.passed,
            "reason": r.reason,
            "message": r.message,
            "dry_run": r.dry_run,
            "created_at": r.created_at,
            "started_at": r.started_at,
            "completed_at": r.completed_at,
            "duration_seconds": r.duration_seconds,
            "recovery_seconds": r.recovery_seconds,
            "resilience_score": r.resilience_score,
            "targets": r.targets,
            "status": r.status,
            "mirrored_at": now,
            "requested_by": r.requested_by,
            "workflow": r.workflow,
            "nodes": list(r.nodes) if r.workflow is not None else None,
            "parent_uid": r.parent_uid,
            "parent_name": r.parent_name,
            "workflow_node": r.node,
        }
        for r in unique
    ]
    upsert = insert(t.test_runs)
    upsert = upsert.on_conflict_do_update(
        index_elements=["uid"],
        set_={c.name: upsert.excluded[c.name] for c in t.test_runs.columns if c.name != "uid"},
    )
    await conn.execute(upsert, rows)

    # Events and results are replaced wholesale: a re-delivered run never duplicates them.
    uids = [r.uid for r in unique]
    await conn.execute(delete(t.chaos_events).where(t.chaos_events.c.run_uid.in_(uids)))
    await conn.execute(delete(t.test_results).where(t.test_results.c.run_uid.in_(uids)))
    events = [{"run_uid": r.uid, **vars(e)} for r in unique for e in r.events]
    results = [{"run_uid": r.uid, **vars(x)} for r in unique for x in r.results]
    if events:
        await conn.execute(t.chaos_events.insert(), events)
    if results:
        await conn.execute(t.test_results.insert(), results)

    return len(unique)


async def count_runs(conn: AsyncConnection, t: HistoryTables, namespace: str | None = None) -> int:
    query = select(func.count()).select_from(t.test_runs)
    if namespace:
        query = query.where(t.test_runs.c.namespace == namespace)
    return int((await conn.execute(query)).scalar_one())


async def get_run(conn: AsyncConnection, t: HistoryTables, uid: str) -> dict[str, Any] | None:
    """One stored run as a dict of its columns, with its scenario as ``namespace/name``."""
    query = (
        select(t.test_runs, t.scenarios.c.namespace.label("scenario_namespace"), t.scenarios.c.name.label("sn"))
        .join(t.scenarios, t.scenarios.c.id == t.test_runs.c.scenario_id)
        .where(t.test_runs.c.uid == uid)
    )
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        return None
    data = dict(row)
    data["scenario"] = f"{data.pop('scenario_namespace')}/{data.pop('sn')}"
    if isinstance(data.get("status"), str):  # SQLite hands JSON back as text through some drivers
        data["status"] = json.loads(data["status"])
    if data.get("nodes") is not None:
        data["nodes"] = _nodes(data["nodes"])
    return _aware(data)


async def list_runs(conn: AsyncConnection, t: HistoryTables, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every stored run (of a namespace), oldest first: uid, name, phase, completed_at."""
    query = select(t.test_runs.c.uid, t.test_runs.c.name, t.test_runs.c.phase, t.test_runs.c.completed_at)
    if namespace:
        query = query.where(t.test_runs.c.namespace == namespace)
    rows = (await conn.execute(query.order_by(t.test_runs.c.completed_at))).mappings().all()
    return [_aware(dict(r)) for r in rows]


async def events(conn: AsyncConnection, tables: HistoryTables, uid: str) -> list[dict[str, Any]]:
    """A stored run's chaos events in ledger order."""
    t = tables.chaos_events
    rows = (await conn.execute(select(t).where(t.c.run_uid == uid).order_by(t.c.id))).mappings().all()
    return [_aware(dict(r)) for r in rows]


async def results(conn: AsyncConnection, tables: HistoryTables, uid: str) -> list[dict[str, Any]]:
    """A stored run's probe and assertion results."""
    t = tables.test_results
    rows = (await conn.execute(select(t).where(t.c.run_uid == uid).order_by(t.c.id))).mappings().all()
    return [dict(r) for r in rows]


async def latest_uid(conn: AsyncConnection, t: HistoryTables, namespace: str, name: str) -> str | None:
    """The UID of the last stored run named ``namespace/name`` (a name can be reused once a TestRun is gone)."""
    runs = t.test_runs
    query = (
        select(runs.c.uid)
        .where(runs.c.namespace == namespace, runs.c.name == name)
        .order_by(runs.c.completed_at.desc())
        .limit(1)
    )
    uid = (await conn.execute(query)).scalar()
    return str(uid) if uid is not None else None


async def report(
    conn: AsyncConnection,
    t: HistoryTables,
    filters: ReportFilters,
    include_runs: bool,
    runs_limit: int,
    source: str,
) -> Report:
    """The report's aggregates for the runs matching ``filters``: per scenario runs, pass rate, mean and
    p95 (nearest rank) recovery time, last failures and the recent trend; with ``include_runs`` also the
    runs themselves (newest ``runs_limit``), which JUnit output lists."""
    runs, scenarios = t.test_runs, t.scenarios
    selected = HistoryQuery(namespace=filters.namespace, scenario=filters.scenario, since=filters.since)
    where = await run_conditions(conn, t, selected)
    if where is None:
        return Report(datetime.now(UTC), filters, (), source=source)
    condition = and_(true(), *where)
    is_workflow = runs.c.workflow.is_not(None)
    aggregates = (
        func.count().label("runs"),
        func.sum(case((runs.c.passed, 1), else_=0)).label("passed"),
        func.sum(case((runs.c.phase == "Cancelled", 1), else_=0)).label("cancelled"),
        func.avg(runs.c.recovery_seconds).label("mean_recovery"),
        func.count(runs.c.recovery_seconds).label("measured"),
        func.avg(runs.c.duration_seconds).label("mean_duration"),
        func.count(runs.c.duration_seconds).label("timed"),
        func.min(runs.c.completed_at).label("first"),
        func.max(runs.c.completed_at).label("last"),
        func.sum(case((is_workflow, 1), else_=0)).label("workflow_runs"),
    )
    totals = list(
        await conn.execute(select(runs.c.scenario_id, *aggregates).where(condition).group_by(runs.c.scenario_id))
    )
    # A workflow run's record names its workflow where a run's names its scenario (history/records.py), so a
    # scenario and a workflow of one name share a row of the scenarios table. Only such a row's runs are split,
    # by a second query over that row alone: the common case keeps the one GROUP BY in index order (grouping
    # every run by workflow too made the report of 100k runs a third slower on SQLite).
    shared = {row.scenario_id for row in totals if 0 < row.workflow_runs < row.runs}
    if shared:
        split = await conn.execute(
            select(runs.c.scenario_id, *aggregates)
            .where(condition, runs.c.scenario_id.in_(shared))
            .group_by(runs.c.scenario_id, is_workflow)
        )
        totals = [row for row in totals if row.scenario_id not in shared] + list(split)
    if not totals:
        return Report(datetime.now(UTC), filters, (), source=source)
    names = {
        row.id: row
        for row in await conn.execute(
            select(scenarios.c.id, scenarios.c.namespace, scenarios.c.name, scenarios.c.type).where(
                scenarios.c.id.in_([row.scenario_id for row in totals])
            )
        )
    }

    def key(scenario_id: int) -> str:
        row = names[scenario_id]
        return f"{row.namespace}/{row.name}"

    def of_group(group: tuple[int, bool]) -> ColumnElement[bool]:
        """The runs of one row of the report: a scenario's, or a workflow's (by (scenario row, workflow or not))."""
        if group[0] not in shared:
            return runs.c.scenario_id == group[0]
        return and_(runs.c.scenario_id == group[0], is_workflow if group[1] else runs.c.workflow.is_(None))

    # Per scenario, three small lookups that the (scenario_id, completed_at, passed, recovery_seconds)
    # index answers without touching other scenarios' rows: the p95 (nearest rank: the ceil(0.95 n)-th
    # smallest measured recovery), the last failures and the trend. They are sent as UNION ALLs of
    # per-scenario LIMIT queries, a few round trips in all; window functions over the whole window
    # would sort every run instead (seconds at 100k runs).
    groups = [(row.scenario_id, bool(row.workflow_runs)) for row in totals]
    measured = {group: int(row.measured or 0) for group, row in zip(groups, totals, strict=True)}
    p95: dict[tuple[int, bool], float] = {}
    failures: dict[tuple[int, bool], list[RunSummary]] = {}
    trends: dict[tuple[int, bool], list[RunSummary]] = {}
    for chunk in (groups[i : i + UNION_CHUNK] for i in range(0, len(groups), UNION_CHUNK)):
        with_values = [g for g in chunk if measured[g]]
        if with_values:
            lookups = [
                # The group's kind as a constant: reading the workflow column would leave the covering index.
                select(runs.c.scenario_id, (true() if g[1] else false()).label("is_workflow"), runs.c.recovery_seconds)
                .where(condition, of_group(g), runs.c.recovery_seconds.is_not(None))
                .order_by(runs.c.recovery_seconds)
                .limit(1)
                .offset(percentile_rank(measured[g]) - 1)
                for g in with_values
            ]
            for row in await conn.execute(_union(lookups)):
                p95[(row.scenario_id, bool(row.is_workflow))] = row.recovery_seconds
        for extra, limit, into in (
            (and_(runs.c.passed.is_(False), runs.c.phase != "Cancelled"), LAST_FAILURES, failures),
            (true(), TREND_POINTS, trends),
        ):
            lookups = [
                select(*_summary_columns(runs))
                .where(condition, extra, of_group(g))
                .order_by(runs.c.completed_at.desc())
                .limit(limit)
                for g in chunk
            ]
            for row in await conn.execute(_union(lookups)):
                group = (row.scenario_id, row.workflow is not None)
                into.setdefault(group, []).append(_summary(row, key(row.scenario_id)))

    listed: tuple[RunSummary, ...] = ()
    if include_runs:
        query = select(*_summary_columns(runs)).where(condition).order_by(runs.c.completed_at.desc())
        rows = await conn.execute(query.limit(runs_limit))
        listed = tuple(_summary(row, key(row.scenario_id)) for row in rows)

    stats = [
        ScenarioStats(
            scenario=key(row.scenario_id),
            type=None if group[1] else names[row.scenario_id].type,
            workflow=group[1],
            runs=int(row.runs),
            passed=int(row.passed or 0),
            cancelled=int(row.cancelled or 0),
            first_run_at=utc(row.first),
            last_run_at=utc(row.last),
            mean_recovery=None if row.mean_recovery is None else round(float(row.mean_recovery), 3),
            mean_duration=None if row.mean_duration is None else round(float(row.mean_duration), 3),
            timed=int(row.timed or 0),
            p95_recovery=p95.get(group),
            last_failures=tuple(sorted(failures.get(group, []), key=_newest_first)),
            trend=tuple(sorted(trends.get(group, []), key=lambda r: r.completed_at)),
        )
        for group, row in zip(groups, totals, strict=True)
    ]
    stats.sort(key=lambda s: (s.scenario, s.workflow))
    return Report(datetime.now(UTC), filters, tuple(stats), runs=listed[::-1], source=source)


def _summary_columns(runs: Table) -> list[ColumnElement[Any]]:
    """The columns a ``RunSummary`` is made of."""
    c = runs.c
    return [c.scenario_id, c.namespace, c.name, c.phase, c.reason, c.message, c.completed_at, c.duration_seconds,
            c.recovery_seconds, c.uid, c.requested_by, c.workflow, c.nodes, c.parent_uid, c.parent_name,
            c.workflow_node]  # fmt: skip


def _union(queries: Sequence[Select[Any]]) -> CompoundSelect[Any] | Select[Any]:
    """UNION ALL of queries that each carry their own ORDER BY/LIMIT (wrapped, as SQLite requires)."""
    wrapped = [select(q.subquery()) for q in queries]
    return wrapped[0] if len(wrapped) == 1 else union_all(*wrapped)


def _newest_first(run: RunSummary) -> float:
    return -run.completed_at.timestamp()


def _aware(row: dict[str, Any]) -> dict[str, Any]:
    return {k: utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _summary(row: Any, scenario: str) -> RunSummary:
    return RunSummary(
        namespace=row.namespace,
        name=row.name,
        scenario=scenario,
        phase=row.phase,
        completed_at=utc(row.completed_at),
        reason=row.reason,
        message=row.message,
        duration_seconds=row.duration_seconds,
        recovery_seconds=row.recovery_seconds,
        uid=row.uid,
        requested_by=_document(row.requested_by),
        workflow=row.workflow,
        nodes=tuple(_nodes(row.nodes)),
        parent_uid=row.parent_uid,
        parent_name=row.parent_name,
        node=row.workflow_node,
    )


def _nodes(value: Any) -> list[dict[str, Any]]:
    """A workflow run's nodes column as a list of dicts (text through some SQLite drivers and unions)."""
    if isinstance(value, str):
        value = json.loads(value)
    return [dict(node) for node in value] if isinstance(value, list) else []


def _document(value: Any) -> dict[str, Any] | None:
    """A JSON column's value as a dict (SQLite hands JSON back as text through some drivers and unions)."""
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else None
