"""The history store against real databases: one repository suite, run on SQLite and on PostgreSQL 15;
target locks, live progress and the report cache on real Redis and on their in-process twins."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, func, inspect, select
from sqlalchemy.engine import Connection

from coordinator.domain.percentiles import percentile
from coordinator.domain.timestamps import now_iso
from coordinator.engine.locks import LocalTargetLocks, LockRefused, LockStoreUnavailable, RedisTargetLocks, TargetLocks
from coordinator.history.mirror import SKIP_HISTORY_ANNOTATION, FinishedRunMirror, mirror_deleted_testrun
from coordinator.history.models import SCHEMA_HEAD
from coordinator.history.records import run_record
from coordinator.history.redis import (
    LiveProgress,
    LocalProgress,
    LocalReportCache,
    RedisLockStore,
    RedisProgress,
    RedisReportCache,
)
from coordinator.history.report import ReportFilters, grouped_runs, render_junit
from coordinator.history.store import HistoryStore, HistoryUnavailable, fetch_report
from coordinator.testing.process import free_port
from coordinator.testing.servers import PG_PASSWORD, REDIS_PASSWORD, PostgresServer, RedisServer
from support.testruns import T0, finished_testrun, workflow_child, workflow_run

ALICE = {"username": "alice", "uid": "alice-uid", "groups": ["team-a", "system:authenticated"]}


def _instance() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[HistoryStore]:
    """A fresh instance's tables (unique prefix) in the backend under test."""
    history = HistoryStore(database_url, _instance())
    await history.upgrade()
    yield history
    await history.close()


# --- schema --------------------------------------------------------------------------------------------------


async def test_migrations_create_exactly_the_modelled_tables(store: HistoryStore) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection)
        names = set(store.tables.metadata.tables)
        return [d for d in compare_metadata(context, store.tables.metadata) if _about(d, names)]

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def _about(difference: Any, names: set[str]) -> bool:
    """Differences that concern our tables (the database may hold other instances' tables)."""
    flat = str(difference)
    return any(name in flat for name in names) and "remove_table" not in flat


async def test_upgrade_is_idempotent_and_reports_the_head_revision(store: HistoryStore) -> None:
    assert await store.upgrade() == SCHEMA_HEAD
    assert await store.upgrade() == SCHEMA_HEAD


def _write_first_release_run(connection: Connection, prefix: str, uid: str) -> None:
    """A run as release 0001 wrote it, into the tables as they were then (reflected: today's models have more)."""
    metadata = MetaData()
    scenarios = Table(f"{prefix}_scenarios", metadata, autoload_with=connection)
    runs = Table(f"{prefix}_test_runs", metadata, autoload_with=connection)
    assert "requested_by" not in runs.c
    scenario_id = connection.execute(
        scenarios.insert().values(namespace="shop", name="kill-web", first_seen_at=T0, last_seen_at=T0)
    ).inserted_primary_key[0]
    connection.execute(
        runs.insert().values(
            uid=uid,
            namespace="shop",
            name="old-run",
            scenario_id=scenario_id,
            phase="Passed",
            passed=True,
            dry_run=False,
            completed_at=T0,
            status={"phase": "Passed"},
            mirrored_at=T0,
        )
    )


async def test_a_first_release_database_upgrades_with_its_runs(database_url: str) -> None:
    """Tables made by revision 0001, with runs in them, reach the head: the runs stay, the namespace index
    gains the report's columns (0002), the runs gain requested_by, NULL for them (0003), and the namespace report
    still counts them."""
    from coordinator.history import migrations

    history = HistoryStore(database_url, _instance())
    prefix = history.tables.prefix
    uid = str(uuid.uuid4())
    try:
        async with history.engine.begin() as conn:
            assert await conn.run_sync(migrations.upgrade, prefix, "0001") == "0001"
            await conn.run_sync(_write_first_release_run, prefix, uid)
        assert await history.upgrade() == SCHEMA_HEAD
        old = await history.get_run(uid)
        assert old is not None
        assert old["requested_by"] is None, "nobody was recorded before 0003"

        def namespace_index(connection: Connection) -> list[str | None]:
            indexes = inspect(connection).get_indexes(f"{prefix}_test_runs")
            return next(ix["column_names"] for ix in indexes if ix["name"] == f"{prefix}_runs_namespace_ix")

        async with history.engine.connect() as conn:
            assert await conn.run_sync(namespace_index) == [
                "namespace",
                "scenario_id",
                "completed_at",
                "passed",
                "recovery_seconds",
            ]
        report = await history.report(ReportFilters(namespace="shop"))
        assert report.total_runs == 1
    finally:
        await history.close()


async def test_instances_sharing_a_database_keep_apart(store: HistoryStore, database_url: str) -> None:
    other = HistoryStore(database_url, _instance())
    try:
        await store.upsert_run(finished_testrun())
        assert await other.count_runs() == 0
        assert await store.count_runs() == 1

        def tables(connection: Connection) -> set[str]:
            return set(inspect(connection).get_table_names())

        async with store.engine.connect() as conn:
            names = await conn.run_sync(tables)
        assert {f"{other.tables.prefix}_test_runs", f"{store.tables.prefix}_test_runs"} <= names
    finally:
        await other.close()


