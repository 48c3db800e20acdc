"""Finished runs mirrored from the local cluster into a real PostgreSQL, through an outage, and reported on.

This module runs its own operator (PostgreSQL + Redis configured, its own instance name) watching its own
namespace prefix, so the session's operator never sees these runs and vice versa.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
import xmlschema
from kubernetes import client
from kubernetes.client.rest import ApiException
from PIL import Image

from conftest import OPT_IN, SESSION_PREFIX, make_deployment, wait_ready
from coordinator.history.redis import RedisProgress
from coordinator.history.store import HistoryStore
from coordinator.testing.process import OperatorProcess
from coordinator.testing.servers import PG_PASSWORD, REDIS_PASSWORD, PostgresServer, RedisServer
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, TERMINAL, VERSION, Chaos, ready_probe

REPO = Path(__file__).resolve().parents[2]
JUNIT_XSD = REPO / "tests" / "data" / "junit.xsd"
# Not matched by the session operator's "<prefix>-*": the character after the session prefix differs.
NAMESPACE_PREFIX = f"{SESSION_PREFIX}h"
LINE_RGB = (0x25, 0x63, 0xEB)  # the trend line (coordinator.history.report.LINE_COLOUR)
GOOD_RGB = (0x16, 0xA3, 0x4A)  # passed-run markers
SCREEN = (1200, 1400)

T = TypeVar("T")


@dataclass
class HistoryEnv:
    operator: OperatorProcess
    instance: str
    database_url: str
    redis_url: str
    namespaces: list[str]

    def env(self) -> dict[str, str]:
        return {
            "COORDINATOR_DATABASE_URL": self.database_url,
            "COORDINATOR_REDIS_URL": self.redis_url,
            "COORDINATOR_INSTANCE_NAME": self.instance,
        }

    def query(self, call: Callable[[HistoryStore], Awaitable[T]]) -> T:
        async def run() -> T:
            store = HistoryStore(self.database_url, self.instance)
            try:
                return await call(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def report(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli.main", "report", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env()},
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def history(
    kubeconfig: Path,
    crds_installed: list[str],
    core: client.CoreV1Api,
    postgres: PostgresServer,
    redis_server: RedisServer,
) -> Iterator[HistoryEnv]:
    log_dir = REPO / ".test-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-history"
    instance = f"mirror-{uuid.uuid4().hex[:6]}"
    setup = HistoryEnv(
        OperatorProcess(kubeconfig, log_dir, namespaces=[f"{NAMESPACE_PREFIX}-*"]),
        instance,
        postgres.url(),
        redis_server.url,
        [],
    )
    setup.operator.env = setup.env()
    setup.operator.start()
    yield setup
    if not postgres.accepting():
        postgres.start()
    # This operator holds the finalizers of these namespaces' TestRuns: it lets them go before it stops. The
    # namespaces themselves are deleted without waiting (that is the cluster's job).
    custom = client.CustomObjectsApi(core.api_client)
    for name in setup.namespaces:
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, name, "testruns")
    wait_for(
        lambda: (
            not any(
                custom.list_namespaced_custom_object(GROUP, VERSION, name, "testruns")["items"]
                for name in setup.namespaces
            )
        ),
        timeout=60,
        description="the history tests' TestRuns deleted",
    )
    for name in setup.namespaces:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    setup.operator.stop()


def _namespace(core: client.CoreV1Api, history: HistoryEnv, what: str) -> str:
    name = f"{NAMESPACE_PREFIX}-{what}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"test": "e2e", **OPT_IN})))
    history.namespaces.append(name)
    return name


def _scenario(duration: str = "1s") -> dict[str, Any]:
    return {
        "type": "service_restart",
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "one",
        "steps": [{"name": "kill", "duration": duration, "faults": [{"type": "pod-kill"}]}],
        "steadyState": {"probes": [ready_probe()]},
        "assertions": [{"name": "fast", "type": "recovery_time", "expected": 30}],
    }


def _synced(chaos: Chaos, name: str) -> dict[str, Any] | None:
    status = chaos.status(name)
    return status if (status.get("history") or {}).get("synced") else None


# --- one run, end to end -------------------------------------------------------------------------------------


@dataclass
class MirroredRun:
    status: dict[str, Any]
    uid: str
    stored: dict[str, Any] | None
    events: list[dict[str, Any]]
    results: list[dict[str, Any]]
    progress: dict[str, Any] | None
    at_end: dict[str, Any]  # the status as first read with the terminal phase


@pytest.fixture(scope="module")
def mirrored(
    history: HistoryEnv, api_client: client.ApiClient, core: client.CoreV1Api, apps: client.AppsV1Api
) -> MirroredRun:
    ns = _namespace(core, history, "one")
    chaos = Chaos(api_client, ns)
    make_deployment(apps, ns, "web", replicas=3)
    wait_ready(core, ns, "web", 3)
    chaos.scenario("kill-web", _scenario())
    run = chaos.run("kill-web")
    at_end = chaos.wait_phase(run, "Passed", timeout=60)
    status = wait_for(lambda: _synced(chaos, run), timeout=30, description=f"TestRun {run} synced to the history")
    uid = chaos.get_run(run)["metadata"]["uid"]

    async def progress() -> dict[str, Any] | None:
        redis = aioredis.Redis.from_url(history.redis_url)
        try:
            return await RedisProgress(redis, history.instance).get(uid)
        finally:
            await redis.aclose()

    return MirroredRun(
        status=status,
        uid=uid,
        stored=history.query(lambda s: s.get_run(uid)),
        events=history.query(lambda s: s.events(uid)),
        results=history.query(lambda s: s.results(uid)),
        progress=asyncio.run(progress()),
        at_end=at_end,
    )


def test_a_finished_run_is_in_postgresql(mirrored: MirroredRun) -> None:
    assert mirrored.stored is not None
    assert (mirrored.stored["phase"], mirrored.stored["scenario"]) == ("Passed", mirrored.status["scenario"])
    assert mirrored.stored["recovery_seconds"] == mirrored.status["recoveryTimeSeconds"]


def test_its_status_says_where_it_was_synced(mirrored: MirroredRun) -> None:
    assert mirrored.status["history"]["store"] == "postgresql"
    assert mirrored.status["history"]["syncedAt"]


def test_the_final_status_write_already_says_so(mirrored: MirroredRun) -> None:
    """The run mirrored itself before its final write (no separate mark by the history timer)."""
    assert (mirrored.at_end.get("history") or {}).get("synced") is True
    assert mirrored.at_end["history"]["syncedAt"] >= mirrored.at_end["completedAt"]


def test_its_chaos_events_name_the_killed_pod(mirrored: MirroredRun) -> None:
    (event,) = mirrored.events
    (target,) = mirrored.status["steps"][0]["targets"]
    assert (event["fault"], event["target_kind"], event["target_name"]) == ("pod-kill", "Pod", target["name"])
    assert event["injected_at"] is not None


def test_its_events_record_when_the_target_recovered(mirrored: MirroredRun) -> None:
    (event,) = mirrored.events
    step = mirrored.status["steps"][0]
    assert event["recovered_at"] is not None
    recovered_after = (event["recovered_at"] - event["injected_at"]).total_seconds()
    assert recovered_after == pytest.approx(step["recoveryTimeSeconds"], abs=1.0)


def test_its_probe_and_assertion_results_are_stored(mirrored: MirroredRun) -> None:
    results = {(r["kind"], r["name"]): r for r in mirrored.results}
    assert set(results) == {("assertion", "fast"), ("probe", "web-ready")}
    assert results[("assertion", "fast")]["passed"] is True
    assert results[("assertion", "fast")]["actual"] == mirrored.status["assertions"][0]["actual"]


def test_its_live_progress_is_in_redis(mirrored: MirroredRun) -> None:
    assert mirrored.progress is not None
    assert mirrored.progress["phase"] == "Passed"


def test_no_password_reaches_the_operator_log(history: HistoryEnv, mirrored: MirroredRun) -> None:
    text = history.operator.log_path.read_text(errors="replace")
    assert "postgres:***@127.0.0.1" in text
    assert PG_PASSWORD not in text
    assert REDIS_PASSWORD not in text


# --- a batch through a PostgreSQL outage ---------------------------------------------------------------------

BATCH = 5


@dataclass
class Batch:
    namespace: str
    names: list[str]
    phases: dict[str, str]
    synced_during_outage: list[str]
    stored: list[dict[str, Any]]
    events: dict[str, int]
    injections: dict[str, int]
    log: str  # the operator's log from the outage until every run was synced


@pytest.fixture(scope="module")
def batch(
    history: HistoryEnv,
    postgres: PostgresServer,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> Batch:
    """Run 1 is mirrored; PostgreSQL stops; runs 2-5 start and finish; PostgreSQL comes back."""
    ns = _namespace(core, history, "batch")
    chaos = Chaos(api_client, ns)
    make_deployment(apps, ns, "web", replicas=3)
    wait_ready(core, ns, "web", 3)
    chaos.scenario("kill-web", _scenario())
    names = [chaos.run("kill-web", name="run-1")]
    wait_for(lambda: _synced(chaos, names[0]), timeout=60, description="run-1 synced before the outage")
    log_before = len(history.operator.log_path.read_text(errors="replace"))
    postgres.stop()
    try:
        # One after another: each run's baseline must see the steady state, not the previous run's kill.
        for i in range(2, BATCH + 1):
            names.append(chaos.run("kill-web", name=f"run-{i}"))
            chaos.wait_phase(names[-1], TERMINAL, timeout=90)
        wait_for(
            lambda: "unavailable" in history.operator.log_path.read_text(errors="replace")[log_before:],
            timeout=30,
            description="the operator saying the history database is unavailable",
        )
        synced_during_outage = [n for n in names[1:] if _synced(chaos, n)]
    finally:
        postgres.start()
    for name in names:
        wait_for(lambda name=name: _synced(chaos, name), timeout=60, description=f"{name} synced after the outage")
    outage_log = history.operator.log_path.read_text(errors="replace")[log_before:]
    stored = history.query(lambda s: s.list_runs(namespace=ns))
    uids = {r["uid"]: r["name"] for r in stored}
    events = {name: len(history.query(lambda s, uid=uid: s.events(uid))) for uid, name in uids.items()}
    return Batch(
        namespace=ns,
        names=names,
        phases={n: chaos.status(n)["phase"] for n in names},
        synced_during_outage=synced_during_outage,
        stored=stored,
        events=events,
        injections={n: len(chaos.status(n).get("injections") or []) for n in names},
        log=outage_log,
    )


def test_runs_go_on_while_postgresql_is_down(batch: Batch) -> None:
    assert batch.phases == dict.fromkeys(batch.names, "Passed")


def test_nothing_is_marked_synced_while_postgresql_is_down(batch: Batch) -> None:
    assert batch.synced_during_outage == []


def test_after_the_outage_every_run_is_in_the_history(batch: Batch) -> None:
    assert sorted(r["name"] for r in batch.stored) == sorted(batch.names)


def test_no_run_is_in_the_history_twice(batch: Batch) -> None:
    assert len(batch.stored) == len({r["uid"] for r in batch.stored}) == BATCH


def test_no_chaos_event_is_stored_twice(batch: Batch) -> None:
    assert batch.events == batch.injections


def test_the_outage_is_one_log_line_when_it_starts_and_one_when_it_ends(batch: Batch) -> None:
    """Not one line per unsynced run every few seconds (about 500 a minute with a hundred runs waiting)."""
    lines = batch.log.splitlines()
    started = [line for line in lines if "history database" in line and "unavailable" in line]
    ended = [line for line in lines if "history database" in line and "is back after" in line]
    assert (len(started), len(ended)) == (1, 1), "\n".join(started + ended)
    assert not [line for line in lines if '"level": "error"' in line], "a transient outage is no ERROR"


# --- runs deleted while PostgreSQL is down ------------------------------------------------------------------


def _finished_unsynced(chaos: Chaos, scenario: str, name: str) -> str:
    run = chaos.run(scenario, name=name)
    chaos.wait_phase(run, "Passed", timeout=90)
    assert not _synced(chaos, run), "PostgreSQL is down: not in the history yet"
    return run


def test_runs_deleted_while_postgresql_is_down_reach_the_history_once_it_is_back(
    history: HistoryEnv,
    postgres: PostgresServer,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    """Deletion, and deletion of the whole namespace, while the database is down: the finalizer holds the runs
    (past the sweeper's 10 s grace) until they are written. The skip-history annotation lets one go at once."""
    ns = _namespace(core, history, "deleted")
    # A namespace this test deletes itself (not in history.namespaces: the module's teardown must not list it).
    doomed = f"{NAMESPACE_PREFIX}-nsdel-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=doomed, labels={"test": "e2e", **OPT_IN}))
    )
    chaos, doomed_chaos = Chaos(api_client, ns), Chaos(api_client, doomed)
    for where, helper in ((ns, chaos), (doomed, doomed_chaos)):
        make_deployment(apps, where, "web", replicas=3)
        wait_ready(core, where, "web", 3)
        helper.scenario("kill-web", _scenario())
    log_before = len(history.operator.log_path.read_text(errors="replace"))
    postgres.stop()
    try:
        deleted = _finished_unsynced(chaos, "kill-web", "deleted")
        skipped = _finished_unsynced(chaos, "kill-web", "skipped")
        in_doomed = _finished_unsynced(doomed_chaos, "kill-web", "in-doomed")
        uids = {n: c.get_run(n)["metadata"]["uid"] for n, c in ((deleted, chaos), (in_doomed, doomed_chaos))}
        skipped_uid = chaos.get_run(skipped)["metadata"]["uid"]
        for name in (deleted, skipped):
            chaos.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "testruns", name)
        core.delete_namespace(doomed)
        time.sleep(15)  # longer than the sweeper's grace for a deletion stuck on our finalizer (10 s)
        assert chaos.run_exists(deleted), "a deleted run waits for the history"
        assert chaos.run_exists(skipped)
        assert doomed_chaos.run_exists(in_doomed), "so does a run of a namespace being deleted"
        # A person lets one go at once.
        chaos.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "testruns",
            skipped,
            {"metadata": {"annotations": {"chaos.coordinator.dev/skip-history": "true"}}},
        )
        wait_for(lambda: not chaos.run_exists(skipped), timeout=20, description=f"{skipped} let go on request")
        assert chaos.run_exists(deleted)
    finally:
        postgres.start()
    wait_for(lambda: not chaos.run_exists(deleted), timeout=60, description=f"{deleted} written, then let go")
    wait_for(
        lambda: doomed not in {n.metadata.name for n in core.list_namespace().items},
        timeout=90,
        description=f"namespace {doomed} deleted once its run is written",
    )
    for name, uid in uids.items():
        stored = history.query(lambda s, uid=uid: s.get_run(uid))
        assert stored is not None, f"{name} is in the history"
        assert stored["phase"] == "Passed"
    assert history.query(lambda s: s.get_run(skipped_uid)) is None, "the skipped run was let go unrecorded"
    log = history.operator.log_path.read_text(errors="replace")[log_before:]
    assert "skip-history is set" in log


