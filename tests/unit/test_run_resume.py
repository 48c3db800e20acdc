"""Resume after a crash, at every transition of the run machine (engine/run/stages.py).

Each scenario below runs once without interruption on an in-memory API server (tests/support/fake_kube.py),
recording the run's position after every status write. Then, for every write k, the same scenario runs again
with the process "dying" right after write k (``Crash`` passes every ``except Exception``), and a new machine,
with fresh in-process state (target locks, probe sessions), resumes from what the API server holds. The resumed
run must end as the uninterrupted one did, having made exactly the same changes to the targets (no change
applied twice, none forgotten), leaving no record of ours on any target.

``test_every_transition_is_crashed_after`` checks that the writes crashed after cover every entry of the
transition table, so a new transition needs a scenario here.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import TERMINAL_PHASES, TestRunStatus
from coordinator.engine.locks import LocalTargetLocks, LockLease
from coordinator.engine.pausing import PAUSES
from coordinator.engine.run import RetryLater, RunHandle, RunMachine, Waiting
from coordinator.engine.run.stages import TRANSITIONS, WORKFLOW_ONLY, Position, Stage, position_of
from coordinator.faults.base import ANNOTATION_PREFIX, INJECTED_LABEL
from coordinator.settings import Settings
from support.fake_kube import Call, Crash, FakeKube, LiveBody, RunClock

NS = "shop"
RUN = resource_path("TestRun", NS, "run")
SCENARIO = resource_path("ChaosScenario", NS, "scn")
WEB = resource_path("Deployment", NS, "web")
OTHER_RUN = resource_path("TestRun", NS, "other")
WEB_LOCK = f"Deployment/{NS}/web"


SCALE = {"type": "scale", "scale": {"replicas": 1}}
SCALE_ZERO = {"type": "scale", "scale": {"replicas": 0}}
PROBE_OK = {
    "name": "web",
    "type": "k8s",
    "k8s": {"kind": "Deployment", "name": "web", "fieldPath": "spec.replicas", "operator": ">=", "value": 0},
}
PROBE_BAD = {**PROBE_OK, "name": "ten", "k8s": {**PROBE_OK["k8s"], "value": 10}}
DEPLOYMENTS = {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "web"}}}
PODS = {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}}
NOTHING = {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "nothing"}}}


def steps(*faults: dict[str, Any], duration: str = "5s") -> list[dict[str, Any]]:
    return [{"name": f"step-{n}", "duration": duration, "faults": [f]} for n, f in enumerate(faults)]


@dataclass
class Case:
    """A scenario, the run's spec, the operator's settings, and what happens around the run."""

    scenario: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    ends: str = "Passed"
    # Called with the fake and the run's position after each status write of the run.
    on_write: Callable[[World, Position], None] | None = None
    # Called when an attempt ends Waiting (a queue): whatever frees the slot or the lock.
    on_wait: Callable[[World], None] | None = None
    # Called before each mutating call; returns an ApiError to refuse the call with.
    refuse: Callable[[World, Call], ApiError | None] | None = None
    other_running: bool = False
    paused: bool = False  # the run's namespace carries chaos.coordinator.dev/paused=true from the start


@dataclass
class World:
    kube: FakeKube
    locks: LocalTargetLocks
    foreign: LockLease | None = None
    counters: Counter[str] = field(default_factory=Counter)


def hold_web_lock(world: World) -> None:
    world.foreign = LockLease((WEB_LOCK,), "another-run")
    world.locks.acquire(world.foreign, 3600)


def release_web_lock(world: World) -> None:
    if world.foreign is not None:
        world.locks.release(world.foreign)
        world.foreign = None


def abort_once_injected(world: World, position: Position) -> None:
    if position.stage == Stage.INJECTED:
        world.kube.objects[RUN]["spec"]["abort"] = True


def refuse_reverts(times: int) -> Callable[[World, Call], ApiError | None]:
    """Refuse the first ``times`` patches that put the Deployment's replicas back."""

    def refuse(world: World, call: Call) -> ApiError | None:
        spec = (call.body or {}).get("spec") or {}
        if call.verb == "patch" and call.path == WEB and spec.get("replicas") == 3:
            world.counters["refused"] += 1
            if world.counters["refused"] <= times:
                return ApiError(503, "ServiceUnavailable", "the API server is away")
        return None

    return refuse


def refuse_once(matches: Callable[[Mapping[str, Any]], bool]) -> Callable[[World, Call], ApiError | None]:
    """Refuse the first patch of the Deployment whose spec ``matches``, as an API server that is away."""

    def refuse(world: World, call: Call) -> ApiError | None:
        spec = (call.body or {}).get("spec") or {}
        if call.verb == "patch" and call.path == WEB and matches(spec) and not world.counters["refused once"]:
            world.counters["refused once"] += 1
            return ApiError(503, "ServiceUnavailable", "the API server is away")
        return None

    return refuse


