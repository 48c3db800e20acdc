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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Column,
    MetaData,
    String,
    Table,
    delete,
    event,
    exists,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from coordinator.history import queries
from coordinator.history.availability import HistoryAvailability
from coordinator.history.batching import GroupCommit
from coordinator.history.cache import ReportCache
from coordinator.history.instruments import INSTRUMENTS
from coordinator.history.models import SCHEMA_HEAD, HistoryTables, history_tables, table_prefix, version_table
from coordinator.history.records import RunRecord, run_record
from coordinator.history.report import (
    Report,
    ReportFilters,
)
from coordinator.history.urls import masked

if TYPE_CHECKING:
    from coordinator.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

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

    def __init__(
        self, url: str | URL, instance_name: str = "test-coordinator", *, pool_size: int = 5, max_overflow: int = 10
    ) -> None:
        self.url = make_url(url)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
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
        return cls(
            database_url(settings),
            settings.instance_name,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )

    async def ping(self) -> bool:
        """Whether the database answers (for /readyz): one ``SELECT 1``. During an outage it does not ask: it
        raises ``HistoryUnavailable`` explaining the outage (cause, since when, who waits, next attempt)."""
        if not self.availability.up:
            raise HistoryUnavailable(self.availability.explain(), self.availability.permanent)
        await self._probe()
        return True

    async def _probe(self) -> None:
        async with self._transaction("ping") as conn:
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
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
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
    async def _transaction(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """One transaction of ``operation`` (its name in ``coordinator_history_operations_total``)."""
        started = time.perf_counter()
        result = "error"
        try:
            await self.ensure_schema()
            async with self.engine.begin() as conn:
                yield conn
            result = "ok"
        except (DBAPIError, OSError, TimeoutError) as exc:
            if isinstance(exc, IntegrityError | ProgrammingError | DataError):
                raise
            raise self._unavailable(exc) from exc
        finally:
            INSTRUMENTS.operation(operation, result, time.perf_counter() - started)
        self.availability.succeeded()

    # --- writes --------------------------------------------------------------------------------------------

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
        # A run mirrored twice in one batch (a retried delivery) counts once: the latest record wins.
        unique = list({r.uid: r for r in records}.values())
        async with self._transaction("upsert") as conn:
            return await queries.write_runs(conn, self.tables, self.backend, unique)

    async def purge(self, older_than: datetime) -> int:
        """Delete runs that completed before ``older_than`` (with their events and results) and scenarios
        left without runs; returns how many runs were deleted."""
        t = self.tables
        old = select(t.test_runs.c.uid).where(t.test_runs.c.completed_at < older_than.astimezone(UTC))
        async with self._transaction("purge") as conn:
            await conn.execute(delete(t.chaos_events).where(t.chaos_events.c.run_uid.in_(old)))
            await conn.execute(delete(t.test_results).where(t.test_results.c.run_uid.in_(old)))
            result = await conn.execute(
                delete(t.test_runs).where(t.test_runs.c.completed_at < older_than.astimezone(UTC))
            )
            orphan = ~exists().where(t.test_runs.c.scenario_id == t.scenarios.c.id)
            await conn.execute(delete(t.scenarios).where(orphan))
        return int(result.rowcount or 0)

    # --- reads (history/queries.py) ---------------------------------------------------------------------

    async def count_runs(self, namespace: str | None = None) -> int:
        async with self._transaction("count_runs") as conn:
            return await queries.count_runs(conn, self.tables, namespace)

    async def get_run(self, uid: str) -> dict[str, Any] | None:
        """One stored run as a dict of its columns, with its scenario as ``namespace/name``."""
        async with self._transaction("get_run") as conn:
            return await queries.get_run(conn, self.tables, uid)

    async def list_runs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every stored run (of a namespace), oldest first: uid, name, phase, completed_at."""
        async with self._transaction("list_runs") as conn:
            return await queries.list_runs(conn, self.tables, namespace)

    async def events(self, uid: str) -> list[dict[str, Any]]:
        """A stored run's chaos events in ledger order."""
        async with self._transaction("events") as conn:
            return await queries.events(conn, self.tables, uid)

    async def results(self, uid: str) -> list[dict[str, Any]]:
        """A stored run's probe and assertion results."""
        async with self._transaction("results") as conn:
            return await queries.results(conn, self.tables, uid)

    async def latest_uid(self, namespace: str, name: str) -> str | None:
        """The UID of the last stored run named ``namespace/name``, or None."""
        async with self._transaction("latest_uid") as conn:
            return await queries.latest_uid(conn, self.tables, namespace, name)

    async def read(self, query: Callable[[AsyncConnection, HistoryTables], Awaitable[T]]) -> T:
        """Run ``query`` (a read of another module's, such as the dashboard's queries) in a transaction of this
        store, with its tables; raises ``HistoryUnavailable`` like the store's own reads."""
        async with self._transaction("read") as conn:
            return await query(conn, self.tables)

    async def report(self, filters: ReportFilters, include_runs: bool = False, runs_limit: int = 10000) -> Report:
        """The report's aggregates for the runs matching ``filters`` (history/queries.py ``report``)."""
        async with self._transaction("report") as conn:
            return await queries.report(conn, self.tables, filters, include_runs, runs_limit, self.description)


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
