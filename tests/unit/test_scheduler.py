"""The scheduler's reconcile against an in-memory API server and a fake clock: creation, policies, pruning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError
from coordinator.api.models import FINALIZER, REQUESTED_BY_ANNOTATION, RUN_NOW_ANNOTATION
from coordinator.domain.timestamps import format_iso_seconds
from coordinator.engine.pausing import PAUSES, PauseBoard
from coordinator.engine.scheduler import (
    SCENARIO_LABEL,
    SCHEDULED_AT_ANNOTATION,
    WORKFLOW_LABEL,
    needs_reconcile,
    prunable,
    reconcile_schedule,
    release_deleted_scenarios,
    schedulable_of,
    start_run_now,
)
from support.fake_kube import FAKE_REQUESTER, FakeKube

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
BASE = "/apis/chaos.coordinator.dev/v1alpha1/namespaces/ns"


SCENARIO = f"{BASE}/chaosscenarios/nightly"
RUNS = f"{BASE}/testruns"


def add_scenario(kube: FakeKube, **spec: Any) -> dict[str, Any]:
    return kube.add(
        SCENARIO,
        {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "ChaosScenario",
            "metadata": {
                "name": "nightly",
                "namespace": "ns",
                "uid": "scenario-uid",
                "generation": 1,
                "creationTimestamp": format_iso_seconds(T0 - timedelta(seconds=1)),
            },
            "spec": {"concurrencyPolicy": "Allow", "successfulRunsHistoryLimit": 3, "failedRunsHistoryLimit": 1} | spec,
        },
    )


def scenario(kube: FakeKube) -> dict[str, Any]:
    """The stored scenario itself (not a copy): tests change it as a user's edit would."""
    return kube.objects[SCENARIO]


def runs(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for path, obj in kube.objects.items() if path.startswith(f"{RUNS}/")}


def created(kube: FakeKube) -> list[str]:
    """The TestRuns created so far, in order, pruned ones included."""
    return [obj["metadata"]["name"] for obj in kube.written("ADDED", RUNS)]


def event_reasons(kube: FakeKube) -> list[str]:
    return [obj["reason"] for obj in kube.written("ADDED", "/api/v1/namespaces/ns/events")]


def finish(kube: FakeKube, name: str, phase: str = "Passed", **status: Any) -> None:
    runs(kube)[name]["status"] = {"phase": phase, **status}


def name_at(seconds: int) -> str:
    return f"nightly-{int((T0 + timedelta(seconds=seconds)).timestamp())}"


async def tick(kube: FakeKube, seconds: float) -> None:
    await reconcile_schedule(kube, kube.stored(SCENARIO), T0 + timedelta(seconds=seconds))  # type: ignore[arg-type]


async def test_runs_are_created_on_schedule_owned_labelled_and_recorded() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", runTemplate={"parameters": {"replicas": 2}, "timeout": "1m"})
    for second in range(0, 12):
        await tick(kube, second + 0.5)
    assert created(kube) == [name_at(0), name_at(5), name_at(10)]
    run = runs(kube)[name_at(5)]
    assert run["metadata"]["labels"] == {SCENARIO_LABEL: "nightly"}
    assert run["metadata"]["annotations"] == {
        SCHEDULED_AT_ANNOTATION: "2026-03-02T12:00:05Z",
        REQUESTED_BY_ANNOTATION: FAKE_REQUESTER.to_annotation(),  # the scenario's (the fake's webhook wrote it)
    }
    [owner] = run["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "ChaosScenario",
        "scenario-uid",
        True,
        True,
    )
    assert run["spec"] == {"scenarioRef": {"name": "nightly"}, "parameters": {"replicas": 2}, "timeout": "1m"}
    status = scenario(kube)["status"]
    assert status["lastScheduleTime"] == "2026-03-02T12:00:10Z"
    assert status["nextScheduleTime"] == "2026-03-02T12:00:15Z"
    assert [a["name"] for a in status["active"]] == [name_at(0), name_at(5), name_at(10)]
    assert event_reasons(kube).count("Scheduled") == 3


