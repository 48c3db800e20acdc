"""Run counters on ChaosScenario status: batched compare-and-swap writes (a stand-in API, concurrency logic only;
tests/e2e/test_pod_faults.py counts real runs on the real API server)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError
from coordinator.api.models import Phase
from coordinator.engine.run import ScenarioSummaries


class ScenarioApi:
    """One ChaosScenario's status subresource with resourceVersion checks, as the API server does them."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {"metadata": {"resourceVersion": "1"}, "status": {}}
        self.gets = 0
        self.patches = 0
        self.foreign_writes = 0  # writes by someone else, made right before our next PATCH lands

    async def get(self, path: str) -> dict[str, Any]:
        self.gets += 1
        await asyncio.sleep(0)
        return copy.deepcopy(self.obj)

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches += 1
        await asyncio.sleep(0.01)  # a request takes a while: more runs finish meanwhile
        if self.foreign_writes:
            self.foreign_writes -= 1
            self._bump()
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.obj["status"].update(body["status"])
        self._bump()
        return copy.deepcopy(self.obj)

    def _bump(self) -> None:
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)


async def test_runs_finishing_together_are_all_counted_in_few_writes() -> None:
    api = ScenarioApi()
    summaries = ScenarioSummaries()
    phases = [Phase.PASSED] * 40 + [Phase.FAILED] * 10
    await asyncio.gather(
        *(
            summaries.count(api, "shop", "kill", f"run-{i}", phase, f"2026-01-01T00:00:{i:02d}Z")  # type: ignore[arg-type]
            for i, phase in enumerate(phases)
        )
    )
    status = api.obj["status"]
    assert status["totalRuns"] == 50
    assert status["passedRuns"] == 40
    assert status["passRate"] == "80%"
    assert status["lastRun"] == {"name": "run-49", "phase": "Failed", "completedAt": "2026-01-01T00:00:49Z"}
    assert api.patches <= 3, "runs that finish while a write is in flight share the next write"
    assert api.gets == 1, "later writes start from the status the previous PATCH returned"


async def test_a_stale_copy_is_read_again_and_nothing_is_lost() -> None:
    api = ScenarioApi()
    summaries = ScenarioSummaries()
    await summaries.count(api, "shop", "kill", "run-1", Phase.PASSED, None)  # type: ignore[arg-type]
    api.obj["status"]["totalRuns"] = 10  # another replica counted meanwhile
    api.obj["status"]["passedRuns"] = 10
    api._bump()
    await summaries.count(api, "shop", "kill", "run-2", Phase.FAILED, None)  # type: ignore[arg-type]
    assert api.obj["status"]["totalRuns"] == 11
    assert api.obj["status"]["passedRuns"] == 10


async def test_endless_conflicts_fail_every_waiter_of_the_batch() -> None:
    api = ScenarioApi()
    api.foreign_writes = 100
    summaries = ScenarioSummaries()
    results = await asyncio.gather(
        *(summaries.count(api, "shop", "kill", f"run-{i}", Phase.PASSED, None) for i in range(3)),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert all(isinstance(r, ApiError) and r.conflict for r in results)
    api.foreign_writes = 0
    await summaries.count(api, "shop", "kill", "run-9", Phase.PASSED, None)  # type: ignore[arg-type]
    assert api.obj["status"]["totalRuns"] == 1, "a failed batch leaves no state behind; the next one starts fresh"


@pytest.mark.parametrize("scenarios", [1, 3])
async def test_scenarios_are_counted_separately(scenarios: int) -> None:
    apis = [ScenarioApi() for _ in range(scenarios)]

    class Router:
        async def get(self, path: str) -> dict[str, Any]:
            return await apis[int(path.rsplit("-", 1)[1])].get(path)

        async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            return await apis[int(path.split("/status")[0].rsplit("-", 1)[1])].patch(path, body)

    summaries = ScenarioSummaries()
    await asyncio.gather(
        *(
            summaries.count(Router(), "shop", f"s-{i % scenarios}", f"run-{i}", Phase.PASSED, None)  # type: ignore[arg-type]
            for i in range(30)
        )
    )
    assert [api.obj["status"]["totalRuns"] for api in apis] == [30 // scenarios] * scenarios