# --- writes --------------------------------------------------------------------------------------------------


async def test_upserting_a_run_again_stores_it_once(store: HistoryStore) -> None:
    run = finished_testrun(targets=("web-1", "web-2"))
    for _ in range(3):
        await store.upsert_run(run)
    uid = run["metadata"]["uid"]
    assert await store.count_runs() == 1
    assert len(await store.events(uid)) == 2
    assert len(await store.results(uid)) == 2


async def test_an_upsert_replaces_a_changed_run_wholesale(store: HistoryStore) -> None:
    run = finished_testrun(targets=("web-1", "web-2"))
    await store.upsert_run(run)
    changed = finished_testrun(uid=run["metadata"]["uid"], phase="Failed", targets=("web-3",))
    await store.upsert_run(changed)
    stored = await store.get_run(run["metadata"]["uid"])
    assert stored is not None
    assert stored["phase"] == "Failed"
    assert stored["passed"] is False
    assert [e["target_name"] for e in await store.events(run["metadata"]["uid"])] == ["web-3"]


async def test_a_stored_run_keeps_its_status_and_columns(store: HistoryStore) -> None:
    run = finished_testrun(recovery=2.5)
    await store.upsert_run(run)
    stored = await store.get_run(run["metadata"]["uid"])
    assert stored is not None
    assert (stored["namespace"], stored["name"], stored["scenario"]) == ("shop", "run-1", "shop/kill-web")
    assert stored["completed_at"] == T0
    assert stored["recovery_seconds"] == 2.5
    assert stored["status"]["steps"][0]["name"] == "kill"


async def test_a_stored_run_keeps_who_asked_for_it(store: HistoryStore) -> None:
    asked = finished_testrun(name="asked", requested_by=ALICE)
    unknown = finished_testrun(name="unknown")
    await store.upsert_records([run_record(asked), run_record(unknown)])
    stored = await store.get_run(asked["metadata"]["uid"])
    assert stored is not None
    assert stored["requested_by"] == ALICE
    assert stored["status"]["requestedBy"] == ALICE
    runs = store.tables.test_runs
    async with store.engine.connect() as conn:
        nulls = await conn.execute(select(runs.c.name).where(runs.c.requested_by.is_(None)))
        assert list(nulls.scalars()) == ["unknown"], "no requester is SQL NULL, not the JSON value null"
        assert (await conn.execute(select(func.count()).select_from(runs))).scalar_one() == 2


async def test_events_carry_target_and_timestamps(store: HistoryStore) -> None:
    run = finished_testrun(recovery=2.5)
    await store.upsert_run(run)
    (event,) = await store.events(run["metadata"]["uid"])
    assert (event["fault"], event["target_kind"], event["target_namespace"], event["target_name"]) == (
        "pod-kill",
        "Pod",
        "shop",
        "web-1",
    )
    assert event["injected_at"] == T0 - timedelta(seconds=9)
    assert event["recovered_at"] == T0 - timedelta(seconds=9) + timedelta(seconds=2.5)


async def test_results_hold_assertions_and_probes(store: HistoryStore) -> None:
    run = finished_testrun()
    await store.upsert_run(run)
    results = {(r["kind"], r["name"]): r for r in await store.results(run["metadata"]["uid"])}
    assert results[("assertion", "fast")]["expected"] == "<= 10"
    assert results[("assertion", "fast")]["actual"] == "2.5s"
    assert results[("probe", "web-ready")]["passed"] is True


async def test_bulk_writes_span_several_batches(store: HistoryStore) -> None:
    records = [
        run_record(finished_testrun(name=f"run-{i}", completed=T0 + timedelta(seconds=i), scenario=f"s{i % 3}"))
        for i in range(1203)
    ]
    assert await store.upsert_records(records) == 1203
    assert await store.count_runs() == 1203


async def test_runs_mirrored_together_share_transactions(store: HistoryStore) -> None:
    """100 runs finishing at once (group commit): each stored once, in far fewer transactions."""
    records = [run_record(finished_testrun(name=f"run-{i}", scenario=f"s{i % 4}")) for i in range(100)]
    await asyncio.gather(*(store.mirror(r) for r in records))
    assert await store.count_runs() == 100
    assert store._group.batches < 10, f"{store._group.batches} transactions for 100 runs"


async def test_a_bad_run_in_a_shared_transaction_fails_alone(store: HistoryStore) -> None:
    records = [run_record(finished_testrun(name=f"run-{i}")) for i in range(20)]
    bad = run_record(finished_testrun(name="bad"))
    bad.status["not json"] = {1, 2}  # a set: the JSON column cannot store it
    batch = [*records[:10], bad, *records[10:]]
    outcomes = await asyncio.gather(*(store.mirror(r) for r in batch), return_exceptions=True)
    assert isinstance(outcomes[10], Exception), outcomes[10]
    assert not isinstance(outcomes[10], HistoryUnavailable), "a bad record is not an outage"
    assert [o for i, o in enumerate(outcomes) if i != 10] == [None] * 20, "the others were written"
    assert await store.count_runs() == 20