# --- a workflow run and its children ------------------------------------------------------------------------


@dataclass
class MirroredWorkflow:
    namespace: str
    parent: str
    uid: str
    stored: dict[str, Any] | None
    children: dict[str, dict[str, Any] | None]  # node -> the child's stored row


@pytest.fixture(scope="module")
def mirrored_workflow(
    history: HistoryEnv, api_client: client.ApiClient, core: client.CoreV1Api, apps: client.AppsV1Api
) -> MirroredWorkflow:
    """shop's game day: kill-web passes, a 1 s gate, a node whose baseline can never hold fails, and the node
    after it is Skipped (StopOnFailure)."""
    ns = _namespace(core, history, "workflow")
    chaos = Chaos(api_client, ns)
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("kill-web", _scenario())
    impossible = {
        "name": "impossible",
        "type": "k8s",
        "mode": "before",
        "k8s": {"kind": "Deployment", "name": "web", "fieldPath": "spec.replicas", "operator": "==", "value": 99},
    }
    chaos.scenario("never-steady", {**_scenario(), "steadyState": {"probes": [impossible]}, "assertions": []})
    nodes = [
        {"name": "first", "scenarioRef": {"name": "kill-web"}},
        {"name": "gate", "suspend": {"duration": "1s"}, "dependsOn": ["first"]},
        {"name": "broken", "scenarioRef": {"name": "never-steady"}, "dependsOn": ["gate"]},
        {"name": "after", "scenarioRef": {"name": "kill-web"}, "dependsOn": ["broken"]},
    ]
    for plural, body in (
        ("chaosworkflows", {"kind": "ChaosWorkflow", "metadata": {"name": "game-day"}, "spec": {"nodes": nodes}}),
        ("testruns", {"kind": "TestRun", "metadata": {"name": "gd-1"}, "spec": {"workflowRef": {"name": "game-day"}}}),
    ):
        chaos.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, plural, {"apiVersion": f"{GROUP}/{VERSION}", **body}
        )
    chaos.wait_phase("gd-1", TERMINAL, timeout=120)
    wait_for(lambda: _synced(chaos, "gd-1"), timeout=30, description="workflow run gd-1 synced to the history")
    uid = chaos.get_run("gd-1")["metadata"]["uid"]
    rows: dict[str, dict[str, Any] | None] = {}
    for node in ("first", "broken"):
        child = f"gd-1-{node}"
        wait_for(lambda child=child: _synced(chaos, child), timeout=30, description=f"{child} synced")
        child_uid = chaos.get_run(child)["metadata"]["uid"]
        rows[node] = history.query(lambda s, child_uid=child_uid: s.get_run(child_uid))
    return MirroredWorkflow(ns, "gd-1", uid, history.query(lambda s: s.get_run(uid)), rows)


