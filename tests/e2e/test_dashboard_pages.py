"""The overview, scenario and history pages: their queries on real SQLite and PostgreSQL, and the pages in a real
browser (Debian's Chromium under Playwright) against the local cluster and the session operator's history store."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from coordinator.dashboard import queries
from coordinator.history.records import RunRecord, ScenarioRecord
from coordinator.history.store import HistoryStore
from coordinator.testing.process import OperatorProcess
from coordinator.testing.servers import PostgresServer
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos
from support.dashboard import DESKTOP, PHONE, DashboardProcess, screenshot
from support.identities import user_kubeconfig

T = TypeVar("T")
NOW = datetime.now(UTC).replace(microsecond=0)
ABORT = {"spec": {"abort": True}}


def record(
    namespace: str,
    scenario: str,
    name: str,
    completed: datetime,
    phase: str = "Passed",
    recovery: float | None = 1.0,
) -> RunRecord:
    return RunRecord(
        uid=str(uuid.uuid4()),
        namespace=namespace,
        name=name,
        scenario=ScenarioRecord(namespace, scenario, "service_restart", None, 1),
        phase=phase,
        completed_at=completed,
        reason="Completed" if phase == "Passed" else "AssertionFailed",
        started_at=completed - timedelta(seconds=30),
        duration_seconds=30.0,
        recovery_seconds=recovery,
        status={"phase": phase},
    )


# --- the queries, on both backends ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[HistoryStore]:
    history = HistoryStore(database_url, f"t{uuid.uuid4().hex[:8]}")
    await history.upgrade()
    yield history
    await history.close()


async def test_the_last_24_hours_and_the_slowest_scenarios(store: HistoryStore) -> None:
    await store.upsert_records(
        [
            record("a", "fast", "f1", NOW - timedelta(hours=1), recovery=1.0),
            record("a", "fast", "f2", NOW - timedelta(hours=2), phase="Failed", recovery=3.0),
            record("a", "slow", "s1", NOW - timedelta(hours=3), recovery=20.0),
            record("b", "slow", "s2", NOW - timedelta(hours=23), recovery=5.0),
            record("b", "unmeasured", "u1", NOW - timedelta(hours=4), recovery=None),
            record("a", "slow", "s-old", NOW - timedelta(days=2), recovery=99.0),  # out of 24 h, in 7 days
            record("a", "ancient", "x", NOW - timedelta(days=10), recovery=500.0),  # out of both windows
        ]
    )
    day = await store.read(lambda conn, t: queries.last_day(conn, t, NOW))
    assert (day.runs, day.passed) == (5, 4)
    assert day.pass_rate == pytest.approx(0.8)
    slowest = await store.read(lambda conn, t: queries.slowest_recovery(conn, t, NOW))
    assert [(s.namespace, s.name, s.runs) for s in slowest] == [("a", "slow", 2), ("b", "slow", 1), ("a", "fast", 2)]
    assert slowest[0].mean_recovery == pytest.approx(59.5)
    assert slowest[0].max_recovery == pytest.approx(99.0)
    empty = await store.read(lambda conn, t: queries.last_day(conn, t, NOW + timedelta(days=30)))
    assert (empty.runs, empty.pass_rate) == (0, None)


async def test_a_scenarios_trend_is_its_newest_runs_oldest_first(store: HistoryStore) -> None:
    await store.upsert_records(
        [record("a", "s", f"r{i}", NOW - timedelta(hours=i), phase="Failed" if i % 3 else "Passed") for i in range(12)]
        + [record("b", "s", "other-namespace", NOW)]
    )
    trend = await store.read(lambda conn, t: queries.scenario_trend(conn, t, "a", "s", limit=10))
    assert len(trend) == 10
    assert [p.completed_at for p in trend] == sorted(p.completed_at for p in trend)
    assert trend[-1].completed_at == NOW - timedelta(hours=0)
    assert trend[0].completed_at == NOW - timedelta(hours=9)
    assert [p.passed for p in trend][-4:] == [True, False, False, True]
    assert await store.read(lambda conn, t: queries.scenario_trend(conn, t, "a", "nope")) == []


async def test_history_pages_by_keyset_forwards_and_back_with_filters(store: HistoryStore) -> None:
    # 23 runs, some finishing at the same instant: the cursor's uid keeps them apart.
    runs = [
        record("a" if i % 2 else "b", "s" if i % 3 else "t", f"r{i}", NOW - timedelta(minutes=i // 2), "Passed")
        for i in range(23)
    ]
    await store.upsert_records(runs)
    expected = sorted(runs, key=lambda r: (r.completed_at, r.uid), reverse=True)

    seen: list[str] = []
    pages: list[queries.HistoryPage] = []
    after = None
    while True:
        page = await store.read(
            lambda conn, t, after=after: queries.history_page(conn, t, queries.HistoryFilters(), after=after, size=5)
        )
        pages.append(page)
        seen += [r.uid for r in page.rows]
        if page.older is None:
            break
        after = page.older
    assert seen == [r.uid for r in expected], "every run once, newest first"
    assert [len(p.rows) for p in pages] == [5, 5, 5, 5, 3]
    assert pages[0].newer is None
    assert pages[1].newer is not None

    # Back from the third page to the second: the same rows as going forwards.
    back = await store.read(
        lambda conn, t: queries.history_page(conn, t, queries.HistoryFilters(), before=pages[2].newer, size=5)
    )
    assert [r.uid for r in back.rows] == [r.uid for r in pages[1].rows]
    assert back.newer is not None
    assert back.older is not None

    filters = queries.HistoryFilters(
        namespace="a", scenario="a/s", since=NOW - timedelta(minutes=8), until=NOW - timedelta(minutes=2)
    )
    page = await store.read(lambda conn, t: queries.history_page(conn, t, filters, size=50))
    wanted = [
        r.uid
        for r in expected
        if r.namespace == "a"
        and r.scenario.name == "s"
        and NOW - timedelta(minutes=8) <= r.completed_at <= NOW - timedelta(minutes=2)
    ]
    assert wanted
    assert [r.uid for r in page.rows] == wanted
    assert all(r.scenario == "a/s" for r in page.rows)
    failed = await store.read(
        lambda conn, t: queries.history_page(conn, t, queries.HistoryFilters(phase="Failed"), size=50)
    )
    assert failed.rows == []
    unknown = await store.read(
        lambda conn, t: queries.history_page(conn, t, queries.HistoryFilters(scenario="nope"), size=50)
    )
    assert unknown.unknown_scenario


# --- the pages in a browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session_history(operator: OperatorProcess) -> HistoryStore:
    """The session operator's history store, which the session's dashboard reads."""
    path = operator.env["COORDINATOR_HISTORY_PATH"]
    return HistoryStore(f"sqlite+aiosqlite:///{path}")


def in_own_loop(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` in an event loop of its own thread (Playwright's sync API keeps one running in this one)."""

    async def run() -> T:
        return await call()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def store_runs(history: HistoryStore, records: list[RunRecord]) -> None:
    async def write() -> None:
        try:
            await history.upsert_records(records)
        finally:
            await history.engine.dispose()

    in_own_loop(write)