async def test_purge_deletes_old_runs_with_their_rows(store: HistoryStore) -> None:
    old = finished_testrun(name="old", completed=T0 - timedelta(days=100))
    new = finished_testrun(name="new", completed=T0)
    await store.upsert_run(old)
    await store.upsert_run(new)
    assert await store.purge(T0 - timedelta(days=90)) == 1
    assert [r["name"] for r in await store.list_runs()] == ["new"]
    assert await store.events(old["metadata"]["uid"]) == []
    assert await store.results(old["metadata"]["uid"]) == []


# --- report aggregates ---------------------------------------------------------------------------------------

RECOVERIES = [1.0, 2.0, 3.0, 4.0, 10.0]


@pytest.fixture
async def filled(store: HistoryStore) -> HistoryStore:
    """shop/kill-web: 5 runs, 2 failed; shop/drain: 2 passed; ops/kill-web: 1 passed (another namespace)."""
    for i, recovery in enumerate(RECOVERIES):
        phase = "Failed" if i in (1, 3) else "Passed"
        await store.upsert_run(
            finished_testrun(name=f"kw-{i}", phase=phase, recovery=recovery, completed=T0 + timedelta(minutes=i))
        )
    for i in range(2):
        await store.upsert_run(
            finished_testrun(name=f"dr-{i}", scenario="drain", recovery=None, completed=T0 + timedelta(minutes=i))
        )
    await store.upsert_run(finished_testrun(name="other", namespace="ops", completed=T0 - timedelta(days=2)))
    return store


async def test_report_counts_runs_and_pass_rates_per_scenario(filled: HistoryStore) -> None:
    report = await filled.report(ReportFilters())
    counts = {s.scenario: (s.runs, s.passed) for s in report.scenarios}
    assert counts == {"ops/kill-web": (1, 1), "shop/drain": (2, 2), "shop/kill-web": (5, 3)}


async def test_report_computes_mean_and_p95_recovery(filled: HistoryStore) -> None:
    report = await filled.report(ReportFilters(scenario="shop/kill-web"))
    (stats,) = report.scenarios
    assert stats.mean_recovery == pytest.approx(sum(RECOVERIES) / len(RECOVERIES))
    assert stats.p95_recovery == percentile(RECOVERIES) == 10.0


async def test_report_has_no_recovery_where_none_was_measured(filled: HistoryStore) -> None:
    report = await filled.report(ReportFilters(scenario="shop/drain"))
    assert (report.scenarios[0].mean_recovery, report.scenarios[0].p95_recovery) == (None, None)


async def test_report_flags_mixed_verdicts_as_flaky(filled: HistoryStore) -> None:
    report = await filled.report(ReportFilters(namespace="shop"))
    assert {s.scenario: s.flaky for s in report.scenarios} == {"shop/drain": False, "shop/kill-web": True}


async def test_report_lists_last_failures_newest_first(filled: HistoryStore) -> None:
    report = await filled.report(ReportFilters(scenario="shop/kill-web"))
    assert [f.name for f in report.scenarios[0].last_failures] == ["kw-3", "kw-1"]


async def test_report_trend_is_in_time_order(filled: HistoryStore) -> None:
    report = await filled.report(ReportFilters(scenario="shop/kill-web"))
    assert [r.recovery_seconds for r in report.scenarios[0].trend] == RECOVERIES


@pytest.mark.parametrize(
    ("filters", "scenarios"),
    [
        (ReportFilters(namespace="ops"), ["ops/kill-web"]),
        (ReportFilters(scenario="kill-web"), ["ops/kill-web", "shop/kill-web"]),
        (ReportFilters(scenario="shop/kill-web"), ["shop/kill-web"]),
        (ReportFilters(scenario="nope"), []),
        (ReportFilters(since=T0 - timedelta(days=1)), ["shop/drain", "shop/kill-web"]),
    ],
)
async def test_report_filters(filled: HistoryStore, filters: ReportFilters, scenarios: list[str]) -> None:
    report = await filled.report(filters)
    assert [s.scenario for s in report.scenarios] == scenarios


async def test_report_lists_runs_only_when_asked(filled: HistoryStore) -> None:
    without = await filled.report(ReportFilters(namespace="shop"))
    listed = await filled.report(ReportFilters(namespace="shop"), include_runs=True)
    assert without.runs == ()
    assert len(listed.runs) == 7


