"""How a step's changes go out (StepRunner.apply): a sliding window of APPLY_PARALLELISM, halted by a failure.

The Kubernetes client is a recording stand-in here: what is under test is the engine's scheduling of requests,
not the API server (the e2e tiers run the same code against a real one).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError
from coordinator.api.models import ChaosScenarioSpec, InjectionState, TargetRef
from coordinator.engine.run import RunHandle, RunMachine
from coordinator.engine.run.admission import load_snapshot
from coordinator.engine.run.steps import APPLY_PARALLELISM
from coordinator.faults.base import FaultError, new_injection
from coordinator.settings import Settings

PODS = 100


class RecordingClient:
    """Pod DELETEs that take until the test lets them go (per pod), Events and status PATCHes recorded."""

    def __init__(self, failing: str | None = None) -> None:
        self.failing = failing
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[str] = []
        self.finished: list[str] = []
        self.patches: list[dict[str, Any]] = []
        self.held: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()

    async def until_finished(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.finished) < count:
                self.changed.clear()
                await self.changed.wait()

    async def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        self.started.append(name)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if name in self.held:
                await self.held[name].wait()
            await asyncio.sleep(0)
            if name == self.failing:
                raise ApiError(422, "Invalid", f"pod {name} cannot be deleted")
            return {}
        finally:
            self.in_flight -= 1
            self.finished.append(name)
            self.changed.set()

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        return {}  # Events

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        self.patches.append(body)
        return {}


def executor(client: RecordingClient) -> RunMachine:
    scenario = ChaosScenarioSpec.model_validate(
        {
            "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
            "mode": "all",
            "steps": [{"name": "kill", "duration": "0s", "faults": [{"type": "pod-kill"}]}],
        }
    )
    injections = [
        new_injection(0, 0, "pod-kill", TargetRef(kind="Pod", namespace="shop", name=f"pod-{n}", uid=f"u{n}"), None)
        for n in range(PODS)
    ]
    stored = {
        "metadata": {"namespace": "shop", "name": "run", "uid": "run-uid"},
        "spec": {"scenarioRef": {"name": "kill"}},
        "status": {
            "phase": "Running",
            "steps": [{"name": "kill", "outcome": "Pending", "targetCount": PODS}],
            "injections": [i.model_dump(mode="json", exclude_none=True) for i in injections],
            "scenarioSnapshot": json.dumps(scenario.model_dump(mode="json", exclude_none=True)),
        },
    }
    run = RunMachine(client, Settings(), RunHandle(body=stored, stopped=lambda: False), stored=stored)  # type: ignore[arg-type]
    load_snapshot(run.state)
    return run


async def test_a_slow_change_does_not_hold_up_the_others() -> None:
    """pod-0 is held until every other pod is deleted: batches of 32 would wait for it forever."""
    client = RecordingClient()
    client.held["pod-0"] = asyncio.Event()
    run = executor(client)
    applying = asyncio.create_task(run.steps.apply(0, run.steps.context(0)))
    await client.until_finished(PODS - 1)
    client.held["pod-0"].set()
    await asyncio.wait_for(applying, 10)
    assert sorted(client.finished) == sorted(f"pod-{n}" for n in range(PODS))
    assert client.most_in_flight == APPLY_PARALLELISM
    assert {i.state for i in run.state.status.injections} == {InjectionState.IRREVERSIBLE}


async def test_after_a_failure_no_further_change_starts_and_what_happened_is_written() -> None:
    client = RecordingClient(failing="pod-10")
    run = executor(client)
    with pytest.raises(FaultError, match="pod-10"):
        await run.steps.apply(0, run.steps.context(0))
    assert len(client.started) < PODS, "changes after the failure were not started"
    assert len(client.started) <= 10 + 1 + APPLY_PARALLELISM
    assert sorted(client.finished) == sorted(client.started), "every change in flight finished"
    states = {i.target.name: i.state for i in run.state.status.injections}
    assert states["pod-10"] == InjectionState.FAILED
    assert {states[name] for name in client.started if name != "pod-10"} == {InjectionState.IRREVERSIBLE}
    assert {s for name, s in states.items() if name not in client.started} == {InjectionState.RECORDED}
    (written,) = client.patches
    assert [i["state"] for i in written["status"]["injections"]] == [str(states[f"pod-{n}"]) for n in range(PODS)], (
        "the status written holds each change's state"
    )


async def test_a_stop_halts_the_window() -> None:
    client = RecordingClient()
    client.held["pod-0"] = asyncio.Event()
    stopped = False
    run = executor(client)
    run.state.handle = RunHandle(body=run.state.handle.body, stopped=lambda: stopped)
    applying = asyncio.create_task(run.steps.apply(0, run.steps.context(0)))
    await client.until_finished(APPLY_PARALLELISM)
    stopped = True
    client.held["pod-0"].set()
    with pytest.raises(Exception, match="operator stopping"):
        await asyncio.wait_for(applying, 10)
    assert len(client.started) < PODS
    assert sorted(client.finished) == sorted(client.started)
