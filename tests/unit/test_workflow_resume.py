"""A workflow run resumed after a crash at every status write (engine/workflow/), as test_run_resume does for runs.

Each case runs once without interruption on an in-memory API server; its children are played by a driver that
moves each child TestRun to the phase the case gives its node (a long node runs until it is aborted). Then, for
every status write k of the parent, the case runs again with the process dying right after write k, and a new
machine resumes from what the API server holds. The resumed run must end as the uninterrupted one did, with the
same node phases, having created each child exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from coordinator.adapters.kube import resource_path
from coordinator.api.models import RESUME_ANNOTATION, TERMINAL_PHASES, WORKFLOW_NODE_LABEL, TestRunStatus
from coordinator.engine.run import RetryLater, RunHandle
from coordinator.engine.run.stages import TRANSITIONS, WORKFLOW_ONLY, Position, Stage, position_of
from coordinator.engine.workflow import WorkflowMachine
from coordinator.engine.workflow.children import child_body
from coordinator.settings import Settings
from support.fake_kube import Call, Crash, FakeKube, LiveBody, RunClock

NS = "shop"
RUN = resource_path("TestRun", NS, "run")
RUNS = resource_path("TestRun", NS)
WORKFLOW = resource_path("ChaosWorkflow", NS, "wf")
WEB = resource_path("Deployment", NS, "web")
LONG = "long"  # a node outcome: runs until aborted (then Cancelled)
PROBE_OK = {
    "name": "web",
    "type": "k8s",
    "mode": "continuous",
    "interval": "1s",
    "k8s": {"kind": "Deployment", "name": "web", "fieldPath": "spec.replicas", "operator": ">=", "value": 0},
}


def node(name: str, *deps: str, when: str = "Passed") -> dict[str, Any]:
    return {"name": name, "scenarioRef": {"name": "scn"}, "dependsOn": list(deps), "when": when}


@dataclass
class Case:
    nodes: list[dict[str, Any]]
    outcomes: dict[str, str]  # node -> the phase its child ends in (LONG: until aborted)
    ends: str
    phases: dict[str, str]  # node -> its final phase in the parent's status
    spec: dict[str, Any] = field(default_factory=dict)  # more of the workflow's spec
    abort_when: Callable[[dict[str, Any]], bool] | None = None  # abort the parent once its status says so
    resume_gates: bool = False
    existing: tuple[str, ...] = ()  # nodes whose child exists before the run starts (created before a crash)


def _running(*names: str) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        nodes = {n["name"]: n["phase"] for n in status.get("nodes") or []}
        return all(nodes.get(name) == "Running" for name in names)

    return check


CASES: dict[str, Case] = {
    "serial": Case(
        [node("a"), node("b", "a")],
        {"a": "Passed", "b": "Passed"},
        "Passed",
        {"a": "Passed", "b": "Passed"},
    ),
    "conditions": Case(
        [node("a"), node("ok", "a"), node("alarm", "a", when="Failed"), node("end", "ok", "alarm", when="Always")],
        {"a": "Failed", "alarm": "Passed", "end": "Passed"},
        "Failed",
        {"a": "Failed", "ok": "Skipped", "alarm": "Passed", "end": "Passed"},
        spec={"failurePolicy": "Continue"},
    ),
    "stop-on-failure": Case(
        [node("long"), {"name": "wait", "suspend": {"duration": "2s"}}, node("broken", "wait"), node("next", "long")],
        {"long": LONG, "broken": "Failed"},
        "Failed",
        {"long": "Cancelled", "wait": "Passed", "broken": "Failed", "next": "Skipped"},
    ),
    "gate": Case(
        [node("a"), {"name": "approve", "suspend": {}, "dependsOn": ["a"]}, node("b", "approve")],
        {"a": "Passed", "b": "Passed"},
        "Passed",
        {"a": "Passed", "approve": "Passed", "b": "Passed"},
        resume_gates=True,
    ),
    "adopt": Case(
        [node("a"), node("b", "a")],
        {"a": "Passed", "b": "Passed"},
        "Passed",
        {"a": "Passed", "b": "Passed"},
        existing=("a",),
    ),
    "abort": Case(
        [node("x"), node("y"), node("z", "x")],
        {"x": LONG, "y": LONG},
        "Cancelled",
        {"x": "Cancelled", "y": "Cancelled", "z": "Skipped"},
        abort_when=_running("x", "y"),
    ),
    "abort-with-probes": Case(
        [node("x"), {"name": "gate", "suspend": {}}],
        {"x": LONG},
        "Cancelled",
        {"x": "Cancelled", "gate": "Cancelled"},
        spec={"steadyState": {"probes": [PROBE_OK]}},
        abort_when=_running("x"),
    ),
}


def setup(case: Case) -> FakeKube:
    kube = FakeKube()
    kube.add(WEB, {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 3}})
    kube.add(WORKFLOW, {"metadata": {"name": "wf"}, "spec": {"nodes": case.nodes, **case.spec}})
    kube.add(
        RUN, {"metadata": {"name": "run", "namespace": NS, "uid": "run-uid"}, "spec": {"workflowRef": {"name": "wf"}}}
    )
    for name in case.existing:
        child = child_body(kube.stored(RUN), name, {"scenarioRef": {"name": "scn"}})
        kube.add(f"{RUNS}/{child['metadata']['name']}", child)
    return kube


@dataclass
class Outcome:
    positions: list[Position]
    created: Counter[str]  # child TestRun -> successful creations
    final: dict[str, Any]


async def drive(kube: FakeKube, clock: RunClock, case: Case) -> None:
    """Play the children (and a person at the gates): every tick, move each child one step on, and the clock."""
    while True:
        await asyncio.sleep(0.001)
        clock.moment += timedelta(milliseconds=200)
        for path, obj in list(kube.objects.items()):
            if not path.startswith(RUNS + "/") or path == RUN:
                continue
            status = obj.setdefault("status", {})
            name = obj["metadata"]["labels"][WORKFLOW_NODE_LABEL]
            if status.get("phase") in TERMINAL_PHASES:
                continue
            if obj["spec"].get("abort"):
                status.update(phase="Cancelled", reason="Aborted", completedAt="2026-01-01T00:10:00Z")
            elif status.get("phase") is None:
                status.update(phase="Running", reason="Started")
            elif case.outcomes[name] != LONG:
                status.update(phase=case.outcomes[name], reason="Done", resilienceScore=80)
                status["completedAt"] = "2026-01-01T00:10:00Z"
        parent = kube.objects[RUN]
        nodes = (parent.get("status") or {}).get("nodes") or []
        if case.resume_gates and any(n["phase"] == "Suspended" for n in nodes):
            parent["metadata"].setdefault("annotations", {})[RESUME_ANNOTATION] = "true"
        if case.abort_when is not None and case.abort_when(parent.get("status") or {}):
            parent["spec"]["abort"] = True


async def play(name: str, crash_after: int | None = None) -> Outcome:
    case = CASES[name]
    kube = setup(case)
    clock = RunClock()
    settings = Settings(poll_interval=0.001, recovery_interval=0.001)
    positions: list[Position] = []
    created: Counter[str] = Counter()
    crashed = False

    def after(call: Call) -> None:
        nonlocal crashed
        if call.verb == "create" and call.path.startswith(RUNS + "/"):
            created[call.path.rsplit("/", 1)[1]] += 1
        if call.path == RUN + "/status":
            positions.append(position_of(TestRunStatus.model_validate(kube.objects[RUN].get("status") or {})))
            if crash_after is not None and len(positions) == crash_after and not crashed:
                crashed = True
                raise Crash

    kube.after = after
    driver = asyncio.create_task(drive(kube, clock, case))
    try:
        for _attempt in range(20):
            stored = kube.stored(RUN)
            if (stored.get("status") or {}).get("phase") in TERMINAL_PHASES:
                break
            machine = WorkflowMachine(
                kube, settings, RunHandle(body=LiveBody(kube, RUN), stopped=lambda: False), stored=stored, clock=clock
            )
            with contextlib.suppress(RetryLater, Crash):
                async with asyncio.timeout(20):
                    await machine.execute()
        else:
            pytest.fail(f"{name}: the workflow run did not end: {kube.objects[RUN].get('status')}")
    finally:
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
    posted = Counter(
        call.path.rsplit("/", 1)[1]
        for call in kube.calls
        if call.verb == "create" and call.path.startswith(RUNS + "/") and call.path != RUN
    )
    assert set(posted.values()) <= {1}, f"a child was POSTed more than once: {posted}"
    existing = {f"run-{name}" for name in case.existing}
    assert not set(posted) & existing, f"an existing child is adopted, never POSTed again: {posted}"
    return Outcome(positions, created, kube.stored(RUN)["status"])


UNINTERRUPTED: dict[str, Outcome] = {}


def crash_points() -> list[tuple[str, int]]:
    points = []
    for name in CASES:
        outcome = asyncio.run(play(name))
        UNINTERRUPTED[name] = outcome
        points += [(name, k) for k in range(1, len(outcome.positions) + 1)]
    return points


CRASH_POINTS = crash_points()


def node_phases(status: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["phase"] for n in status["nodes"]}


@pytest.mark.parametrize("name", list(CASES))
def test_every_case_ends_as_expected(name: str) -> None:
    outcome = UNINTERRUPTED[name]
    case = CASES[name]
    assert outcome.final["phase"] == case.ends, outcome.final.get("message")
    assert node_phases(outcome.final) == case.phases
    assert set(outcome.created.values()) <= {1}, outcome.created
    assert outcome.final.get("ending") is None


@pytest.mark.parametrize(("name", "k"), CRASH_POINTS, ids=[f"{n} | after write {k}" for n, k in CRASH_POINTS])
async def test_a_crash_after_any_write_resumes_without_creating_a_node_twice(name: str, k: int) -> None:
    expected = UNINTERRUPTED[name]
    resumed = await play(name, crash_after=k)
    assert resumed.positions[k - 1] == expected.positions[k - 1]
    assert resumed.final["phase"] == expected.final["phase"]
    assert resumed.final["reason"] == expected.final["reason"]
    assert node_phases(resumed.final) == node_phases(expected.final)
    assert resumed.created == expected.created, "every child created exactly once, as without the crash"


def test_the_workflow_moves_are_crashed_after() -> None:
    crossed: set[tuple[Stage, Stage]] = set()
    for name, k in CRASH_POINTS:
        positions = UNINTERRUPTED[name].positions
        before = positions[k - 2] if k >= 2 else Position(Stage.PENDING)
        crossed.add((before.stage, positions[k - 1].stage))
    assert crossed >= WORKFLOW_ONLY, sorted(f"{a} -> {b}" for a, b in WORKFLOW_ONLY - crossed)
    unknown = sorted(f"{a} -> {b}" for a, b in crossed - set(TRANSITIONS))
    assert not unknown, unknown
