"""``HistoryStore``: the async repository of finished runs, on PostgreSQL (asyncpg) or an embedded SQLite file.

Writes are idempotent upserts keyed by the TestRun's UID (a run's events and results are replaced as a whole),
so mirroring can be retried at will: at-least-once delivery, exactly-once content. Reads are the report's
aggregates, computed in SQL over indexed columns so a report over 100k runs stays well under a second.

Errors that mean "the database is not reachable now" (or that it refuses us) become ``HistoryUnavailable``;
callers wait on ``availability`` (history/availability.py) and write once it is back. The database URL is only
ever shown with its password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    CompoundSelect,
    MetaData,
    Select,
    String,
    Table,
    and_,
    case,
    delete,
    event,
    exists,
    func,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from coordinator.domain.percentiles import percentile_rank
from coordinator.history.availability import HistoryAvailability
from coordinator.history.batching import GroupCommit
from coordinator.history.cache import ReportCache
from coordinator.history.models import SCHEMA_HEAD, HistoryTables, history_tables, table_prefix, version_table
from coordinator.history.records import RunRecord, run_record
from coordinator.history.report import (
    LAST_FAILURES,
    TREND_POINTS,
    Report,
    ReportFilters,
    RunSummary,
    ScenarioStats,
)
from coordinator.history.urls import masked

if TYPE_CHECKING:
    from coordinator.settings import Settings

log = logging.getLogger(__name__)

UNION_CHUNK = 100  # per-scenario lookups per statement (SQLite allows 500 terms in a compound SELECT)
BATCH = 500  # runs per transaction in bulk writes (and so at most 500 bound UIDs in one IN list)
CONNECT_TIMEOUT = 5.0  # seconds; an unreachable database must fail a mirror attempt fast, not hang it
SQLITE_BUSY_TIMEOUT_MS = 5000


class HistoryUnavailable(Exception):
    """The history database cannot be reached (or is starting up); the operation can be retried later.

    ``permanent``: the database answered and refused us (authentication, unknown database): retrying will not
    help until a person fixes the configuration, though the operator keeps asking, less often."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# SQLSTATEs of a database that refuses the operator: invalid authorization (class 28: wrong user or password),