async def test_a_second_process_with_a_stale_status_creates_no_duplicate() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s")
    await tick(kube, 0.2)
    scenario(kube).pop("status")  # as if the status write was lost in a crash right after the creation
    await tick(kube, 0.4)
    assert created(kube) == [name_at(0)]
    assert scenario(kube)["status"]["lastScheduleTime"] == "2026-03-02T12:00:00Z"


async def test_forbid_waits_for_the_active_run_then_runs_the_owed_time_once() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", concurrencyPolicy="Forbid")
    await tick(kube, 0.5)
    for second in (5.5, 10.5, 12.5):
        await tick(kube, second)
    assert created(kube) == [name_at(0)], "no run while the first is active"
    finish(kube, name_at(0))
    await tick(kube, 13.5)
    await tick(kube, 14.5)
    assert created(kube) == [name_at(0), name_at(10)], "the most recent owed time, once"


async def test_replace_aborts_the_active_run_before_starting_the_next() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", concurrencyPolicy="Replace")
    await tick(kube, 0.5)
    await tick(kube, 5.5)
    assert runs(kube)[name_at(0)]["spec"]["abort"] is True
    assert "abort" not in runs(kube)[name_at(5)]["spec"]
    assert "Replaced" in event_reasons(kube)


async def test_suspend_stops_creation_and_resuming_runs_one_missed_time() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", suspend=True)
    for second in range(0, 30, 2):
        await tick(kube, second + 0.5)
    assert created(kube) == []
    assert "nextScheduleTime" not in scenario(kube)["status"]
    scenario(kube)["spec"]["suspend"] = False
    scenario(kube)["metadata"]["generation"] = 2
    await tick(kube, 31)
    await tick(kube, 32)
    assert created(kube) == [name_at(30)], "one run for the most recent time, no burst for the missed ones"


@pytest.fixture
def paused_board() -> Iterator[PauseBoard]:
    """The operator's pause board, emptied again after the test."""
    yield PAUSES
    PAUSES.reset(None, [])


@pytest.mark.parametrize(
    ("paused", "cluster"),
    [
        pytest.param("ns", None, id="its-namespace"),
        pytest.param("shop", None, id="a-target-namespace"),
        pytest.param("test-coordinator", "test-coordinator", id="cluster-wide"),
    ],
)
async def test_a_paused_scope_skips_its_ticks_and_resuming_runs_the_next(
    paused_board: PauseBoard, paused: str, cluster: str | None
) -> None:
    """An emergency stop skips scheduled runs (a Warning Event says so) instead of piling them up Pending."""
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", target={"namespaces": ["ns", "shop"]})
    paused_board.reset(cluster, [paused])
    for second in (0.5, 5.5, 10.5):
        await tick(kube, second)
    assert created(kube) == []
    assert event_reasons(kube).count("Skipped") == 3
    assert scenario(kube)["status"]["lastScheduleTime"] == "2026-03-02T12:00:10Z", "the skipped times are consumed"
    paused_board.reset(cluster, [])
    await tick(kube, 12.5)
    await tick(kube, 15.5)
    assert created(kube) == [name_at(15)], "no burst of the skipped times"


async def test_a_pause_elsewhere_does_not_skip(paused_board: PauseBoard) -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s")
    paused_board.reset("test-coordinator", ["other"])
    await tick(kube, 0.5)
    assert created(kube) == [name_at(0)]


async def test_history_limits_prune_the_oldest_finished_runs() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1)
    for index, phase in enumerate(["Passed", "Failed", "Passed", "Error", "Passed", "Passed"]):
        await tick(kube, index * 5 + 0.5)
        finish(kube, name_at(index * 5), phase, history={"synced": True})
    await tick(kube, 26)
    assert sorted(runs(kube)) == sorted([name_at(15), name_at(20), name_at(25)])