def day_figures(history: HistoryStore) -> queries.DayFigures:
    async def read() -> queries.DayFigures:
        try:
            return await history.read(lambda conn, t: queries.last_day(conn, t, datetime.now(UTC)))
        finally:
            await history.engine.dispose()

    return in_own_loop(read)


def parameterized_hold() -> dict[str, Any]:
    return {
        "description": "Holds one pod failed while the probes watch.",
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "{{ params.app }}"}}},
        "mode": "one",
        "parameters": [
            {"name": "app", "default": "web", "description": "the workload's app label"},
            {"name": "hold", "type": "duration", "default": "120s", "description": "how long the pod stays failed"},
            {"name": "attempts", "type": "integer", "default": 2},
        ],
        "steps": [{"name": "hold", "duration": "{{ params.hold }}", "faults": [{"type": "pod-failure"}]}],
    }


def no_sideways_scroll(page: Any, width: int, name: str) -> None:
    scrolled = page.evaluate("document.documentElement.scrollWidth")
    assert scrolled <= width, f"{name}: the page scrolls sideways ({scrolled} px)"


def test_the_overview_shows_a_run_appear_live_and_the_last_24_hours(
    dashboard: DashboardProcess, browser: Any, session_history: HistoryStore, workload: str, chaos: Chaos
) -> None:
    scenario = f"slow-{uuid.uuid4().hex[:6]}"
    before = day_figures(session_history)
    store_runs(
        session_history,
        [
            record(
                chaos.namespace,
                scenario,
                f"{scenario}-{i}",
                datetime.now(UTC) - timedelta(hours=i + 1),
                phase="Passed" if i < 3 else "Failed",
                recovery=5000.0 + i,
            )
            for i in range(4)
        ],
    )
    chaos.scenario("hold", parameterized_hold())
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(f"{dashboard.url}/")
        runs = int(page.locator("#day-runs").inner_text())
        passed = int(page.locator("#day-passed").inner_text())
        assert runs >= before.runs + 4
        assert passed >= before.passed + 3
        assert page.locator("#day-rate").inner_text().endswith("%")
        slow = page.locator(f'#slowest tr[data-scenario="{chaos.namespace}/{scenario}"]')
        assert "5001.5 s" in slow.inner_text(), "the slowest scenario with its mean recovery"
        assert slow.locator("a").get_attribute("href") == f"/scenarios/{chaos.namespace}/{scenario}"

        # The run starts after the page was opened: the server pushes it (no reload, no polling).
        page.locator('#active-runs[data-live="true"]').wait_for(timeout=10_000)
        page.evaluate("window.notReloaded = true")
        run = chaos.run("hold")
        row = page.locator(f'#active-runs tr[data-run="{chaos.namespace}/{run}"]')
        row.wait_for(timeout=10_000)
        wait_for(
            lambda: "Running" in row.inner_text() or None, timeout=30, description="the run's phase pushed to the page"
        )
        assert page.evaluate("window.notReloaded") is True, "the row came without a reload"
        assert row.locator("a").first.get_attribute("href") == f"/runs/{chaos.namespace}/{run}"
        screenshot(page, "overview")

        # It leaves the list when it ends.
        chaos.custom.patch_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns", run, ABORT)
        row.wait_for(state="detached", timeout=60_000)
    finally:
        page.close()