def refuse_scale(world: World, call: Call) -> ApiError | None:
    spec = (call.body or {}).get("spec") or {}
    if call.verb == "patch" and call.path == WEB and spec.get("replicas") == 1:
        return ApiError(422, "Invalid", "spec.replicas: refused by an admission webhook")
    return None


def free_slot(world: World) -> None:
    world.kube.objects[OTHER_RUN]["status"] = {"phase": "Passed"}


def pause_once_injected(world: World, position: Position) -> None:
    if position.stage == Stage.INJECTED:
        PAUSES.set(NS, True)


def resume(world: World) -> None:
    PAUSES.set(NS, False)


def pause_then_resume(world: World) -> None:
    """First wait (queued): a slot frees, but the namespace is paused meanwhile; second wait: resumed."""
    world.counters["waits"] += 1
    if world.counters["waits"] == 1:
        free_slot(world)
        PAUSES.set(NS, True)
    else:
        resume(world)


def lock_before_second_step(world: World, position: Position) -> None:
    if position == Position(Stage.REVERTED, 0) and world.counters["locked"] == 0:
        world.counters["locked"] += 1
        hold_web_lock(world)


CASES: dict[str, Case] = {
    "probes and two scale steps": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE, SCALE_ZERO), "steadyState": {"probes": [PROBE_OK]}}
    ),
    "a continuous probe through a long hold": Case(
        {
            "target": DEPLOYMENTS,
            "steps": steps(SCALE, duration="25s"),
            "steadyState": {"probes": [{**PROBE_OK, "mode": "continuous", "interval": "2s"}]},
        }
    ),
    "two 0s pod kills without probes": Case(
        {
            "target": PODS,
            "mode": "fixed",
            "value": 1,
            "steps": steps({"type": "pod-kill"}, {"type": "pod-kill"}, duration="0s"),
        },
        run={"seed": 7},
    ),
    "a dry run": Case({"target": DEPLOYMENTS, "steps": steps(SCALE, SCALE_ZERO)}, run={"dryRun": True}),
    "a dry run with probes": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE, SCALE_ZERO), "steadyState": {"probes": [PROBE_OK]}},
        run={"dryRun": True},
    ),
    "a dry run under a cap": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, run={"dryRun": True}, settings={"max_concurrent_runs": 5}
    ),
    "a scale step under a cap": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, settings={"max_concurrent_runs": 5}
    ),
    "queued, then a slot frees": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)},
        settings={"max_concurrent_runs": 1},
        other_running=True,
        on_wait=free_slot,
    ),
    "aborted while queued": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)},
        settings={"max_concurrent_runs": 1},
        other_running=True,
        on_wait=lambda world: world.kube.objects[RUN]["spec"].__setitem__("abort", True),
        ends="Cancelled",
    ),
    "paused, then resumed": Case({"target": DEPLOYMENTS, "steps": steps(SCALE)}, paused=True, on_wait=resume),
    "queued, then paused, then resumed": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)},
        settings={"max_concurrent_runs": 1},
        other_running=True,
        on_wait=pause_then_resume,
    ),
    "paused while the fault holds": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, on_write=pause_once_injected, ends="Cancelled"
    ),
    "a scenario that is not there": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, run={"scenarioRef": {"name": "gone"}}, ends="Error"
    ),
    "a failing baseline": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE), "steadyState": {"probes": [{**PROBE_BAD, "mode": "before"}]}},
        ends="Failed",
    ),
    "no targets, with probes": Case(
        {"target": NOTHING, "steps": steps(SCALE), "steadyState": {"probes": [PROBE_OK]}}, ends="Failed"
    ),
    "a change the API server refuses": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, refuse=refuse_scale, ends="Error"
    ),
    "an apply the API server refuses once for now": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, refuse=refuse_once(lambda spec: spec.get("replicas") == 1)
    ),
    "a revert that fails once within the step": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, refuse=refuse_reverts(1)
    ),
    "aborted while the fault holds": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)}, on_write=abort_once_injected, ends="Cancelled"
    ),
    "aborted, and the revert fails twice": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)},
        on_write=abort_once_injected,
        refuse=refuse_reverts(2),
        ends="Cancelled",
    ),
    "a refused change whose revert fails": Case(
        {"target": DEPLOYMENTS, "steps": [{"name": "both", "duration": "5s", "faults": [SCALE_ZERO, SCALE]}]},
        refuse=lambda world, call: refuse_scale(world, call) or refuse_reverts(1)(world, call),
        ends="Error",
    ),
    "the target locked before the first step": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE)},
        settings={"max_concurrent_runs": 5},
        on_wait=release_web_lock,
    ),
    "the target locked before the first step, with probes": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE), "steadyState": {"probes": [PROBE_OK]}},
        on_wait=release_web_lock,
    ),
    "the target locked before the second step": Case(
        {"target": DEPLOYMENTS, "steps": steps(SCALE, SCALE_ZERO), "steadyState": {"probes": [PROBE_OK]}},
        on_write=lock_before_second_step,
        on_wait=release_web_lock,
    ),
}
LOCKED_FROM_THE_START = {
    "the target locked before the first step",
    "the target locked before the first step, with probes",
}