async def test_runs_not_yet_mirrored_to_history_are_kept() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", successfulRunsHistoryLimit=0)
    await tick(kube, 0.5)
    finish(kube, name_at(0), history={"synced": False})
    await tick(kube, 1.5)
    assert name_at(0) in runs(kube)
    finish(kube, name_at(0), history={"synced": True})
    await tick(kube, 5.5)  # limits are applied whenever the scenario is reconciled: here, at its next time
    assert name_at(0) not in runs(kube)


async def test_runs_of_other_owners_are_left_alone() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="@every 5s", successfulRunsHistoryLimit=0)
    kube.add(
        f"{RUNS}/manual",
        {
            "metadata": {"name": "manual", "uid": "m", "labels": {SCENARIO_LABEL: "nightly"}},
            "status": {"phase": "Passed"},
        },
    )
    await tick(kube, 0.5)
    assert "manual" in runs(kube)


async def test_an_invalid_schedule_is_reported_once() -> None:
    kube = FakeKube()
    add_scenario(kube, schedule="0 0 31 2 7 1")
    await tick(kube, 0.5)
    await tick(kube, 1.5)
    assert event_reasons(kube) == ["InvalidSchedule"]
    assert created(kube) == []
    assert not needs_reconcile(scenario(kube), T0 + timedelta(seconds=3)), "no API call per tick until it changes"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, False),  # not mirrored yet: the history store is always on, so this run would be lost
        ({"history": {"synced": True}}, True),
        ({"history": {"synced": False}}, False),
        ({"history": {}}, False),
    ],
)
def test_prunable(status: dict[str, Any], expected: bool) -> None:
    assert prunable({"status": status}) is expected


def test_a_tick_with_nothing_due_needs_no_api_call() -> None:
    kube = FakeKube()
    scenario = add_scenario(kube, schedule="@every 5s")
    assert needs_reconcile(scenario, T0), "never reconciled yet"
    scenario["status"] = {"observedGeneration": 1, "nextScheduleTime": "2026-03-02T12:00:05Z"}
    assert not needs_reconcile(scenario, T0 + timedelta(seconds=4))
    assert needs_reconcile(scenario, T0 + timedelta(seconds=5)), "the next time has come"
    scenario["status"]["active"] = [{"name": "x"}]
    assert needs_reconcile(scenario, T0), "an active run is watched until it ends"


# --- ChaosWorkflows are scheduled, run now and released as scenarios are -------------------------------------

WORKFLOW = f"{BASE}/chaosworkflows/gameday"


def add_workflow(
    kube: FakeKube, annotations: dict[str, str] | None = None, name: str = "gameday", **spec: Any
) -> dict[str, Any]:
    return kube.add(
        f"{BASE}/chaosworkflows/{name}",
        {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "ChaosWorkflow",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"{name}-workflow-uid",
                "generation": 1,
                "creationTimestamp": format_iso_seconds(T0 - timedelta(seconds=1)),
                "annotations": annotations or {},
            },
            "spec": {"nodes": [{"name": "kill", "scenarioRef": {"name": "nightly"}}]} | spec,
        },
    )


async def test_a_scheduled_workflow_creates_workflow_runs_owned_and_labelled_by_it() -> None:
    kube = FakeKube()
    add_workflow(kube, schedule="@every 5s", runTemplate={"parameters": {"replicas": 2}, "dryRun": True})
    for second in (0.5, 5.5):
        await reconcile_schedule(kube, kube.stored(WORKFLOW), T0 + timedelta(seconds=second))
    assert created(kube) == [f"gameday-{int(T0.timestamp())}", f"gameday-{int(T0.timestamp()) + 5}"]
    run = runs(kube)[f"gameday-{int(T0.timestamp()) + 5}"]
    assert run["spec"] == {"workflowRef": {"name": "gameday"}, "parameters": {"replicas": 2}, "dryRun": True}
    assert run["metadata"]["labels"] == {WORKFLOW_LABEL: "gameday"}, "not the scenario label"
    assert run["metadata"]["annotations"][REQUESTED_BY_ANNOTATION] == FAKE_REQUESTER.to_annotation()
    [owner] = run["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ChaosWorkflow",
        "gameday",
        "gameday-workflow-uid",
        True,
    )
    status = kube.objects[WORKFLOW]["status"]
    assert status["lastScheduleTime"] == "2026-03-02T12:00:05Z"
    assert [a["name"] for a in status["active"]] == created(kube), "its own runs, found by the workflow label"
    assert event_reasons(kube).count("Scheduled") == 2