def test_the_scenario_page_shows_its_yaml_trends_and_starts_a_run(
    dashboard: DashboardProcess, browser: Any, session_history: HistoryStore, chaos: Chaos
) -> None:
    chaos.scenario("hold", parameterized_hold())
    base = datetime.now(UTC)
    stored_at = [base - timedelta(days=i // 3, hours=i) for i in range(12)]
    store_runs(
        session_history,
        [
            record(
                chaos.namespace,
                "hold",
                f"stored-{i}",
                at,
                phase="Failed" if i % 4 == 0 else "Passed",
                recovery=None if i == 5 else 2.0 + i,
            )
            for i, at in enumerate(stored_at)
        ],
    )
    url = f"{dashboard.url}/scenarios/{chaos.namespace}/hold"
    for name, size in (("scenario", DESKTOP), ("scenario-phone", PHONE)):
        page = browser.new_page(viewport=size)
        try:
            page.goto(url)
            assert page.locator("h1").inner_text() == "hold"
            yaml_text = page.locator("#spec-yaml").inner_text()
            assert "kind: ChaosScenario" in yaml_text
            assert "duration: '{{ params.hold }}'" in yaml_text
            assert "managedFields" not in yaml_text

            page.wait_for_function("window.coordinatorCharts && window.coordinatorCharts.passRate", timeout=10_000)
            drawn = page.evaluate(
                "Object.fromEntries(Object.entries(window.coordinatorCharts).map(([k, u]) =>"
                " [k, {series: u.series.length, points: u.data[1].length, canvas: !!u.root.querySelector('canvas')}]))"
            )
            assert drawn["recovery"] == {"series": 2, "points": 11, "canvas": True}, "one point per measured run"
            days = len({at.date() for at in stored_at})
            assert drawn["passRate"] == {"series": 2, "points": days, "canvas": True}, "one point per day"
            assert page.locator("#stored-runs tbody tr").count() == 12

            assert page.locator("#param-hold").input_value() == "120s", "the default filled in"
            assert page.locator("#param-attempts").get_attribute("type") == "number"
            assert "the workload's app label" in page.locator("#start-form").inner_text()
            no_sideways_scroll(page, size["width"], name)
            screenshot(page, name)
        finally:
            page.close()

    page = browser.new_page(viewport=DESKTOP)
    try:
        page.on("dialog", lambda dialog: dialog.accept())  # the confirmation every action asks for
        page.goto(url)
        # A bad value: refused with the operator's message, and nothing created.
        page.locator("#param-hold").fill("soon")
        page.locator("#start-form button[type=submit]").click()
        error = page.locator('.field-error[data-field="hold"]')
        error.wait_for(timeout=10_000)
        assert "soon" in error.inner_text()
        assert page.locator("#param-hold").input_value() == "soon", "what was typed is kept"
        assert chaos.custom.list_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns")["items"] == []

        # A good value: a TestRun named after the scenario, with the value, then the run's page.
        page.locator("#param-hold").fill("90s")
        page.locator("#param-attempts").fill("3")
        page.locator("#start-form button[type=submit]").click()
        page.wait_for_url(re.compile(rf"/runs/{chaos.namespace}/hold-[a-z0-9]+$"), timeout=10_000)
        created = page.url.rsplit("/", 1)[1]
        run = chaos.get_run(created)
        assert run["spec"]["scenarioRef"] == {"name": "hold"}
        assert run["spec"]["parameters"] == {"app": "web", "hold": "90s", "attempts": 3}
    finally:
        page.close()


def test_the_history_page_filters_and_pages(
    dashboard: DashboardProcess, browser: Any, session_history: HistoryStore, chaos: Chaos
) -> None:
    namespace = chaos.namespace
    now = datetime.now(UTC).replace(microsecond=0)
    runs = [
        record(namespace, "hist", f"h-{i:02d}", now - timedelta(minutes=i), phase="Failed" if i % 2 else "Passed")
        for i in range(120)
    ]
    store_runs(session_history, runs)
    for name, size in (("history", DESKTOP), ("history-phone", PHONE)):
        page = browser.new_page(viewport=size)
        try:
            page.goto(f"{dashboard.url}/history")
            page.locator("input[name=namespace]").fill(namespace)
            page.locator("select[name=phase]").select_option("Failed")
            page.locator("#history-filters button[type=submit]").click()
            page.wait_for_url(re.compile(r"phase=Failed"))
            assert f"namespace={namespace}" in page.url, "the filters are in the URL"
            names: list[str] = []
            while True:
                rows = page.locator("#history-runs tbody tr")
                names += [rows.nth(i).get_attribute("data-run") or "" for i in range(rows.count())]
                assert all("Failed" in rows.nth(i).inner_text() for i in range(rows.count()))
                older = page.locator("#page-older")
                if older.count() == 0:
                    break
                no_sideways_scroll(page, size["width"], name)
                if len(names) == queries.PAGE_SIZE:
                    screenshot(page, name)
                older.click()
                page.wait_for_load_state()
            assert names == [f"{namespace}/h-{i:02d}" for i in range(1, 120, 2)], "every failed run once, newest first"
            link = page.locator(f'#history-runs tr[data-run="{namespace}/h-119"] a').first
            assert link.get_attribute("href") == f"/runs/{namespace}/h-119"

            # A shared URL gives the same page; the time range narrows it.
            since = (now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")
            page.goto(f"{dashboard.url}/history?namespace={namespace}&from={since}")
            shown = page.locator("#history-runs tbody tr")
            assert shown.count() == 11
            assert page.locator("input[name=from]").input_value() == since
            page.goto(f"{dashboard.url}/history?to=yesterday")
            assert "to: 'yesterday' is not a date" in page.locator("#history-problem").inner_text()
        finally:
            page.close()


def test_a_viewer_who_may_not_create_runs_sees_the_api_servers_refusal(
    dashboard: DashboardProcess,
    browser: Any,
    kubeconfig: Path,
    api_client: client.ApiClient,
    chaos: Chaos,
    tmp_path: Path,
) -> None:
    """The page acts with the viewer's rights only: a read-only user may see the scenario, but the API server
    refuses the run, and the page says so in the API server's words."""
    chaos.scenario("hold", parameterized_hold())
    user = f"reader-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        chaos.namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=user),
            rules=[
                client.V1PolicyRule(
                    api_groups=[GROUP], resources=["chaosscenarios", "testruns"], verbs=["get", "list", "watch"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        chaos.namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=user),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=user),
            subjects=[client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
        ),
    )
    history = {k: v for k, v in dashboard.env.items() if k.startswith("COORDINATOR_")}
    as_reader = DashboardProcess(user_kubeconfig(kubeconfig, user, tmp_path), env=history, log=tmp_path / "d.log")
    as_reader.start()
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{as_reader.url}/scenarios/{chaos.namespace}/hold")
        assert "kind: ChaosScenario" in page.locator("#spec-yaml").inner_text(), "reading is allowed"
        page.locator("#start-form button[type=submit]").click()
        refusal = page.locator("#start-refused")
        refusal.wait_for(timeout=10_000)
        text = refusal.inner_text()
        assert f'User "{user}" cannot create resource "testruns"' in text, text
        assert chaos.custom.list_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns")["items"] == []

        # Listing every namespace's runs is not allowed either: the overview says so instead of an empty list.
        page.goto(f"{as_reader.url}/")
        assert f'User "{user}" cannot list resource "testruns"' in page.locator(".refused").first.inner_text()
    finally:
        page.close()
        as_reader.stop()
