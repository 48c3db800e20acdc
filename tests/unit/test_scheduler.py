"""The scheduler's reconcile against an in-memory API server and a fake clock: creation, policies, pruning."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError
from coordinator.engine.scheduler import (
    SCENARIO_LABEL,
    SCHEDULED_AT_ANNOTATION,
    needs_reconcile,
    prunable,
    reconcile_schedule,
)

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
BASE = "/apis/chaos.coordinator.dev/v1alpha1/namespaces/ns"


class FakeKube:
    """Just enough of KubeClient for the scheduler: objects by path, merge patches, label-selected lists."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[str] = []
        self.created: list[str] = []
        self.uid = 0

    def _next_uid(self) -> str:
        self.uid += 1
        return f"uid-{self.uid}"

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    async def list(self, path: str, *, label_selector: str | None = None, **_: Any) -> list[dict[str, Any]]:
        key, _, value = (label_selector or "").partition("=")
        return [
            copy.deepcopy(obj)
            for item_path, obj in self.objects.items()
            if item_path.rsplit("/", 1)[0] == path and (not key or obj["metadata"].get("labels", {}).get(key) == value)
        ]

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/events"):
            self.events.append(body["reason"])
            return body
        item = f"{path}/{body['metadata']['name']}"
        if item in self.objects:
            raise ApiError(409, "AlreadyExists", f"{item} exists")
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = self._next_uid()
        self.objects[item] = obj
        self.created.append(body["metadata"]["name"])
        return obj

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        path = path.removesuffix("/status")
        obj = self.objects[path]
        for section, values in body.items():
            target = obj.setdefault(section, {})
            for key, value in values.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        return obj

    async def delete(self, path: str) -> dict[str, Any]:
        if path not in self.objects:
            raise ApiError(404, "NotFound", path)
        return self.objects.pop(path)

    # --- helpers for the tests ---

    def add_scenario(self, **spec: Any) -> dict[str, Any]:
        scenario = {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "ChaosScenario",
            "metadata": {
                "name": "nightly",
                "namespace": "ns",
                "uid": "scenario-uid",
                "generation": 1,
                "creationTimestamp": (T0 - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": {"concurrencyPolicy": "Allow", "successfulRunsHistoryLimit": 3, "failedRunsHistoryLimit": 1} | spec,
        }
        self.objects[f"{BASE}/chaosscenarios/nightly"] = scenario
        return scenario

    @property
    def scenario(self) -> dict[str, Any]:
        return self.objects[f"{BASE}/chaosscenarios/nightly"]

    def runs(self) -> dict[str, dict[str, Any]]:
        return {
            obj["metadata"]["name"]: obj for path, obj in self.objects.items() if path.startswith(f"{BASE}/testruns/")
        }

    def finish(self, name: str, phase: str = "Passed", **status: Any) -> None:
        self.runs()[name]["status"] = {"phase": phase, **status}


def name_at(seconds: int) -> str:
    return f"nightly-{int((T0 + timedelta(seconds=seconds)).timestamp())}"


async def tick(kube: FakeKube, seconds: float) -> None:
    await reconcile_schedule(kube, kube.scenario, T0 + timedelta(seconds=seconds))  # type: ignore[arg-type]


async def test_runs_are_created_on_schedule_owned_labelled_and_recorded() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", runTemplate={"parameters": {"replicas": 2}, "timeout": "1m"})
    for second in range(0, 12):
        await tick(kube, second + 0.5)
    assert kube.created == [name_at(0), name_at(5), name_at(10)]
    run = kube.runs()[name_at(5)]
    assert run["metadata"]["labels"] == {SCENARIO_LABEL: "nightly"}
    assert run["metadata"]["annotations"] == {SCHEDULED_AT_ANNOTATION: "2026-03-02T12:00:05Z"}
    [owner] = run["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "ChaosScenario",
        "scenario-uid",
        True,
        True,
    )
    assert run["spec"] == {"scenarioRef": {"name": "nightly"}, "parameters": {"replicas": 2}, "timeout": "1m"}
    status = kube.scenario["status"]
    assert status["lastScheduleTime"] == "2026-03-02T12:00:10Z"
    assert status["nextScheduleTime"] == "2026-03-02T12:00:15Z"
    assert [a["name"] for a in status["active"]] == [name_at(0), name_at(5), name_at(10)]
    assert kube.events.count("Scheduled") == 3


async def test_a_second_process_with_a_stale_status_creates_no_duplicate() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s")
    await tick(kube, 0.2)
    kube.scenario.pop("status")  # as if the status write was lost in a crash right after the creation
    await tick(kube, 0.4)
    assert kube.created == [name_at(0)]
    assert kube.scenario["status"]["lastScheduleTime"] == "2026-03-02T12:00:00Z"


async def test_forbid_waits_for_the_active_run_then_runs_the_owed_time_once() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", concurrencyPolicy="Forbid")
    await tick(kube, 0.5)
    for second in (5.5, 10.5, 12.5):
        await tick(kube, second)
    assert kube.created == [name_at(0)], "no run while the first is active"
    kube.finish(name_at(0))
    await tick(kube, 13.5)
    await tick(kube, 14.5)
    assert kube.created == [name_at(0), name_at(10)], "the most recent owed time, once"


async def test_replace_aborts_the_active_run_before_starting_the_next() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", concurrencyPolicy="Replace")
    await tick(kube, 0.5)
    await tick(kube, 5.5)
    assert kube.runs()[name_at(0)]["spec"]["abort"] is True
    assert "abort" not in kube.runs()[name_at(5)]["spec"]
    assert "Replaced" in kube.events


async def test_suspend_stops_creation_and_resuming_runs_one_missed_time() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", suspend=True)
    for second in range(0, 30, 2):
        await tick(kube, second + 0.5)
    assert kube.created == []
    assert "nextScheduleTime" not in kube.scenario["status"]
    kube.scenario["spec"]["suspend"] = False
    kube.scenario["metadata"]["generation"] = 2
    await tick(kube, 31)
    await tick(kube, 32)
    assert kube.created == [name_at(30)], "one run for the most recent time, no burst for the missed ones"


async def test_history_limits_prune_the_oldest_finished_runs() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1)
    for index, phase in enumerate(["Passed", "Failed", "Passed", "Error", "Passed", "Passed"]):
        await tick(kube, index * 5 + 0.5)
        kube.finish(name_at(index * 5), phase, history={"synced": True})
    await tick(kube, 26)
    assert sorted(kube.runs()) == sorted([name_at(15), name_at(20), name_at(25)])


async def test_runs_not_yet_mirrored_to_history_are_kept() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", successfulRunsHistoryLimit=0)
    await tick(kube, 0.5)
    kube.finish(name_at(0), history={"synced": False})
    await tick(kube, 1.5)
    assert name_at(0) in kube.runs()
    kube.finish(name_at(0), history={"synced": True})
    await tick(kube, 5.5)  # limits are applied whenever the scenario is reconciled: here, at its next time
    assert name_at(0) not in kube.runs()


async def test_runs_of_other_owners_are_left_alone() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="@every 5s", successfulRunsHistoryLimit=0)
    kube.objects[f"{BASE}/testruns/manual"] = {
        "metadata": {"name": "manual", "uid": "m", "labels": {SCENARIO_LABEL: "nightly"}},
        "status": {"phase": "Passed"},
    }
    await tick(kube, 0.5)
    assert "manual" in kube.runs()


async def test_an_invalid_schedule_is_reported_once() -> None:
    kube = FakeKube()
    kube.add_scenario(schedule="0 0 31 2 7 1")
    await tick(kube, 0.5)
    await tick(kube, 1.5)
    assert kube.events == ["InvalidSchedule"]
    assert kube.created == []
    assert not needs_reconcile(kube.scenario, T0 + timedelta(seconds=3)), "no API call per tick until it changes"


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
    scenario = kube.add_scenario(schedule="@every 5s")
    assert needs_reconcile(scenario, T0), "never reconciled yet"
    scenario["status"] = {"observedGeneration": 1, "nextScheduleTime": "2026-03-02T12:00:05Z"}
    assert not needs_reconcile(scenario, T0 + timedelta(seconds=4))
    assert needs_reconcile(scenario, T0 + timedelta(seconds=5)), "the next time has come"
    scenario["status"]["active"] = [{"name": "x"}]
    assert needs_reconcile(scenario, T0), "an active run is watched until it ends"