def test_a_workflow_run_is_mirrored_with_its_workflow_and_nodes(mirrored_workflow: MirroredWorkflow) -> None:
    stored = mirrored_workflow.stored
    assert stored is not None
    assert (stored["workflow"], stored["phase"]) == (f"{mirrored_workflow.namespace}/game-day", "Failed")
    assert [(n["name"], n["phase"]) for n in stored["nodes"]] == [
        ("first", "Passed"),
        ("gate", "Passed"),
        ("broken", "Failed"),
        ("after", "Skipped"),
    ]


def test_its_children_are_mirrored_with_their_parent_and_node(mirrored_workflow: MirroredWorkflow) -> None:
    for node, row in mirrored_workflow.children.items():
        assert row is not None
        assert (row["parent_uid"], row["parent_name"], row["workflow_node"]) == (mirrored_workflow.uid, "gd-1", node)


def test_the_junit_report_makes_the_workflow_run_one_suite_of_its_nodes(
    history: HistoryEnv, mirrored_workflow: MirroredWorkflow
) -> None:
    ns = mirrored_workflow.namespace
    proc = history.report("--format", "junit", "--namespace", ns, "--since", "1h")
    assert proc.returncode == 0, proc.stderr
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(proc.stdout)
    root = ET.fromstring(proc.stdout)  # noqa: S314 - our own report, not untrusted input
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert set(suites) == {f"{ns}/gd-1"}, "the children are listed only under their workflow run"
    cases = {case.get("name"): [e.tag for e in case if e.tag != "system-out"] for case in suites[f"{ns}/gd-1"]
             if case.tag == "testcase"}  # fmt: skip
    assert list(cases) == ["first", "gate", "broken", "after"]
    assert cases == {"first": [], "gate": [], "broken": ["failure"], "after": ["skipped"]}
    table = history.report("--namespace", ns)
    assert f"{ns}/game-day (workflow)" in table.stdout
    assert f"Workflow {ns}/game-day, latest runs:" in table.stdout


