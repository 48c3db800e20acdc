"""``coordinator history runs|events|results`` against real databases (SQLite and PostgreSQL 15): the filters, the
keyset paging, and the indexes migration 0005 added for them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Select, Table, inspect, select, text
from sqlalchemy.engine import Connection

from coordinator.history import browse
from coordinator.history.browse import Cursor, HistoryQuery, Page
from coordinator.history.records import run_record
from coordinator.history.store import HistoryStore
from coordinator.testing.servers import PostgresServer
from support.testruns import T0, finished_testrun


def _instance() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url()


def _runs() -> list[dict[str, Any]]:
    """shop/kill-web: 4 runs (kw-2 failed, on web-2; kw-0 and kw-1 completed at the same instant, so paging breaks
    the tie by UID); shop/drain: 2 runs with a node-drain of node-1, one with a skipped and an errored assertion;
    ops/kill-web: 1 run two days earlier."""
    runs = [
        finished_testrun(name="kw-0", completed=T0),
        finished_testrun(name="kw-1", completed=T0),
        finished_testrun(name="kw-2", phase="Failed", targets=("web-2",), completed=T0 + timedelta(minutes=2)),
        finished_testrun(name="kw-3", targets=("web-1", "web-2"), completed=T0 + timedelta(minutes=3)),
        finished_testrun(name="other", namespace="ops", completed=T0 - timedelta(days=2)),
    ]
    assertions = [
        {"name": "fast", "type": "recovery_time", "expected": "<= 10", "actual": "2.5s", "passed": True,
         "state": "passed"},
        {"name": "up", "type": "availability", "expected": ">= 99", "passed": False, "state": "skipped",
         "message": "probe web-ready never ran"},
        {"name": "quick", "type": "latency_p95", "expected": "<= 200", "passed": False, "state": "error",
         "message": "probe web-ready errored"},
    ]  # fmt: skip
    for i in range(2):
        drain = finished_testrun(
            name=f"dr-{i}",
            scenario="drain",
            completed=T0 + timedelta(minutes=10 + i),
            assertions=assertions if i == 1 else None,
        )
        for injection in drain["status"]["injections"]:
            injection |= {"fault": "node-drain", "state": "Reverted", "id": "0/0/node/node-1"}
            injection["target"] = {"kind": "Node", "name": "node-1", "uid": "uid-node-1"}
        runs.append(drain)
    return runs


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[HistoryStore]:
    history = HistoryStore(database_url, _instance())
    await history.upgrade()
    await history.upsert_records([run_record(run) for run in _runs()])
    yield history
    await history.close()


async def _page(
    store: HistoryStore, what: str, query: HistoryQuery, after: Cursor | None = None, size: int = 50
) -> Page:
    lists = {"runs": browse.runs_page, "events": browse.events_page, "results": browse.results_page}
    return await store.read(lambda conn, t: lists[what](conn, t, query, after, size))


async def _run_names(store: HistoryStore, query: HistoryQuery) -> list[str]:
    return [row["name"] for row in (await _page(store, "runs", query)).items]


# --- runs ----------------------------------------------------------------------------------------------------


async def test_runs_are_listed_newest_first(store: HistoryStore) -> None:
    names = await _run_names(store, HistoryQuery())
    assert names[:4] == ["dr-1", "dr-0", "kw-3", "kw-2"]
    assert set(names[4:6]) == {"kw-0", "kw-1"}, "one instant: the UID orders them"
    assert names[6:] == ["other"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        (HistoryQuery(namespace="ops"), ["other"]),
        (HistoryQuery(scenario="drain"), ["dr-1", "dr-0"]),
        (HistoryQuery(scenario="kill-web"), {"kw-3", "kw-2", "kw-1", "kw-0", "other"}),
        (HistoryQuery(scenario="shop/kill-web", phase="Failed"), ["kw-2"]),
        (HistoryQuery(scenario="nope"), []),
        (HistoryQuery(target="web-2"), ["kw-3", "kw-2"]),
        (HistoryQuery(target="shop/web-2"), ["kw-3", "kw-2"]),
        (HistoryQuery(target="ops/web-2"), []),
        (HistoryQuery(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=10)), ["dr-0", "kw-3", "kw-2"]),
    ],
)
async def test_run_filters(store: HistoryStore, query: HistoryQuery, names: list[str] | set[str]) -> None:
    found = await _run_names(store, query)
    assert (set(found) if isinstance(names, set) else found) == names


async def test_a_run_is_found_by_its_correlation_id(store: HistoryStore) -> None:
    uid = (await _page(store, "runs", HistoryQuery(scenario="drain"))).items[0]["uid"]
    (run,) = (await _page(store, "runs", HistoryQuery(correlation_id=uid))).items
    assert (run["name"], run["scenario"], run["phase"]) == ("dr-1", "shop/drain", "Passed")


async def _walk(store: HistoryStore, what: str, query: HistoryQuery, size: int) -> list[list[dict[str, Any]]]:
    pages, after = [], None
    while True:
        page = await _page(store, what, query, after, size)
        pages.append(page.items)
        if page.next is None:
            return pages
        after = Cursor.decode(page.next.encode(), "--after")  # through its text, as the command line hands it on


@pytest.mark.parametrize("size", [1, 2, 3])
async def test_paging_runs_visits_each_once_in_order(store: HistoryStore, size: int) -> None:
    everything = [row["uid"] for row in (await _page(store, "runs", HistoryQuery())).items]
    pages = await _walk(store, "runs", HistoryQuery(), size)
    assert all(len(page) == size for page in pages[:-1])
    assert [row["uid"] for page in pages for row in page] == everything
    assert len(everything) == 7  # kw-0 and kw-1 share an instant: a cursor between them must not lose one


# --- events --------------------------------------------------------------------------------------------------


async def test_events_filter_by_fault_status_and_target(store: HistoryStore) -> None:
    drains = (await _page(store, "events", HistoryQuery(fault_type="node-drain"))).items
    assert [(e["run"], e["target_name"], e["state"]) for e in drains] == [
        ("dr-1", "node-1", "Reverted"),
        ("dr-0", "node-1", "Reverted"),
    ]
    kills = (await _page(store, "events", HistoryQuery(status="Irreversible", namespace="shop"))).items
    assert [(e["run"], e["target_name"]) for e in kills] == [
        ("kw-3", "web-1"),
        ("kw-3", "web-2"),
        ("kw-2", "web-2"),
        *sorted([("kw-1", "web-1"), ("kw-0", "web-1")], reverse=run_order_desc(kills)),
    ]
    on_web2 = (await _page(store, "events", HistoryQuery(target="web-2"))).items
    assert [(e["run"], e["target_name"]) for e in on_web2] == [("kw-3", "web-2"), ("kw-2", "web-2")]


def run_order_desc(events: list[dict[str, Any]]) -> bool:
    """Whether kw-1 comes before kw-0 (they completed at one instant: the UID, random, decides)."""
    runs = [e["run"] for e in events]
    return runs.index("kw-1") < runs.index("kw-0")


async def test_paging_events_splits_a_run_between_pages(store: HistoryStore) -> None:
    everything = [row["id"] for row in (await _page(store, "events", HistoryQuery())).items]
    pages = await _walk(store, "events", HistoryQuery(), 1)
    assert [row["id"] for page in pages for row in page] == everything
    assert len(everything) == 8  # kw-3 injected two targets: its events straddle a page boundary


# --- results -------------------------------------------------------------------------------------------------


async def test_results_keep_skipped_and_error_apart_from_failed(store: HistoryStore) -> None:
    results = (await _page(store, "results", HistoryQuery(correlation_id=await _uid(store, "dr-1")))).items
    assert [(r["kind"], r["name"], r["state"]) for r in results] == [
        ("assertion", "fast", "passed"),
        ("assertion", "up", "skipped"),
        ("assertion", "quick", "error"),
        ("probe", "web-ready", "passed"),
    ]
    skipped = (await _page(store, "results", HistoryQuery(status="skipped"))).items
    assert [(r["run"], r["name"]) for r in skipped] == [("dr-1", "up")]


async def test_results_filter_by_type_and_target(store: HistoryStore) -> None:
    availability = (await _page(store, "results", HistoryQuery(assertion_type="availability"))).items
    assert [(r["run"], r["name"]) for r in availability] == [("dr-1", "up")]
    on_web2 = (await _page(store, "results", HistoryQuery(target="web-2", assertion_type="recovery_time"))).items
    assert [r["run"] for r in on_web2] == ["kw-3", "kw-2"]


async def test_paging_results_visits_each_once(store: HistoryStore) -> None:
    everything = [row["id"] for row in (await _page(store, "results", HistoryQuery())).items]
    pages = await _walk(store, "results", HistoryQuery(), 3)
    assert [row["id"] for page in pages for row in page] == everything
    assert len(everything) == 2 * 6 + 4


async def _uid(store: HistoryStore, name: str) -> str:
    return next(row["uid"] for row in (await _page(store, "runs", HistoryQuery())).items if row["name"] == name)


# --- the indexes ---------------------------------------------------------------------------------------------


async def test_migration_0005_indexes_the_filters(store: HistoryStore) -> None:
    prefix = store.tables.prefix

    def indexes(connection: Connection) -> dict[str, list[str | None]]:
        found = {}
        for table in ("test_runs", "chaos_events", "test_results"):
            for index in inspect(connection).get_indexes(f"{prefix}_{table}"):
                found[str(index["name"])] = index["column_names"]
        return found

    async with store.engine.connect() as conn:
        found = await conn.run_sync(indexes)
    assert found[f"{prefix}_runs_phase_ix"] == ["phase", "completed_at"]
    assert found[f"{prefix}_events_fault_ix"] == ["fault", "run_uid"]
    assert found[f"{prefix}_events_name_ix"] == ["target_name", "target_namespace"]
    assert found[f"{prefix}_results_type_ix"] == ["type", "run_uid"]


def _write_0004_results(connection: Connection, prefix: str, uid: str) -> None:
    """A run with results as revision 0004 stored them (no state), into the tables as they were then."""
    metadata = MetaData()
    scenarios, runs, results = (
        Table(f"{prefix}_{name}", metadata, autoload_with=connection)
        for name in ("scenarios", "test_runs", "test_results")
    )
    assert "state" not in results.c
    scenario_id = connection.execute(
        scenarios.insert().values(namespace="shop", name="kill-web", first_seen_at=T0, last_seen_at=T0)
    ).inserted_primary_key[0]
    connection.execute(
        runs.insert().values(uid=uid, namespace="shop", name="old", scenario_id=scenario_id, phase="Failed",
                             passed=False, dry_run=False, completed_at=T0, status={}, mirrored_at=T0)
    )  # fmt: skip
    connection.execute(
        results.insert(),
        [
            # One set of keys for every row: an executemany takes its columns from the first.
            {"run_uid": uid, "kind": "assertion", "name": "held", "passed": True, "actual": "2s"},
            {"run_uid": uid, "kind": "assertion", "name": "missed", "passed": False, "actual": "Error: 40s"},
            {"run_uid": uid, "kind": "probe", "name": "broke", "passed": False, "actual": "Error: 0 sample(s)"},
            {"run_uid": uid, "kind": "probe", "name": "undecided", "passed": None, "actual": "0 sample(s)"},
        ],
    )


async def test_migration_0005_gives_older_results_their_state(database_url: str) -> None:
    from coordinator.history import migrations

    history = HistoryStore(database_url, _instance())
    uid = str(uuid.uuid4())
    try:
        async with history.engine.begin() as conn:
            assert await conn.run_sync(migrations.upgrade, history.tables.prefix, "0004") == "0004"
            await conn.run_sync(_write_0004_results, history.tables.prefix, uid)
        await history.upgrade()
        results = (await _page(history, "results", HistoryQuery(correlation_id=uid))).items
        assert {r["name"]: r["state"] for r in results} == {
            "held": "passed",
            "missed": "failed",
            "broke": "error",
            "undecided": None,
        }
    finally:
        await history.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_plans_the_correlation_id_and_scenario_filters_on_indexes(store: HistoryStore) -> None:
    """With sequential scans priced out (seven rows would not need an index otherwise), the planner reaches each
    filter's rows through its index: the plan names it."""
    t = store.tables
    p = t.prefix
    runs, events, results = t.test_runs, t.chaos_events, t.test_results
    uid = await _uid(store, "kw-2")
    drain = select(t.scenarios.c.id).where(t.scenarios.c.name == "drain").scalar_subquery()
    statements: dict[str, Select[Any]] = {
        # --correlation-id: the runs' primary key, the events' and results' (run_uid, ...) unique keys.
        f"{p}_test_runs_pkey": select(runs.c.name).where(runs.c.uid == uid),
        f"{p}_events_key": select(events.c.fault).where(events.c.run_uid == uid),
        f"{p}_results_key": select(results.c.name).where(results.c.run_uid == uid),
        # --scenario: the scenario index, newest first.
        f"{p}_runs_scenario_ix": select(runs.c.uid)
        .where(runs.c.scenario_id == drain)
        .order_by(runs.c.completed_at.desc()),
        # --phase, --fault-type and --target NAME (migration 0005).
        f"{p}_runs_phase_ix": select(runs.c.uid).where(runs.c.phase == "Failed"),
        f"{p}_events_fault_ix": select(events.c.run_uid).where(events.c.fault == "node-drain"),
        f"{p}_events_name_ix": select(events.c.run_uid).where(events.c.target_name == "web-2"),
    }
    async with store.engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        for index, statement in statements.items():
            sql = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            plan = "\n".join(row[0] for row in await conn.execute(text(f"EXPLAIN {sql}")))
            assert index in plan, f"{sql}: {plan}"