def setup(case: Case) -> FakeKube:
    kube = FakeKube()
    kube.add(
        resource_path("Namespace", name=NS),
        {"metadata": {"name": NS, "labels": {"chaos.coordinator.dev/allow": "true"}}},
    )
    kube.add(SCENARIO, {"metadata": {"name": "scn", "namespace": NS}, "spec": case.scenario})
    kube.add(WEB, {"metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}}, "spec": {"replicas": 3}})
    for n in range(3):
        kube.add(
            resource_path("Pod", NS, f"web-{n}"),
            {
                "metadata": {"name": f"web-{n}", "namespace": NS, "labels": {"app": "web"}, "uid": f"pod-{n}"},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            },
        )
    spec = {"scenarioRef": {"name": "scn"}, **case.run}
    kube.add(RUN, {"metadata": {"name": "run", "namespace": NS, "uid": "run-uid"}, "spec": spec})
    if case.other_running:
        kube.add(
            OTHER_RUN,
            {
                "metadata": {"name": "other", "namespace": NS, "uid": "other-uid"},
                "spec": {"scenarioRef": {"name": "scn"}},
                "status": {"phase": "Running"},
            },
        )
    return kube


@dataclass
class Outcome:
    positions: list[Position]  # after each status write of the run, in order
    effects: Counter[str]  # every change made to a target
    final: dict[str, Any]  # the run's final status
    targets: dict[str, dict[str, Any]]  # the Deployment and the pods left


async def play(name: str, crash_after: int | None = None) -> Outcome:
    case = CASES[name]
    kube = setup(case)
    world = World(kube, LocalTargetLocks())
    if name in LOCKED_FROM_THE_START:
        hold_web_lock(world)
    clock = RunClock()
    settings = Settings(poll_interval=1, recovery_interval=1, **case.settings)
    positions: list[Position] = []
    effects: Counter[str] = Counter()
    crashed = False

    def before(call: Call) -> None:
        if case.refuse is not None and call.path != RUN + "/status" and (refused := case.refuse(world, call)):
            raise refused

    def after(call: Call) -> None:
        nonlocal crashed
        if call.path == RUN + "/status":
            position = position_of(TestRunStatus.model_validate(kube.objects[RUN].get("status") or {}))
            positions.append(position)
            if case.on_write is not None:
                case.on_write(world, position)
            if crash_after is not None and len(positions) == crash_after and not crashed:
                crashed = True
                raise Crash
        elif call.path.startswith((WEB, resource_path("Pod", NS))) and call.verb in ("patch", "delete"):
            body = call.body or {}
            if call.verb == "delete":
                effects[f"delete {call.path}"] += 1
            elif "spec" in body:
                effects[f"patch {call.path} {body['spec']}"] += 1

    kube.before = before
    kube.after = after
    PAUSES.reset("test-coordinator", [NS] if case.paused else [])
    try:
        return await _attempts(name, case, kube, world, clock, settings, positions, effects)
    finally:
        PAUSES.reset(None, [])


async def _attempts(
    name: str,
    case: Case,
    kube: FakeKube,
    world: World,
    clock: RunClock,
    settings: Settings,
    positions: list[Position],
    effects: Counter[str],
) -> Outcome:
    for _attempt in range(40):
        stored = kube.stored(RUN)
        if (stored.get("status") or {}).get("phase") in TERMINAL_PHASES:
            break
        machine = RunMachine(
            kube,
            settings,
            RunHandle(body=LiveBody(kube, RUN), stopped=lambda: False),
            stored=stored,
            locks=world.locks,
            clock=clock,
        )
        try:
            await machine.execute()
        except Waiting:
            if case.on_wait is not None:
                case.on_wait(world)
        except RetryLater:
            pass
        except Crash:
            # The process is gone: its in-memory target locks with it (a lock held by another run stays).
            fresh = LocalTargetLocks()
            if world.foreign is not None:
                fresh.acquire(world.foreign, 3600)
            world.locks = fresh
    else:
        pytest.fail(f"{name}: the run did not end within 40 attempts: {kube.objects[RUN].get('status')}")
    targets = {
        path: copy.deepcopy(obj)
        for path, obj in kube.objects.items()
        if path.startswith((WEB, resource_path("Pod", NS)))
    }
    return Outcome(positions, effects, kube.stored(RUN)["status"], targets)


def essentials(status: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "phase": status["phase"],
        "reason": status["reason"],
        "ledger": [(i["id"], i["state"]) for i in status.get("injections", [])],
        "steps": [s["outcome"] for s in status.get("steps", [])],
    }


def no_records(targets: Mapping[str, Mapping[str, Any]]) -> None:
    for path, obj in targets.items():
        meta = obj.get("metadata", {})
        assert not [k for k in meta.get("annotations") or {} if k.startswith(ANNOTATION_PREFIX)], path
        assert INJECTED_LABEL not in (meta.get("labels") or {}), path


async def test_probe_samples_reach_status_while_the_faults_hold() -> None:
    """A 25 s hold with a probe sampled every 2 s: besides the write that applies the step, its samples are
    written every SAMPLES_WRITE_INTERVAL (10 s), not only when the step is reverted."""
    seen: list[int] = []
    case = CASES["a continuous probe through a long hold"]

    def count_samples(world: World, position: Position) -> None:
        if position == Position(Stage.INJECTED, 0):
            probes = world.kube.objects[RUN]["status"].get("probes") or []
            seen.append(len(probes[0].get("recent") or []) if probes else 0)

    CASES["samples"] = Case(case.scenario, on_write=count_samples)
    try:
        outcome = await play("samples")
    finally:
        del CASES["samples"]
    assert outcome.positions.count(Position(Stage.INJECTED, 0)) == 3, outcome.positions
    assert seen[0] < seen[1] < seen[2], f"each write carries the samples taken since: {seen}"
    assert seen[2] < len(outcome.final["probes"][0]["recent"]), "the revert's write carries the rest"


UNINTERRUPTED: dict[str, Outcome] = {}  # each scenario's plain run, filled by crash_points() at collection


@pytest.mark.parametrize("name", list(CASES))
async def test_every_scenario_ends_as_expected_and_its_writes_follow_the_table(name: str) -> None:
    outcome = UNINTERRUPTED[name]
    assert outcome.final["phase"] == CASES[name].ends, outcome.final.get("message")
    no_records(outcome.targets)
    assert outcome.targets[WEB]["spec"]["replicas"] == 3


def crash_points() -> list[tuple[str, int]]:
    """(scenario, k) for every status write k of each scenario's uninterrupted run (found by running it)."""
    import asyncio

    points = []
    for name in CASES:
        outcome = asyncio.run(play(name))
        UNINTERRUPTED[name] = outcome
        points += [(name, k) for k in range(1, len(outcome.positions) + 1)]
    return points


CRASH_POINTS = crash_points()


@pytest.mark.parametrize(("name", "k"), CRASH_POINTS, ids=[f"{n} | after write {k}" for n, k in CRASH_POINTS])
async def test_a_crash_after_any_write_resumes_without_repeating_or_forgetting_a_change(name: str, k: int) -> None:
    expected = UNINTERRUPTED[name]
    resumed = await play(name, crash_after=k)
    assert resumed.positions[k - 1] == expected.positions[k - 1], "the crash came where the plain run wrote"
    assert essentials(resumed.final) == essentials(expected.final)
    assert resumed.effects == expected.effects, "every change made exactly as often as without the crash"
    assert shape(resumed.targets) == shape(expected.targets), "the same targets left, in the same state"
    no_records(resumed.targets)


def shape(targets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        p: (o.get("spec"), o["metadata"].get("labels"), o["metadata"].get("annotations")) for p, o in targets.items()
    }


def test_every_transition_is_crashed_after() -> None:
    """Each entry of the transition table is the last write before some crash above."""
    crossed: set[tuple[Stage, Stage]] = set()
    for name, k in CRASH_POINTS:
        positions = UNINTERRUPTED[name].positions
        before = positions[k - 2] if k >= 2 else Position(Stage.PENDING)
        crossed.add((before.stage, positions[k - 1].stage))
    missing = sorted(f"{a} -> {b}" for a, b in set(TRANSITIONS) - WORKFLOW_ONLY - crossed)
    assert not missing, f"transitions no scenario crosses: {missing}"
    unknown = sorted(f"{a} -> {b}" for a, b in crossed - set(TRANSITIONS))
    assert not unknown, unknown