# --- reports over the mirrored runs --------------------------------------------------------------------------


def test_the_table_report_counts_the_batch(history: HistoryEnv, batch: Batch) -> None:
    proc = history.report("--namespace", batch.namespace)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"{batch.namespace}/kill-web"))
    assert row.split()[1:5] == [str(BATCH), str(BATCH), "0", "100.0%"]  # runs, passed, cancelled, pass rate


def test_the_junit_report_validates_against_the_schema(history: HistoryEnv, batch: Batch) -> None:
    proc = history.report("--format", "junit", "--namespace", batch.namespace, "--since", "1h")
    assert proc.returncode == 0, proc.stderr
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(proc.stdout)
    root = ET.fromstring(proc.stdout)  # noqa: S314 - our own report, not untrusted input
    cases = [case.get("name") for case in root.iter("testcase")]
    assert sorted(cases) == sorted(f"{batch.namespace}/{name}" for name in batch.names)


def _colour_pixels(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return sum(
        count
        for count, pixel in image.getcolors(maxcolors=image.width * image.height) or []
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb, strict=False))
    )


@pytest.fixture(scope="module")
def screenshot(history: HistoryEnv, batch: Batch, tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    """The HTML report over the batch, opened in headless Chromium."""
    workdir = tmp_path_factory.mktemp("html-report")
    page, png = workdir / "report.html", workdir / "report.png"
    proc = history.report("--format", "html", "--namespace", batch.namespace, "--output", str(page))
    assert proc.returncode == 0, proc.stderr
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert browser, "chromium is not installed (apt-get install chromium); .ci/run installs it"
    shot = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={workdir / 'profile'}",
            f"--window-size={SCREEN[0]},{SCREEN[1]}",
            f"--screenshot={png}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert png.exists(), f"no screenshot ({shot.returncode}): {shot.stderr[-2000:]}"
    return Image.open(png).convert("RGB")


def test_the_html_report_renders_in_chromium(screenshot: Image.Image) -> None:
    assert screenshot.size == SCREEN
    assert len(screenshot.getcolors(maxcolors=SCREEN[0] * SCREEN[1]) or []) > 50, "more than a blank page"


def test_the_html_report_shows_the_trend_chart(screenshot: Image.Image) -> None:
    assert _colour_pixels(screenshot, LINE_RGB) > 200, "the recovery-time line is drawn"
    assert _colour_pixels(screenshot, GOOD_RGB) > 50, "the passed runs are marked"


def test_the_report_names_the_store_without_its_password(history: HistoryEnv, batch: Batch) -> None:
    proc = history.report("--format", "json", "--namespace", batch.namespace)
    assert re.search(r'"source": "postgresql\+asyncpg://postgres:\*\*\*@127\.0\.0\.1:\d+/postgres"', proc.stdout)
    assert PG_PASSWORD not in proc.stdout


# --- target locks ------------------------------------------------------------------------------------------


def _scale_scenario(replicas: int, duration: str, allow: bool = False) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "allowConcurrentTargets": allow,
        "steps": [
            {"name": "scale", "duration": duration, "faults": [{"type": "scale", "scale": {"replicas": replicas}}]}
        ],
    }