def test_the_json_report_lists_every_run_with_its_correlation_id_and_requester(
    database_url: str, tmp_path: Path
) -> None:
    """``coordinator report --format json`` over a store holding runs with and without a recorded requester."""
    instance = _instance()

    async def fill() -> list[dict[str, Any]]:
        history = HistoryStore(database_url, instance)
        runs = [
            finished_testrun(name="asked", requested_by=ALICE),
            finished_testrun(name="failed", phase="Failed", requested_by=ALICE, completed=T0 + timedelta(minutes=1)),
            finished_testrun(name="unknown", completed=T0 + timedelta(minutes=2)),
        ]
        try:
            await history.upgrade()
            await history.upsert_records([run_record(run) for run in runs])
        finally:
            await history.close()
        return runs

    runs = asyncio.run(fill())
    env = {key: value for key, value in os.environ.items() if not key.startswith("COORDINATOR_")}
    env |= {"COORDINATOR_DATABASE_URL": database_url, "COORDINATOR_INSTANCE_NAME": instance}
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", "report", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    listed = {run["name"]: run for run in data["runs"]}
    uids = {run["metadata"]["name"]: run["metadata"]["uid"] for run in runs}
    assert {name: run["correlationId"] for name, run in listed.items()} == uids
    assert listed["asked"]["requestedBy"] == ALICE
    assert listed["unknown"]["requestedBy"] is None
    (failure,) = data["scenarios"][0]["last_failures"]
    assert (failure["name"], failure["correlationId"], failure["requestedBy"]) == ("failed", uids["failed"], ALICE)


async def test_report_is_served_from_the_cache_until_a_run_is_mirrored(filled: HistoryStore) -> None:
    cache = LocalReportCache()
    first = await fetch_report(filled, ReportFilters(namespace="shop"), cache)
    await filled.upsert_run(finished_testrun(name="late", completed=T0 + timedelta(hours=1)))
    cached = await fetch_report(filled, ReportFilters(namespace="shop"), cache)
    await cache.bump()
    fresh = await fetch_report(filled, ReportFilters(namespace="shop"), cache)
    assert cached.total_runs == first.total_runs == 7
    assert fresh.total_runs == 8


# --- workflow runs -------------------------------------------------------------------------------------------


def _game_day() -> list[dict[str, Any]]:
    """A workflow run shop/gd-1 of shop/game-day with two children (kill-cache passed, kill-db failed), and a
    plain run of a ChaosScenario that is also named game-day."""
    parent = workflow_run(name="gd-1", workflow="game-day", completed=T0 + timedelta(minutes=30))
    return [
        workflow_child(parent, "kill-db", "kill-db", phase="Failed", completed=T0 + timedelta(minutes=28)),
        workflow_child(parent, "kill-cache", "kill-cache", completed=T0 + timedelta(minutes=29)),
        parent,
        finished_testrun(name="plain", scenario="game-day", completed=T0 + timedelta(minutes=31)),
    ]


async def test_a_workflow_run_and_its_children_keep_their_relation(store: HistoryStore) -> None:
    kill_db, _, parent, plain = _game_day()
    await store.upsert_records([run_record(run) for run in (kill_db, parent, plain)])
    stored = await store.get_run(parent["metadata"]["uid"])
    assert stored is not None
    assert (stored["workflow"], stored["scenario"], stored["parent_uid"]) == ("shop/game-day", "shop/game-day", None)
    assert [(n["name"], n["phase"]) for n in stored["nodes"]] == [
        ("kill-cache", "Passed"),
        ("approve", "Passed"),
        ("kill-db", "Failed"),
        ("report", "Skipped"),
    ]
    child = await store.get_run(kill_db["metadata"]["uid"])
    assert child is not None
    assert (child["parent_uid"], child["parent_name"], child["workflow_node"], child["workflow"]) == (
        parent["metadata"]["uid"],
        "gd-1",
        "kill-db",
        None,
    )
    alone = await store.get_run(plain["metadata"]["uid"])
    assert alone is not None
    assert (alone["workflow"], alone["nodes"], alone["parent_uid"], alone["workflow_node"]) == (None, None, None, None)


async def test_the_report_keeps_a_workflow_apart_and_its_children_under_it(store: HistoryStore) -> None:
    runs = _game_day()
    await store.upsert_records([run_record(run) for run in runs])
    report = await store.report(ReportFilters(namespace="shop"), include_runs=True)
    assert {(s.scenario, s.workflow): (s.runs, s.passed) for s in report.scenarios} == {
        ("shop/game-day", False): (1, 1),
        ("shop/game-day", True): (1, 0),
        ("shop/kill-cache", False): (1, 1),
        ("shop/kill-db", False): (1, 0),
    }
    (workflow,) = [s for s in report.scenarios if s.workflow]
    assert (workflow.type, workflow.mean_recovery, workflow.p95_recovery) == (None, 2.0, 2.0)
    assert [r.name for r in workflow.last_failures] == ["gd-1"]
    assert [n["name"] for n in workflow.trend[0].nodes] == ["kill-cache", "approve", "kill-db", "report"]
    scenario = next(s for s in report.scenarios if s.scenario == "shop/game-day" and not s.workflow)
    assert scenario.type == "service_restart", "the workflow's record did not overwrite the scenario's type"
    groups = {g.run.name: [c.node for c in g.children] for g in grouped_runs(report.runs)}
    assert groups == {"gd-1": ["kill-cache", "kill-db"], "plain": []}
    root = ET.fromstring(render_junit(report))  # noqa: S314 - our own output, not untrusted input
    suites = {s.get("name"): [c.get("name") for c in s.iter("testcase")] for s in root.iter("testsuite")}
    assert suites == {"shop/game-day": ["shop/plain"], "shop/gd-1": ["kill-cache", "approve", "kill-db", "report"]}