async def test_a_workflow_and_a_scenario_of_one_name_keep_their_runs_apart() -> None:
    """A scenario's history limit never prunes a workflow's run: each finds its runs by its own label and UID."""
    kube = FakeKube()
    add_workflow(kube, name="nightly", schedule="@every 5s")
    add_scenario(kube, schedule="@every 7s", successfulRunsHistoryLimit=0)
    await reconcile_schedule(kube, kube.stored(f"{BASE}/chaosworkflows/nightly"), T0 + timedelta(seconds=0.5))
    [workflow_run] = created(kube)
    finish(kube, workflow_run, history={"synced": True})
    await tick(kube, 7.5)
    assert workflow_run in runs(kube)
    assert runs(kube)[workflow_run]["spec"]["workflowRef"] == {"name": "nightly"}


async def test_run_now_on_a_workflow_starts_one_workflow_run() -> None:
    kube = FakeKube()
    add_workflow(kube, annotations={RUN_NOW_ANNOTATION: "go"})
    name = await start_run_now(kube, kube.stored(WORKFLOW))
    assert name is not None
    assert name.startswith("gameday-now-")
    assert await start_run_now(kube, kube.stored(WORKFLOW)) is None, "the token is recorded: once per value"
    run = runs(kube)[name]
    assert run["spec"] == {"workflowRef": {"name": "gameday"}}
    assert run["metadata"]["ownerReferences"][0]["kind"] == "ChaosWorkflow"
    assert run["metadata"]["annotations"] == {
        RUN_NOW_ANNOTATION: "go",
        REQUESTED_BY_ANNOTATION: FAKE_REQUESTER.to_annotation(),
    }
    assert kube.objects[WORKFLOW]["status"]["lastRunNowToken"] == "go"


async def test_deleted_workflows_stuck_on_our_finalizer_are_released() -> None:
    kube = FakeKube(now=T0)
    add_workflow(kube)
    add_scenario(kube)
    for path in (WORKFLOW, SCENARIO):
        kube.objects[path]["metadata"]["finalizers"] = [FINALIZER]
        kube.objects[path]["metadata"]["deletionTimestamp"] = format_iso_seconds(T0 - timedelta(minutes=1))
    released = await release_deleted_scenarios(kube, ["ns"])
    assert sorted(released) == ["ChaosScenario ns/nightly", "ChaosWorkflow ns/gameday"]
    assert WORKFLOW not in kube.objects
    assert SCENARIO not in kube.objects


def test_only_scenarios_and_workflows_start_runs_of_their_own() -> None:
    with pytest.raises(ValueError, match="'TestRun' starts no TestRuns"):
        schedulable_of({"kind": "TestRun"})


async def test_a_missing_workflow_crd_does_not_stop_releasing_scenarios() -> None:
    kube = FakeKube(now=T0)
    add_scenario(kube)
    kube.objects[SCENARIO]["metadata"]["finalizers"] = [FINALIZER]
    kube.objects[SCENARIO]["metadata"]["deletionTimestamp"] = format_iso_seconds(T0 - timedelta(minutes=1))
    kube.fail(
        ApiError(404, "NotFound", "the server could not find the requested resource"), path=f"{BASE}/chaosworkflows"
    )
    assert await release_deleted_scenarios(kube, ["ns"]) == ["ChaosScenario ns/nightly"]
