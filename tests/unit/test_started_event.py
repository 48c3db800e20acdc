"""The Started Event of a run waits for the run's next Event (after the first injection), stamped when the run
started: a burst of new runs must not post one Event each before any of them injects (benchmarks/README.md).

The Kubernetes client is a recording stand-in: what is under test is the order of a run's requests.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from coordinator.adapters.kube import listed_items
from coordinator.engine.executor import Executor, RunHandle, RunInterrupted
from coordinator.settings import Settings

SCENARIO = {
    "metadata": {"name": "kill", "namespace": "shop", "generation": 1, "resourceVersion": "1"},
    "spec": {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "one",
        "steps": [{"name": "kill", "duration": "0s", "faults": [{"type": "pod-kill"}]}],
    },
}
POD = {"metadata": {"name": "web-1", "namespace": "shop", "uid": "pod-uid", "labels": {"app": "web"}}}


class RecordingClient:
    """Answers a pod-kill run's requests; records each as (verb, what) in order, and the Events posted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        self.calls.append(("GET", path))
        if "/chaosscenarios/" in path:
            return SCENARIO
        return {"metadata": {"name": "shop", "labels": {"chaos.coordinator.dev/allow": "true"}}}

    async def list_summaries(self, path: str, **_: Any) -> Any:
        self.calls.append(("LIST", path))
        return listed_items(orjson.dumps({"items": [POD]}), path)

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        self.calls.append(("PATCH", path))
        return {}

    async def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append(("DELETE", path))
        return {}

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        self.calls.append(("POST", path))
        if path.endswith("/events"):
            self.events.append(body)
        return {}


async def test_the_started_event_follows_the_first_injection_stamped_when_the_run_started() -> None:
    client = RecordingClient()
    stored = {
        "metadata": {"namespace": "shop", "name": "run", "uid": "run-uid"},
        "spec": {"scenarioRef": {"name": "kill"}},
    }
    run = Executor(client, Settings(), RunHandle(body=stored, stopped=lambda: False), stored=stored)  # type: ignore[arg-type]
    await run.execute()

    verbs = [verb for verb, _ in client.calls]
    deletion = verbs.index("DELETE")
    assert "POST" not in verbs[:deletion], f"no Event before the first injection: {client.calls}"
    reasons = [e["reason"] for e in client.events if e["involvedObject"]["kind"] == "TestRun"]
    assert reasons == ["Started", "Injected", "Completed"]
    started = next(e for e in client.events if e["reason"] == "Started")
    assert run.status.startedAt is not None
    assert started["firstTimestamp"] == run.status.startedAt[:19] + "Z", "stamped when the run started"


async def test_a_held_event_is_posted_when_the_run_stops_before_its_next_one() -> None:
    client = RecordingClient()
    stored = {
        "metadata": {"namespace": "shop", "name": "run", "uid": "run-uid"},
        "spec": {"scenarioRef": {"name": "kill"}},
    }
    stop = False
    run = Executor(client, Settings(), RunHandle(body=stored, stopped=lambda: stop), stored=stored)  # type: ignore[arg-type]

    real_start = run.start

    async def start_then_stop() -> None:
        nonlocal stop
        await real_start()
        stop = True

    run.start = start_then_stop  # type: ignore[method-assign]
    with pytest.raises(RunInterrupted):
        await run.execute()  # the operator stops right after the start
    assert [e["reason"] for e in client.events] == ["Started"]
    assert "DELETE" not in [verb for verb, _ in client.calls]