# invalid catalog name (the database does not exist).
REFUSED_SQLSTATES = ("28", "3D000")


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` says the database refuses us, rather than that it cannot be reached now."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return isinstance(code, str) and any(code.startswith(prefix) for prefix in REFUSED_SQLSTATES)


def database_url(settings: Settings) -> URL:
    """``COORDINATOR_DATABASE_URL`` with an async driver, else the embedded SQLite file."""
    if settings.database_url is None:
        return URL.create("sqlite+aiosqlite", database=str(settings.history_file))
    url = make_url(settings.database_url.get_secret_value())
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "asyncpg":
        url = url.set(drivername="postgresql+asyncpg")
    elif url.get_backend_name() == "sqlite" and url.get_driver_name() != "aiosqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    driver = inner.__cause__
    if driver is not None and type(driver).__module__.startswith("asyncpg"):
        inner = driver  # InvalidPasswordError says more than SQLAlchemy's adapter class ("Error")
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return f"{type(inner).__name__}: {text}"[:300]


class HistoryStore:
    """The history of one operator instance (its tables are prefixed with the instance name)."""

    def __init__(self, url: str | URL, instance_name: str = "test-coordinator") -> None:
        self.url = make_url(url)
        self.tables: HistoryTables = history_tables(table_prefix(instance_name))
        self.description = masked(self.url)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported history database {self.description}: use postgresql or sqlite")
        self.engine: AsyncEngine = self._create_engine()
        self._group: GroupCommit[RunRecord] = GroupCommit(
            self._write_batch, limit=BATCH, is_retryable=lambda exc: isinstance(exc, HistoryUnavailable)
        )
        # Created on first use, not here: an unwritable location must not stop the operator from starting.
        self._sqlite_folder = (
            Path(self.url.database).expanduser().parent
            if self.backend == "sqlite" and self.url.database and self.url.database != ":memory:"
            else None
        )
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self.availability = HistoryAvailability(self._probe, self.description)

    @classmethod
    def from_settings(cls, settings: Settings) -> HistoryStore:
        return cls(database_url(settings), settings.instance_name)

    async def ping(self) -> bool:
        """Whether the database answers (for /readyz): one ``SELECT 1``. During an outage it does not ask: it
        raises ``HistoryUnavailable`` explaining the outage (cause, since when, who waits, next attempt)."""
        if not self.availability.up:
            raise HistoryUnavailable(self.availability.explain(), self.availability.permanent)
        await self._probe()
        return True

    async def _probe(self) -> None:
        async with self._transaction() as conn:
            await conn.execute(text("SELECT 1"))

    def _unavailable(self, exc: BaseException) -> HistoryUnavailable:
        """The error for callers, reported once to ``availability`` (which logs the start of an outage)."""
        reason = _reason(exc)
        permanent = refused(exc)
        self.availability.failed(reason, permanent)
        return HistoryUnavailable(f"history database {self.description}: {reason}", permanent)

    def _create_engine(self) -> AsyncEngine:
        if self.backend == "sqlite":
            engine = create_async_engine(self.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                # WAL: the operator writes while `coordinator report` reads, neither blocks the other.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            return engine
        # pool_pre_ping: after a database restart, pooled connections are dead; test before use, reconnect.
        return create_async_engine(
            self.url,
            pool_pre_ping=True,
            pool_size=5,
            connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": 60},
        )

    async def close(self) -> None:
        await self.availability.close()
        await self.engine.dispose()

    # --- schema --------------------------------------------------------------------------------------------

    async def upgrade(self) -> str | None:
        """Apply the migrations (idempotent); returns the schema revision."""
        try:
            if self._sqlite_folder is not None:
                await asyncio.to_thread(self._sqlite_folder.mkdir, parents=True, exist_ok=True)
            # Alembic and the migration scripts load only when a schema may need them (a tenth of a second or more).
            from coordinator.history import migrations

            async with self.engine.begin() as conn:
                revision = await conn.run_sync(migrations.upgrade, self.tables.prefix)
        except (DBAPIError, OSError, TimeoutError) as exc:
            if isinstance(exc, IntegrityError | ProgrammingError | DataError):
                raise
            raise self._unavailable(exc) from exc
        if not self._schema_ready:
            log.info("history store %s at schema revision %s", self.description, revision)
        self._schema_ready = True
        return revision

    async def ensure_schema(self) -> None:
        """Migrate once per process, on first use (the database may have been down at start-up)."""
        if self._schema_ready:
            return
        async with self._schema_lock:
            if not self._schema_ready:
                if await self._at_head():
                    self._schema_ready = True
                else:
                    await self.upgrade()

    async def _at_head(self) -> bool:
        """Whether the schema is already at the newest revision: one query instead of starting Alembic, which
        is most of the time a short-lived process (``coordinator report``) would otherwise spend. Any error
        means "not known to be": the upgrade that follows reports it properly."""
        try:
            async with self.engine.connect() as conn:
                versions = Table(version_table(self.tables.prefix), MetaData(), Column("version_num", String(32)))
                found = await conn.execute(select(versions.c.version_num))
                return [row[0] for row in found] == [SCHEMA_HEAD]
        except (DBAPIError, OSError, TimeoutError):
            return False

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        await self.ensure_schema()
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (DBAPIError, OSError, TimeoutError) as exc:
            if isinstance(exc, IntegrityError | ProgrammingError | DataError):
                raise
            raise self._unavailable(exc) from exc
        self.availability.succeeded()

    # --- writes --------------------------------------------------------------------------------------------

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self.backend == "postgresql" else sqlite.insert(table)

    async def upsert_run(self, testrun: Mapping[str, Any]) -> RunRecord:
        """Mirror one finished TestRun object (idempotent: keyed by its UID); returns what was written."""
        record = run_record(testrun)
        await self.upsert_records([record])
        return record

    async def mirror(self, record: RunRecord) -> None:
        """Write one finished run, sharing the transaction with runs mirrored at the same moment (group commit,
        history/batching.py). Raises ``HistoryUnavailable`` like the other writes."""
        await self._group.submit(record)

    async def upsert_records(self, records: Iterable[RunRecord]) -> int:
        """Write many runs in batches (one transaction per batch); returns how many were written."""
        batch: list[RunRecord] = []
        written = 0
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH:
                written += await self._write_batch(batch)
                batch = []
        if batch:
            written += await self._write_batch(batch)
        return written

    async def _write_batch(self, records: Sequence[RunRecord]) -> int:
        t = self.tables
        now = datetime.now(UTC)
        # A run mirrored twice in one batch (a retried delivery) counts once: the latest record wins.
        unique = list({r.uid: r for r in records}.values())
        async with self._transaction() as conn:
            scenario_ids: dict[tuple[str, str], int] = {}
            for scenario in {(r.scenario.namespace, r.scenario.name): r.scenario for r in unique}.values():
                stmt = self._insert(t.scenarios).values(
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
                }
                for r in unique
            ]
            upsert = self._insert(t.test_runs)
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

    async def purge(self, older_than: datetime) -> int:
        """Delete runs that completed before ``older_than`` (with their events and results) and scenarios
        left without runs; returns how many runs were deleted."""
        t = self.tables
        old = select(t.test_runs.c.uid).where(t.test_runs.c.completed_at < older_than.astimezone(UTC))
        async with self._transaction() as conn:
            await conn.execute(delete(t.chaos_events).where(t.chaos_events.c.run_uid.in_(old)))
            await conn.execute(delete(t.test_results).where(t.test_results.c.run_uid.in_(old)))
            result = await conn.execute(
                delete(t.test_runs).where(t.test_runs.c.completed_at < older_than.astimezone(UTC))
            )
            orphan = ~exists().where(t.test_runs.c.scenario_id == t.scenarios.c.id)
            await conn.execute(delete(t.scenarios).where(orphan))
        return int(result.rowcount or 0)

    # --- reads ---------------------------------------------------------------------------------------------

    async def count_runs(self, namespace: str | None = None) -> int:
        t = self.tables
        query = select(func.count()).select_from(t.test_runs)
        if namespace:
            query = query.where(t.test_runs.c.namespace == namespace)
        async with self._transaction() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def get_run(self, uid: str) -> dict[str, Any] | None:
        """One stored run as a dict of its columns, with its scenario as ``namespace/name``."""
        t = self.tables
        query = (
            select(t.test_runs, t.scenarios.c.namespace.label("scenario_namespace"), t.scenarios.c.name.label("sn"))
            .join(t.scenarios, t.scenarios.c.id == t.test_runs.c.scenario_id)
            .where(t.test_runs.c.uid == uid)
        )
        async with self._transaction() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        data = dict(row)
        data["scenario"] = f"{data.pop('scenario_namespace')}/{data.pop('sn')}"
        if isinstance(data.get("status"), str):  # SQLite hands JSON back as text through some drivers
            data["status"] = json.loads(data["status"])
        return _aware(data)

    async def list_runs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every stored run (of a namespace), oldest first: uid, name, phase, completed_at."""
        t = self.tables
        query = select(t.test_runs.c.uid, t.test_runs.c.name, t.test_runs.c.phase, t.test_runs.c.completed_at)
        if namespace:
            query = query.where(t.test_runs.c.namespace == namespace)
        async with self._transaction() as conn:
            rows = (await conn.execute(query.order_by(t.test_runs.c.completed_at))).mappings().all()
        return [_aware(dict(r)) for r in rows]

    async def events(self, uid: str) -> list[dict[str, Any]]:
        """A stored run's chaos events in ledger order."""
        t = self.tables.chaos_events
        async with self._transaction() as conn:
            rows = (await conn.execute(select(t).where(t.c.run_uid == uid).order_by(t.c.id))).mappings().all()
        return [_aware(dict(r)) for r in rows]

    async def results(self, uid: str) -> list[dict[str, Any]]:
        """A stored run's probe and assertion results."""
        t = self.tables.test_results
        async with self._transaction() as conn:
            rows = (await conn.execute(select(t).where(t.c.run_uid == uid).order_by(t.c.id))).mappings().all()
        return [dict(r) for r in rows]

    async def report(self, filters: ReportFilters, include_runs: bool = False, runs_limit: int = 10000) -> Report:
        """The report's aggregates for the runs matching ``filters``: per scenario runs, pass rate, mean and
        p95 (nearest rank) recovery time, last failures and the recent trend; with ``include_runs`` also the
        runs themselves (newest ``runs_limit``), which JUnit output lists."""
        t = self.tables
        runs, scenarios = t.test_runs, t.scenarios
        async with self._transaction() as conn:
            where: list[ColumnElement[bool]] = []
            if filters.scenario:
                namespace, _, name = filters.scenario.rpartition("/")
                found = select(scenarios.c.id).where(scenarios.c.name == name)
                if namespace:
                    found = found.where(scenarios.c.namespace == namespace)
                ids = list((await conn.execute(found)).scalars())
                if not ids:
                    return Report(datetime.now(UTC), filters, (), source=self.description)
                where.append(runs.c.scenario_id.in_(ids))
            if filters.namespace:
                where.append(runs.c.namespace == filters.namespace)
            if filters.since:
                where.append(runs.c.completed_at >= filters.since.astimezone(UTC))
            condition = and_(true(), *where)

            totals = (
                await conn.execute(
                    select(
                        runs.c.scenario_id,
                        func.count().label("runs"),
                        func.sum(case((runs.c.passed, 1), else_=0)).label("passed"),
                        func.sum(case((runs.c.phase == "Cancelled", 1), else_=0)).label("cancelled"),
                        func.avg(runs.c.recovery_seconds).label("mean_recovery"),
                        func.count(runs.c.recovery_seconds).label("measured"),
                        func.min(runs.c.completed_at).label("first"),
                        func.max(runs.c.completed_at).label("last"),
                    )
                    .where(condition)
                    .group_by(runs.c.scenario_id)
                )
            ).all()
            if not totals:
                return Report(datetime.now(UTC), filters, (), source=self.description)
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

            # Per scenario, three small lookups that the (scenario_id, completed_at, passed, recovery_seconds)
            # index answers without touching other scenarios' rows: the p95 (nearest rank: the ceil(0.95 n)-th
            # smallest measured recovery), the last failures and the trend. They are sent as UNION ALLs of
            # per-scenario LIMIT queries, a few round trips in all; window functions over the whole window
            # would sort every run instead (seconds at 100k runs).
            measured = {row.scenario_id: int(row.measured or 0) for row in totals}
            p95: dict[int, float] = {}
            failures: dict[int, list[RunSummary]] = {}
            trends: dict[int, list[RunSummary]] = {}
            ids = [row.scenario_id for row in totals]
            for chunk in (ids[i : i + UNION_CHUNK] for i in range(0, len(ids), UNION_CHUNK)):
                with_values = [i for i in chunk if measured[i]]
                if with_values:
                    lookups = [
                        select(runs.c.scenario_id, runs.c.recovery_seconds)
                        .where(condition, runs.c.scenario_id == i, runs.c.recovery_seconds.is_not(None))
                        .order_by(runs.c.recovery_seconds)
                        .limit(1)
                        .offset(percentile_rank(measured[i]) - 1)
                        for i in with_values
                    ]
                    for row in await conn.execute(_union(lookups)):
                        p95[row.scenario_id] = row.recovery_seconds
                for extra, limit, into in (
                    (and_(runs.c.passed.is_(False), runs.c.phase != "Cancelled"), LAST_FAILURES, failures),
                    (true(), TREND_POINTS, trends),
                ):
                    lookups = [
                        select(*_summary_columns(runs))
                        .where(condition, extra, runs.c.scenario_id == i)
                        .order_by(runs.c.completed_at.desc())
                        .limit(limit)
                        for i in chunk
                    ]
                    for row in await conn.execute(_union(lookups)):
                        into.setdefault(row.scenario_id, []).append(_summary(row, key(row.scenario_id)))

            listed: tuple[RunSummary, ...] = ()
            if include_runs:
                query = select(*_summary_columns(runs)).where(condition).order_by(runs.c.completed_at.desc())
                rows = await conn.execute(query.limit(runs_limit))
                listed = tuple(_summary(row, key(row.scenario_id)) for row in rows)

        stats = [
            ScenarioStats(
                scenario=key(row.scenario_id),
                type=names[row.scenario_id].type,
                runs=int(row.runs),
                passed=int(row.passed or 0),
                cancelled=int(row.cancelled or 0),
                first_run_at=_utc(row.first),
                last_run_at=_utc(row.last),
                mean_recovery=None if row.mean_recovery is None else round(float(row.mean_recovery), 3),
                p95_recovery=p95.get(row.scenario_id),
                last_failures=tuple(sorted(failures.get(row.scenario_id, []), key=_newest_first)),
                trend=tuple(sorted(trends.get(row.scenario_id, []), key=lambda r: r.completed_at)),
            )
            for row in totals
        ]
        stats.sort(key=lambda s: s.scenario)
        return Report(datetime.now(UTC), filters, tuple(stats), runs=listed[::-1], source=self.description)


def _summary_columns(runs: Table) -> list[ColumnElement[Any]]:
    """The columns a ``RunSummary`` is made of."""
    c = runs.c
    return [c.scenario_id, c.namespace, c.name, c.phase, c.reason, c.message, c.completed_at, c.duration_seconds,
            c.recovery_seconds]  # fmt: skip


def _union(queries: Sequence[Select[Any]]) -> CompoundSelect[Any] | Select[Any]:
    """UNION ALL of queries that each carry their own ORDER BY/LIMIT (wrapped, as SQLite requires)."""
    wrapped = [select(q.subquery()) for q in queries]
    return wrapped[0] if len(wrapped) == 1 else union_all(*wrapped)


def _newest_first(run: RunSummary) -> float:
    return -run.completed_at.timestamp()


def _utc(value: datetime | str) -> datetime:
    """SQLite returns naive datetimes (and aggregates of them as text); everything stored is UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _aware(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _summary(row: Any, scenario: str) -> RunSummary:
    return RunSummary(
        namespace=row.namespace,
        name=row.name,
        scenario=scenario,
        phase=row.phase,
        completed_at=_utc(row.completed_at),
        reason=row.reason,
        message=row.message,
        duration_seconds=row.duration_seconds,
        recovery_seconds=row.recovery_seconds,
    )


async def fetch_report(
    store: HistoryStore,
    filters: ReportFilters,
    cache: ReportCache | None = None,
    include_runs: bool = False,
    ttl: float = 60.0,
) -> Report:
    """The report for ``filters``, from ``cache`` when a fresh copy is there.

    Cache keys include the history's generation, which every mirrored run bumps, so a cached report is never
    older than the newest mirrored run; ``ttl`` only bounds how long unused entries stay.
    """
    if cache is None or ttl <= 0:
        return await store.report(filters, include_runs=include_runs)
    generation = await cache.generation()
    cache_key = f"{generation}:{int(include_runs)}:{filters.cache_key()}"
    hit = await cache.get(cache_key)
    if hit is not None:
        return Report.from_dict(json.loads(hit))
    report = await store.report(filters, include_runs=include_runs)
    await cache.put(cache_key, json.dumps(report.to_dict()), ttl)
    return report


PURGE_INTERVAL = 3600.0  # seconds between retention purges


async def purge_expired_forever(store: HistoryStore, retention_days: int, interval: float = PURGE_INTERVAL) -> None:
    """Apply ``COORDINATOR_HISTORY_RETENTION_DAYS`` at start-up and then every ``interval`` seconds (0 days: never)."""
    if retention_days <= 0:
        return
    while True:
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        try:
            purged = await store.purge(cutoff)
            if purged:
                log.info("history: purged %d run(s) completed before %s", purged, cutoff.isoformat())
        except HistoryUnavailable as exc:
            log.warning("history retention purge skipped: %s", exc)
        await asyncio.sleep(interval)