async def test_a_workflow_alone_in_its_row_is_reported_as_a_workflow(store: HistoryStore) -> None:
    parent = _game_day()[2]
    await store.upsert_records([run_record(parent), run_record(workflow_run(name="gd-0", phase="Passed"))])
    (stats,) = (await store.report(ReportFilters())).scenarios
    assert (stats.scenario, stats.workflow, stats.runs, stats.passed) == ("shop/game-day", True, 2, 1)
    assert (stats.p95_recovery, [r.name for r in stats.last_failures]) == (2.0, ["gd-1"])


async def test_filtering_by_a_workflow_name_reports_its_runs(store: HistoryStore) -> None:
    await store.upsert_records([run_record(run) for run in _game_day()])
    report = await store.report(ReportFilters(scenario="shop/game-day"))
    assert sorted((s.scenario, s.workflow, s.runs) for s in report.scenarios) == [
        ("shop/game-day", False, 1),
        ("shop/game-day", True, 1),
    ]


async def test_purge_takes_a_workflow_run_with_its_children(store: HistoryStore) -> None:
    await store.upsert_records([run_record(run) for run in _game_day()])
    assert await store.purge(T0 + timedelta(hours=1)) == 4
    assert await store.count_runs() == 0


# --- failures and secrets ------------------------------------------------------------------------------------


async def test_an_unreachable_database_is_history_unavailable() -> None:
    store = HistoryStore(f"postgresql+asyncpg://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/postgres", _instance())
    try:
        with pytest.raises(HistoryUnavailable) as caught:
            await store.upsert_run(finished_testrun())
    finally:
        await store.close()
    assert PG_PASSWORD not in str(caught.value)
    assert "***" in str(caught.value)


async def test_the_password_never_reaches_the_log(postgres: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = HistoryStore(postgres.url(), _instance())
    try:
        await store.upgrade()
        await store.upsert_run(finished_testrun())
    finally:
        await store.close()
    assert PG_PASSWORD not in store.description
    assert "history store postgresql+asyncpg://postgres:***@127.0.0.1" in caplog.text
    assert PG_PASSWORD not in caplog.text


# --- Redis and the in-process twins --------------------------------------------------------------------------


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture(params=["redis", "in-process"])
def locks(request: pytest.FixtureRequest) -> TargetLocks:
    if request.param == "in-process":
        return LocalTargetLocks()
    client: aioredis.Redis = request.getfixturevalue("redis_client")
    return RedisTargetLocks(RedisLockStore(client, _instance()))


async def test_a_second_holder_of_a_target_is_refused(locks: TargetLocks) -> None:
    async with locks.hold(["Deployment/shop/web"], ttl=30, owner="shop/run-1"):
        with pytest.raises(LockRefused) as refused:
            async with locks.hold(["Deployment/shop/web"], ttl=30, owner="shop/run-2"):
                pytest.fail("two holders of one target")
    assert (refused.value.key, refused.value.holder) == ("Deployment/shop/web", "shop/run-1")


async def test_two_concurrent_runs_never_hold_one_target_together(locks: TargetLocks) -> None:
    held: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def run(name: str) -> str:
        try:
            async with locks.hold(["Pod/shop/web-1"], ttl=30, owner=name):
                held.append(name)
                overlaps.append(tuple(held))
                await asyncio.sleep(0.2)
                held.remove(name)
                return "ran"
        except LockRefused:
            return "refused"

    outcomes = await asyncio.gather(run("a"), run("b"))
    assert sorted(outcomes) == ["ran", "refused"]
    assert all(len(o) == 1 for o in overlaps)


async def test_a_released_target_can_be_held_again(locks: TargetLocks) -> None:
    async with locks.hold(["Pod/shop/web-1"], ttl=30, owner="a"):
        pass
    async with locks.hold(["Pod/shop/web-1"], ttl=30, owner="b") as lease:
        assert lease.owner == "b"


async def test_locks_are_all_or_nothing(locks: TargetLocks) -> None:
    async with locks.hold(["Pod/shop/b"], ttl=30, owner="first"):
        with pytest.raises(LockRefused):
            async with locks.hold(["Pod/shop/a", "Pod/shop/b"], ttl=30, owner="second"):
                pass
    async with locks.hold(["Pod/shop/a"], ttl=30, owner="third"):
        pass  # "a" was not left held by the refused attempt


async def test_a_held_lock_is_renewed_past_its_ttl(locks: TargetLocks) -> None:
    async with locks.hold(["Pod/shop/x"], ttl=0.3, owner="long"):
        await asyncio.sleep(1.0)
        with pytest.raises(LockRefused):
            async with locks.hold(["Pod/shop/x"], ttl=0.3, owner="other"):
                pass


async def test_a_crashed_holder_blocks_only_until_the_ttl(redis_client: aioredis.Redis) -> None:
    prefix = _instance()
    # What a crashed operator leaves: the key, with no process renewing it.
    await redis_client.set(f"{prefix}:lock:Pod/shop/x", "token crashed-run", px=300)
    locks = RedisTargetLocks(RedisLockStore(redis_client, prefix))
    with pytest.raises(LockRefused):
        async with locks.hold(["Pod/shop/x"], ttl=30, owner="next"):
            pass
    await asyncio.sleep(0.5)
    async with locks.hold(["Pod/shop/x"], ttl=30, owner="next") as lease:
        assert lease.owner == "next"


async def test_without_redis_nobody_takes_a_target(caplog: pytest.LogCaptureFixture) -> None:
    """Fail closed: an in-process fallback knew nothing of the locks held in Redis (two runs on one target)."""
    client = aioredis.Redis.from_url(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    locks = RedisTargetLocks(RedisLockStore(client, _instance()))
    try:
        for owner in ("a", "b"):
            with pytest.raises(LockStoreUnavailable, match="lock store is unreachable"):
                async with locks.hold(["Pod/shop/x"], ttl=30, owner=owner):
                    pytest.fail("a target taken while the lock store cannot be asked")
    finally:
        await client.aclose()
    assert caplog.text.count("runs wait for their target locks") == 1


async def test_a_lock_the_store_forgot_is_lost_and_taken_by_nobody_else_meanwhile(
    redis_client: aioredis.Redis,
) -> None:
    """Redis restarted empty: the holder finds out at its next renewal and must stop."""
    prefix = _instance()
    locks = RedisTargetLocks(RedisLockStore(redis_client, prefix))
    async with locks.hold(["Deployment/shop/web"], ttl=0.6, owner="first") as lease:
        assert not lease.lapsed
        await redis_client.delete(f"{prefix}:lock:Deployment/shop/web")  # what a restart without persistence does
        await asyncio.sleep(0.5)  # one renewal (every ttl/3) later
        assert lease.lapsed
        assert "no longer holds it" in lease.why_lapsed()


async def test_a_lock_that_cannot_be_renewed_lapses_before_the_store_lets_it_go(
    redis_server: RedisServer,
) -> None:
    """The holder's own deadline (from when it sent its last renewal) comes before the key's expiry in Redis."""
    prefix = _instance()
    client = aioredis.Redis.from_url(redis_server.url)
    locks = RedisTargetLocks(RedisLockStore(client, prefix))
    try:
        async with locks.hold(["Deployment/shop/web"], ttl=1.0, owner="first") as lease:
            deadline = lease.valid_until
            remaining = await client.pttl(f"{prefix}:lock:Deployment/shop/web")
            assert deadline - time.monotonic() <= remaining / 1000 + 0.01
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "in-process"])
def progress(request: pytest.FixtureRequest) -> LiveProgress:
    if request.param == "in-process":
        return LocalProgress()
    return RedisProgress(request.getfixturevalue("redis_client"), _instance())


