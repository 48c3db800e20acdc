"""Run counters on ChaosScenario status: batched compare-and-swap writes (the in-memory API server;
tests/e2e/test_pod_faults.py counts real runs on the real API server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import Phase
from coordinator.engine.run import ScenarioSummaries
from support.fake_kube import FakeKube

# Each request takes 10 ms of loop time (looptime): runs that finish meanwhile join the next write.
pytestmark = pytest.mark.looptime

CONFLICT = ApiError(409, "Conflict", "the object has been modified")


def api(*names: str) -> FakeKube:
    """ChaosScenarios with a status subresource and resourceVersion checks, as the API server keeps them."""
    kube = FakeKube()
    kube.latency = 0.01
    for name in names:
        kube.add(resource_path("ChaosScenario", "shop", name), {"metadata": {"name": name}, "spec": {}, "status": {}})
    return kube


def status(kube: FakeKube, name: str = "kill") -> dict[str, Any]:
    return kube.objects[resource_path("ChaosScenario", "shop", name)]["status"]


async def test_runs_finishing_together_are_all_counted_in_few_writes() -> None:
    kube = api("kill")
    summaries = ScenarioSummaries()
    phases = [Phase.PASSED] * 40 + [Phase.FAILED] * 10
    await asyncio.gather(
        *(
            summaries.count(kube, "shop", "kill", f"run-{i}", phase, f"2026-01-01T00:00:{i:02d}Z")  # type: ignore[arg-type]
            for i, phase in enumerate(phases)
        )
    )
    counted = status(kube)
    assert counted["totalRuns"] == 50
    assert counted["passedRuns"] == 40
    assert counted["passRate"] == "80%"
    assert counted["lastRun"] == {"name": "run-49", "phase": "Failed", "completedAt": "2026-01-01T00:00:49Z"}
    assert len(kube.calls_of("patch")) <= 3, "runs that finish while a write is in flight share the next write"
    assert len(kube.calls_of("get")) == 1, "later writes start from the status the previous PATCH returned"


async def test_a_stale_copy_is_read_again_and_nothing_is_lost() -> None:
    kube = api("kill")
    summaries = ScenarioSummaries()
    await summaries.count(kube, "shop", "kill", "run-1", Phase.PASSED, None)  # type: ignore[arg-type]
    await kube.patch(  # another replica counted meanwhile
        resource_path("ChaosScenario", "shop", "kill", "status"), {"status": {"totalRuns": 10, "passedRuns": 10}}
    )
    await summaries.count(kube, "shop", "kill", "run-2", Phase.FAILED, None)  # type: ignore[arg-type]
    assert status(kube)["totalRuns"] == 11
    assert status(kube)["passedRuns"] == 10


async def test_endless_conflicts_fail_every_waiter_of_the_batch() -> None:
    kube = api("kill")
    kube.fail(CONFLICT, verb="patch", times=None)  # someone else writes right before each of our PATCHes
    summaries = ScenarioSummaries()
    results = await asyncio.gather(
        *(summaries.count(kube, "shop", "kill", f"run-{i}", Phase.PASSED, None) for i in range(3)),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert all(isinstance(r, ApiError) and r.conflict for r in results)
    kube.recover()
    await summaries.count(kube, "shop", "kill", "run-9", Phase.PASSED, None)  # type: ignore[arg-type]
    assert status(kube)["totalRuns"] == 1, "a failed batch leaves no state behind; the next one starts fresh"


@pytest.mark.parametrize("scenarios", [1, 3])
async def test_scenarios_are_counted_separately(scenarios: int) -> None:
    kube = api(*(f"s-{i}" for i in range(scenarios)))
    summaries = ScenarioSummaries()
    await asyncio.gather(
        *(
            summaries.count(kube, "shop", f"s-{i % scenarios}", f"run-{i}", Phase.PASSED, None)  # type: ignore[arg-type]
            for i in range(30)
        )
    )
    assert [status(kube, f"s-{i}")["totalRuns"] for i in range(scenarios)] == [30 // scenarios] * scenarios