def _window(status: dict[str, Any]) -> tuple[float, float]:
    (entry,) = status["injections"]
    stamp = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()  # noqa: E731
    return stamp(entry["appliedAt"]), stamp(entry["revertedAt"])


@pytest.mark.parametrize("allow", [False, True], ids=["locked", "allowed"])
def test_the_redis_lock_keeps_two_runs_off_one_target(
    history: HistoryEnv, core: client.CoreV1Api, apps: client.AppsV1Api, api_client: client.ApiClient, allow: bool
) -> None:
    ns = _namespace(core, history, "lock")
    make_deployment(apps, ns, "web", replicas=3)
    wait_ready(core, ns, "web", 3)
    chaos = Chaos(api_client, ns)
    chaos.scenario("first", _scale_scenario(1, "4s"))
    chaos.scenario("second", _scale_scenario(2, "1s", allow=allow))
    log_before = len(history.operator.log_path.read_text(errors="replace"))
    first = chaos.run("first")
    chaos.wait_step(first, 0, "Injected")
    second = chaos.run("second")
    a = _window(chaos.wait_phase(first, "Passed", timeout=60))
    b = _window(chaos.wait_phase(second, "Passed", timeout=60))
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    if allow:
        assert overlap > 0, "allowConcurrentTargets lets the second run in while the first holds the target"
    else:
        assert overlap <= 0, f"two runs held web at once for {overlap:.2f}s"
        assert b[0] >= a[1]
        assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
        # Waiting for a target is a queue, not an ERROR (kopf logs every retry of a handler as one).
        log = history.operator.log_path.read_text(errors="replace")[log_before:]
        waits = [line for line in log.splitlines() if "waits: target" in line]
        assert waits, "the wait is logged"
        assert all('"level": "info"' in line for line in waits), waits[:3]
        assert not [line for line in log.splitlines() if '"level": "error"' in line]