async def test_live_progress_merges_updates(progress: LiveProgress) -> None:
    await progress.put("uid-1", {"phase": "Running", "step": 0})
    await progress.put("uid-1", {"step": 1})
    assert await progress.get("uid-1") == {"phase": "Running", "step": 1}
    assert await progress.get("uid-2") is None


async def test_the_redis_report_cache_expires_and_is_retired_by_bump(redis_client: aioredis.Redis) -> None:
    cache = RedisReportCache(redis_client, _instance())
    generation = await cache.generation()
    await cache.put("k", "v", ttl=0.3)
    assert await cache.get("k") == "v"
    await asyncio.sleep(0.5)
    assert await cache.get("k") is None
    await cache.bump()
    assert await cache.generation() == generation + 1


# --- the deletion handler's mirror ---------------------------------------------------------------------------


async def test_a_run_deleted_before_its_mirror_is_written_on_deletion(store: HistoryStore) -> None:
    run = finished_testrun()
    cache = LocalReportCache()
    # The API server is asked only while the database is down (for the skip-history annotation).
    await mirror_deleted_testrun(store, cache, None, run, 900, logging.getLogger("test"))  # type: ignore[arg-type]
    assert (await store.get_run(run["metadata"]["uid"])) is not None
    assert await cache.generation() == 1, "the report cache is retired"


async def test_a_deleted_run_waits_for_the_database_up_to_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    store = HistoryStore(f"postgresql+asyncpg://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/postgres", _instance())
    run = finished_testrun(name="doomed")
    run["metadata"]["deletionTimestamp"] = now_iso()
    started = time.monotonic()
    try:
        await mirror_deleted_testrun(store, LocalReportCache(), None, run, 1.5, logging.getLogger("test"))  # type: ignore[arg-type]
    finally:
        await store.close()
    assert 1.0 <= time.monotonic() - started < 10, "it waited for the bound, then let the run go"
    assert "shop/doomed let go without reaching the history" in caplog.text
    assert "COORDINATOR_HISTORY_DELETE_WAIT" in caplog.text


async def test_a_deleted_run_with_skip_history_goes_at_once(store: HistoryStore) -> None:
    run = finished_testrun(name="skipped")
    run["metadata"]["annotations"] = {SKIP_HISTORY_ANNOTATION: "true"}
    await mirror_deleted_testrun(store, LocalReportCache(), None, run, 900, logging.getLogger("test"))  # type: ignore[arg-type]
    assert await store.count_runs() == 0


