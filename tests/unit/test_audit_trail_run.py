"""The audit_trail assertion in a run, on an in-memory API server (tests/support/fake_kube.py): it is judged on the
ledger as the final revert leaves it, however the run ends.

The requester is put into the TestRun's status as the run starts it (``status.requestedBy``, filled from the
requested-by annotation when the run starts), which is what the assertion reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import TERMINAL_PHASES, Requester
from coordinator.engine.locks import LocalTargetLocks
from coordinator.engine.run import RetryLater, RunHandle, RunMachine
from coordinator.settings import Settings
from support.fake_kube import Call, FakeKube, LiveBody, RunClock

NS = "shop"
RUN = resource_path("TestRun", NS, "run")
WEB = resource_path("Deployment", NS, "web")
ALICE = Requester(username="alice", uid="alice-uid", groups=["team-a"])
SCALE_STEP = {"name": "scale", "duration": "5s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}
TRAIL = {"name": "trail", "type": "audit_trail"}
READY = {
    "name": "web",
    "type": "k8s",
    "k8s": {"kind": "Deployment", "name": "web", "fieldPath": "spec.replicas", "operator": ">=", "value": 0},
}


def world(requester: Requester | None, assertions: list[dict[str, Any]]) -> FakeKube:
    kube = FakeKube()
    kube.requester = requester  # the requested-by annotation the webhook would have written (None: none)
    kube.add(
        resource_path("Namespace", name=NS),
        {"metadata": {"name": NS, "labels": {"chaos.coordinator.dev/allow": "true"}}},
    )
    scenario = {
        "target": {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "web"}}},
        "steps": [SCALE_STEP],
        "steadyState": {"probes": [READY]},
        "assertions": assertions,
    }
    kube.add(
        resource_path("ChaosScenario", NS, "scn"), {"metadata": {"name": "scn", "namespace": NS}, "spec": scenario}
    )
    kube.add(WEB, {"metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}}, "spec": {"replicas": 3}})
    run: dict[str, Any] = {"metadata": {"name": "run", "namespace": NS, "uid": "run-uid"}}
    run["spec"] = {"scenarioRef": {"name": "scn"}}
    kube.add(RUN, run)
    return kube


async def attempt(kube: FakeKube, clock: RunClock) -> bool:
    """One attempt of the run machine; whether it asked to be retried."""
    machine = RunMachine(
        kube,
        Settings(poll_interval=1, recovery_interval=1),
        RunHandle(body=LiveBody(kube, RUN), stopped=lambda: False),
        stored=kube.stored(RUN),
        locks=LocalTargetLocks(),
        clock=clock,
    )
    try:
        await machine.execute()
    except RetryLater:
        return True
    return False


async def finish(kube: FakeKube) -> dict[str, Any]:
    clock = RunClock()
    for _ in range(10):
        await attempt(kube, clock)
        status: dict[str, Any] = kube.stored(RUN).get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            return status
    raise AssertionError(f"the run did not end: {kube.stored(RUN).get('status')}")


def result(status: Mapping[str, Any], name: str = "trail") -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in status.get("assertions") or [] if a["name"] == name)
    return found


async def test_a_run_whose_changes_are_reverted_and_whose_requester_is_known_passes() -> None:
    recovery = {"name": "fast", "type": "recovery_time", "expected": 60}
    status = await finish(world(ALICE, [recovery, TRAIL]))
    assert (status["phase"], status["reason"]) == ("Passed", "Completed"), status.get("message")
    assert [a["name"] for a in status["assertions"]] == ["fast", "trail"], "in the scenario's order"
    trail = result(status)
    assert trail["passed"] is True
    assert trail["actual"] == "1 change(s): 1 reverted, 0 one-shot, 0 not; requested by alice"


async def test_a_run_without_a_recorded_requester_never_gets_to_change_anything() -> None:
    """The trail cannot be complete without a requester; such a run does not even start (the assertion's own
    refusal of an unknown requester is unit-tested in test_verdict.py)."""
    kube = world(None, [TRAIL])
    status = await finish(kube)
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert not status.get("injections")
    assert kube.stored(WEB)["spec"]["replicas"] == 3


async def test_an_aborted_run_is_judged_after_its_final_revert() -> None:
    """Aborted while the fault holds: the verdict never runs, the final revert undoes the change, and only then is
    the trail judged (before that revert it would show a change without its revert)."""
    kube = world(ALICE, [TRAIL])

    def abort_once_injected(call: Call) -> None:
        if call.path == WEB and call.verb == "patch" and (call.body or {}).get("spec", {}).get("replicas") == 1:
            kube.objects[RUN]["spec"]["abort"] = True

    kube.after = abort_once_injected
    status = await finish(kube)
    assert status["phase"] == "Cancelled"
    trail = result(status)
    assert trail["passed"] is True, trail
    assert trail["actual"] == "1 change(s): 1 reverted, 0 one-shot, 0 not; requested by alice"


async def test_while_the_final_revert_fails_no_verdict_is_written() -> None:
    kube = world(ALICE, [TRAIL])
    refusals = {"left": 1}

    def abort_once_injected(call: Call) -> None:
        if call.path == WEB and call.verb == "patch" and (call.body or {}).get("spec", {}).get("replicas") == 1:
            kube.objects[RUN]["spec"]["abort"] = True

    def refuse_the_revert(call: Call) -> None:
        restoring = call.path == WEB and (call.body or {}).get("spec", {}).get("replicas") == 3
        if restoring and refusals["left"]:
            refusals["left"] -= 1
            raise ApiError(500, "Internal Server Error", "etcd is away")

    kube.after = abort_once_injected
    kube.before = refuse_the_revert
    clock = RunClock()
    assert await attempt(kube, clock), "the revert failed: the run is retried"
    pending = kube.stored(RUN)["status"]
    assert pending.get("phase") not in TERMINAL_PHASES
    assert all(a["type"] != "audit_trail" for a in pending.get("assertions") or []), "nothing judged yet"
    status = await finish(kube)
    assert status["phase"] == "Cancelled"
    assert result(status)["passed"] is True