# --- the command line ----------------------------------------------------------------------------------------


def _coordinator(database_url: str, instance: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COORDINATOR_")}
    env |= {"COORDINATOR_DATABASE_URL": database_url, "COORDINATOR_INSTANCE_NAME": instance}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_the_command_pages_through_runs_as_json_and_tables(database_url: str, tmp_path: Path) -> None:
    instance = _instance()

    async def fill() -> None:
        history = HistoryStore(database_url, instance)
        try:
            await history.upgrade()
            await history.upsert_records([run_record(run) for run in _runs()])
        finally:
            await history.close()

    asyncio.run(fill())
    names, after = [], None
    for _ in range(10):
        extra = ["--after", after] if after else []
        proc = _coordinator(
            database_url, instance, tmp_path, "history", "runs", "--namespace", "shop", "--format", "json",
            "--limit", "4", *extra,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        page = json.loads(proc.stdout)
        names += [item["name"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert sorted(names) == ["dr-0", "dr-1", "kw-0", "kw-1", "kw-2", "kw-3"]
    assert names[:4] == ["dr-1", "dr-0", "kw-3", "kw-2"]

    table = _coordinator(
        database_url, instance, tmp_path, "history", "events", "--fault-type", "node-drain", "--limit", "1"
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["INJECTED", "RUN", "STEP", "FAULT"]
    assert "shop/dr-1" in lines[1]
    assert "Node/node-1" in lines[1]
    assert lines[2].startswith("next page: --after ")

    wrong = _coordinator(database_url, instance, tmp_path, "history", "runs", "--fault-type", "pod-kill")
    assert wrong.returncode == 2
    assert "--fault-type does not apply to `coordinator history runs`" in wrong.stderr
    since = _coordinator(database_url, instance, tmp_path, "history", "results", "--since", "1h", "--format", "json")
    assert since.returncode == 0, since.stderr
    assert json.loads(since.stdout)["items"] == [], "every stored run completed long before the last hour"


# --- one run's report ----------------------------------------------------------------------------------------


def test_report_run_gives_one_runs_full_report_in_every_format(database_url: str, tmp_path: Path) -> None:
    """``coordinator report --run NS/NAME`` (the last stored run of that name) or ``--run UID``."""
    instance = _instance()
    runs = _runs()

    async def fill() -> None:
        history = HistoryStore(database_url, instance)
        try:
            await history.upgrade()
            await history.upsert_records([run_record(run) for run in runs])
        finally:
            await history.close()

    asyncio.run(fill())
    drained = next(run for run in runs if run["metadata"]["name"] == "dr-1")
    uid = drained["metadata"]["uid"]
    by_name = _coordinator(database_url, instance, tmp_path, "report", "--run", "shop/dr-1", "--format", "json")
    assert by_name.returncode == 0, by_name.stderr
    data = json.loads(by_name.stdout)
    assert (data["run"]["name"], data["run"]["correlationId"], data["run"]["scenario"]) == ("dr-1", uid, "shop/drain")
    assert [(e["fault"], e["target_name"], e["state"]) for e in data["events"]] == [
        ("node-drain", "node-1", "Reverted")
    ]
    assert [(a["name"], a["state"]) for a in data["assertions"]] == [("fast", "passed"), ("up", "skipped"),
                                                                     ("quick", "error")]  # fmt: skip
    assert [p["name"] for p in data["probes"]] == ["web-ready"]
    for fmt, expected in (
        ("table", "TestRun shop/dr-1"),
        ("markdown", "# TestRun shop/dr-1"),
        ("junit", '<testsuite name="shop/dr-1"'),
        ("html", "<h1>TestRun shop/dr-1</h1>"),
    ):
        by_uid = _coordinator(database_url, instance, tmp_path, "report", "--run", uid, "--format", fmt)
        assert by_uid.returncode == 0, by_uid.stderr
        assert expected in by_uid.stdout, fmt
    missing = _coordinator(database_url, instance, tmp_path, "report", "--run", "shop/nope")
    assert missing.returncode == 1
    assert "error: no stored run 'shop/nope'" in missing.stderr
    mixed = _coordinator(database_url, instance, tmp_path, "report", "--run", uid, "--namespace", "shop")
    assert mixed.returncode == 2
    assert "--run reports one run" in mixed.stderr