# --- a database that refuses us, and one that goes away ------------------------------------------------------


@pytest.mark.parametrize("wrong", ["password", "database"])
async def test_a_refusing_database_is_reported_once_with_its_cause(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture, wrong: str
) -> None:
    url = (
        postgres.url().replace(PG_PASSWORD, "not-the-password")
        if wrong == "password"
        else postgres.url(database="nosuch")
    )
    store = HistoryStore(url, _instance())
    try:
        for _ in range(3):
            with pytest.raises(HistoryUnavailable) as raised:
                await store.upsert_run(finished_testrun())
            assert raised.value.permanent
        with pytest.raises(HistoryUnavailable) as explained:
            await store.ping()  # what /readyz shows
    finally:
        await store.close()
    cause = "InvalidPasswordError" if wrong == "password" else "InvalidCatalogNameError"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert cause in errors[0].getMessage()
    assert "COORDINATOR_DATABASE_URL" in errors[0].getMessage()
    assert "refused" in str(explained.value)
    assert cause in str(explained.value)
    assert "not-the-password" not in caplog.text


async def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coordinator.history")
    store = HistoryStore(postgres.url(), _instance())
    runs = [finished_testrun(name=f"run-{i}") for i in range(20)]

    async def write(run: dict[str, Any]) -> None:
        while True:
            try:
                await store.mirror(run_record(run))
                return
            except HistoryUnavailable:
                await store.availability.wait()

    try:
        await store.upgrade()
        postgres.stop()
        try:
            writers = [asyncio.create_task(write(run)) for run in runs]
            await asyncio.sleep(4)
            assert not store.availability.up
            assert "20 finished run(s) wait" in store.availability.explain()
        finally:
            postgres.start()
        await asyncio.wait_for(asyncio.gather(*writers), timeout=30)
        assert await store.count_runs() == 20
    finally:
        await store.close()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("coordinator.history")]
    assert len([m for m in messages if "unavailable" in m]) == 1, messages
    assert len([m for m in messages if "is back after" in m]) == 1, messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- a finishing run's own mirror ---------------------------------------------------------------------------


async def test_a_finishing_run_mirrors_itself(store: HistoryStore) -> None:
    run = finished_testrun()
    cache = LocalReportCache()
    synced = await FinishedRunMirror(store, cache)(run)
    assert synced is not None
    assert (synced["synced"], synced["store"]) == (True, store.backend)
    assert synced["syncedAt"] >= run["status"]["completedAt"]
    assert (await store.get_run(run["metadata"]["uid"])) is not None
    assert await cache.generation() == 1, "the report cache is retired"


async def test_a_finishing_run_leaves_an_unreachable_database_to_the_timer() -> None:
    store = HistoryStore(f"postgresql+asyncpg://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/postgres", _instance())
    try:
        assert await FinishedRunMirror(store, LocalReportCache())(finished_testrun()) is None
    finally:
        await store.close()


async def test_a_finishing_run_does_not_wait_on_a_database_that_never_answers() -> None:
    """A server that accepts connections and says nothing: the run gives up after the mirror's timeout."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = HistoryStore(f"postgresql+asyncpg://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres", _instance())
    started = asyncio.get_running_loop().time()
    try:
        assert await FinishedRunMirror(store, LocalReportCache(), timeout=0.5)(finished_testrun()) is None
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        for writer in held:
            writer.close()
        server.close()
        await store.close()


async def test_a_finishing_run_the_store_refuses_is_left_to_the_timer(
    store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    run = finished_testrun(name="odd")
    run["status"]["not json"] = {1, 2}  # a set: the JSON column cannot store it
    assert await FinishedRunMirror(store, LocalReportCache())(run) is None
    assert "shop/odd left to the history timer" in caplog.text
    assert await store.count_runs() == 0


async def test_a_finishing_run_with_an_unreadable_status_is_left_to_the_timer(store: HistoryStore) -> None:
    run = finished_testrun()
    del run["status"]["phase"]
    assert await FinishedRunMirror(store, LocalReportCache())(run) is None
    assert await store.count_runs() == 0


async def test_an_unwritable_sqlite_location_is_history_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = HistoryStore(f"sqlite+aiosqlite:///{blocker / 'history.db'}", _instance())
    try:
        with pytest.raises(HistoryUnavailable, match="history database sqlite"):
            await store.upgrade()
    finally:
        await store.close()


async def test_the_database_pool_never_opens_more_than_its_size_and_overflow(postgres: PostgresServer) -> None:
    """COORDINATOR_DATABASE_POOL_SIZE / _MAX_OVERFLOW bound the connections PostgreSQL sees from one process."""
    history = HistoryStore(postgres.url(), _instance(), pool_size=2, max_overflow=1)
    watcher = HistoryStore(postgres.url(), _instance(), pool_size=1, max_overflow=0)
    from sqlalchemy import text

    async def ours() -> int:
        async with watcher.engine.connect() as conn:
            # Every backend but the watcher's own: the tests' database serves nobody else meanwhile.
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            )
            return int(found.scalar_one())

    async def hold() -> None:
        async with history.engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(1.5)"))

    try:
        before = await ours()
        holders = asyncio.gather(*(hold() for _ in range(6)))
        seen: list[int] = []
        while not holders.done():  # sampled for as long as the six callers take (two rounds of 1.5 s)
            seen.append(await ours() - before)
        await holders
        assert max(seen) == 3, f"at most {max(seen)} connections while six callers wanted one (size 2 + overflow 1)"
    finally:
        await history.close()
        await watcher.close()


async def test_the_redis_pool_never_opens_more_than_its_size(redis_server: RedisServer) -> None:
    """COORDINATOR_REDIS_POOL_SIZE bounds the connections Redis sees; the other commands wait for one."""
    from coordinator.history.redis import redis_services

    services = redis_services(redis_server.url, _instance(), announce=False, max_connections=2)
    watcher = aioredis.Redis.from_url(redis_server.url)
    assert services.client is not None
    client = services.client
    try:
        before = len(await watcher.client_list())
        # Four commands that each hold their connection for 1 s (BLPOP on an empty list): two rounds, the second
        # waiting about 1 s for a connection (the pool's wait is bounded by 2 s).
        waiting = asyncio.gather(*(client.blpop([f"{_instance()}-empty"], timeout=1) for _ in range(4)))
        seen: list[int] = []
        while not waiting.done():
            seen.append(len(await watcher.client_list()) - before)
        assert await waiting == [None] * 4, "every command ran, two at a time"
        assert max(seen) == 2, f"at most {max(seen)} connections for four waiting commands (pool size 2)"
    finally:
        await services.close()
        await watcher.aclose()


# --- adapter metrics -------------------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    from coordinator.observability.metrics import REGISTRY

    # The registry adds constant labels (service, instance, version) to every sample: match on the ones given.
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_history_operations_and_the_pool_are_measured(postgres: PostgresServer) -> None:
    """Real PostgreSQL: each operation is counted with its result and timed; the pool gauge follows checkouts."""
    from sqlalchemy import text

    from coordinator.history.instruments import listen
    from coordinator.observability.metrics import instrument_history

    store = HistoryStore(postgres.url(), _instance(), pool_size=2, max_overflow=0)
    instrument_history(store)
    try:
        await store.upgrade()
        upserts = _sample("coordinator_history_operations_total", operation="upsert", result="ok")
        timed = _sample("coordinator_history_operation_duration_seconds_count", operation="upsert")
        await store.upsert_run(finished_testrun(name="measured"))
        assert _sample("coordinator_history_operations_total", operation="upsert", result="ok") == upserts + 1
        assert _sample("coordinator_history_operation_duration_seconds_count", operation="upsert") == timed + 1
        async with store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            assert _sample("coordinator_history_pool_connections", state="in_use") == 1
        assert _sample("coordinator_history_pool_connections", state="in_use") == 0
        assert _sample("coordinator_history_pool_connections", state="idle") >= 1
    finally:
        await store.close()
    down = HistoryStore(f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/none", _instance())
    instrument_history(down)
    errors = _sample("coordinator_history_operations_total", operation="count_runs", result="error")
    try:
        with pytest.raises(HistoryUnavailable):
            await down.count_runs()
        assert _sample("coordinator_history_operations_total", operation="count_runs", result="error") == errors + 1
    finally:
        await down.close()
        listen(None)


async def test_report_cache_hits_and_misses_are_counted(store: HistoryStore, redis_server: RedisServer) -> None:
    """Real Redis: the first report is a miss, the same one again a hit, and an unreachable Redis an error."""
    from coordinator.history.instruments import listen
    from coordinator.observability.metrics import instrument_history

    instrument_history(store)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        cache = RedisReportCache(client, _instance())
        before = {r: _sample("coordinator_cache_requests_total", result=r) for r in ("hit", "miss", "error")}
        await fetch_report(store, ReportFilters(namespace="shop"), cache)
        await fetch_report(store, ReportFilters(namespace="shop"), cache)
        gone = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        await fetch_report(store, ReportFilters(namespace="shop"), RedisReportCache(gone, _instance()))
        await gone.aclose()
        after = {r: _sample("coordinator_cache_requests_total", result=r) for r in ("hit", "miss", "error")}
        assert {r: after[r] - before[r] for r in after} == {"hit": 1, "miss": 1, "error": 1}
    finally:
        await client.aclose()
        listen(None)


async def test_live_progress_expires_after_its_own_ttl(redis_client: aioredis.Redis) -> None:
    """COORDINATOR_PROGRESS_TTL: the hash's expiry in real Redis is the configured one, renewed by each update."""
    progress = RedisProgress(redis_client, _instance(), ttl=120)
    await progress.put("u1", {"phase": "Running"})
    key = progress._key("u1")
    assert 115 <= await redis_client.ttl(key) <= 120
    await redis_client.expire(key, 5)
    await progress.put("u1", {"step": 1})
    assert 115 <= await redis_client.ttl(key) <= 120, "an update renews the expiry"
    assert await progress.get("u1") == {"phase": "Running", "step": 1}
