"""Triggers: the pure edge, cooldown and policy decisions; then the engine against the in-memory API server (runs,
status, restart, rights, the list-and-watch loop)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.base import ConcurrencyPolicy
from coordinator.api.models import REQUESTED_BY_ANNOTATION
from coordinator.api.triggers import Trigger
from coordinator.domain.timestamps import format_iso_seconds
from coordinator.domain.triggers import MAX_MATCHING, decide, recorded, run_name, triggered_by
from coordinator.engine.pausing import PAUSES, PauseBoard
from coordinator.engine.scheduler import SCENARIO_LABEL
from coordinator.engine.triggers import (
    TRIGGER_LABEL,
    TRIGGERED_BY_ANNOTATION,
    OwnerTriggers,
    TriggerFollower,
    TriggerWatch,
    meets,
    trigger_refusal,
)
from coordinator.handlers.scenarios import handle_triggers
from coordinator.settings import Settings
from support.fake_kube import FAKE_REQUESTER, FakeKube, LiveBody

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- the pure decision ---------------------------------------------------------------------------------------


def plan(previous: set[str] | None, meeting: set[str], **kwargs: Any) -> tuple[set[str], list[tuple[str, str]]]:
    options: dict[str, Any] = {
        "now": at(100),
        "last_fired": None,
        "cooldown": 60.0,
        "policy": ConcurrencyPolicy.ALLOW,
        "active": 0,
    } | kwargs
    result = decide(None if previous is None else frozenset(previous), meeting, **options)
    return set(result.matching), [(e.uid, e.skipped or str(e.action)) for e in result.edges]


def test_objects_meeting_the_conditions_when_first_seen_fire_nothing() -> None:
    assert plan(None, {"a", "b"}) == ({"a", "b"}, [])


def test_an_object_that_begins_to_meet_them_fires_once() -> None:
    assert plan(set(), {"a"}) == ({"a"}, [("a", "Create")])
    assert plan({"a"}, {"a"}) == ({"a"}, []), "still meeting: no new edge"


def test_an_object_fires_again_only_after_it_stopped_meeting_them() -> None:
    assert plan({"a"}, set()) == (set(), [])
    assert plan(set(), {"a"}) == ({"a"}, [("a", "Create")])


def test_an_edge_within_the_cooldown_is_skipped_and_says_why() -> None:
    _, [(uid, why)] = plan(set(), {"a"}, last_fired=at(70), cooldown=60.0)
    assert uid == "a"
    assert why == "within the cooldown (60s) of the last run at 2026-03-02T12:01:10Z"
    assert plan(set(), {"a"}, last_fired=at(40), cooldown=60.0)[1] == [("a", "Create")], "the cooldown is over"


def test_several_edges_at_once_fire_once_within_the_cooldown() -> None:
    whys = [why for _, why in plan(set(), {"a", "b", "c"})[1]]
    assert whys[0] == "Create"
    assert whys.count("Create") == 1
    assert len([why for _, why in plan(set(), {"a", "b", "c"}, cooldown=0.0)[1] if why == "Create"]) == 3


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (ConcurrencyPolicy.ALLOW, "Create"),
        (ConcurrencyPolicy.FORBID, "concurrencyPolicy Forbid: a run it started is still active"),
        (ConcurrencyPolicy.REPLACE, "Replace"),
    ],
)
def test_the_concurrency_policy_applies_to_the_runs_it_started(policy: ConcurrencyPolicy, expected: str) -> None:
    assert plan(set(), {"a"}, policy=policy, active=1)[1] == [("a", expected)]
    assert plan(set(), {"a"}, policy=policy, active=0)[1] == [("a", "Create")]


def test_forbid_skips_the_second_of_two_edges_at_once() -> None:
    edges = plan(set(), {"a", "b"}, cooldown=0.0, policy=ConcurrencyPolicy.FORBID)[1]
    assert [why for _, why in edges] == ["Create", "concurrencyPolicy Forbid: a run it started is still active"]


def test_a_pause_consumes_the_edge() -> None:
    matching, [(uid, why)] = plan(set(), {"a"}, paused="namespace ns is paused")
    assert (matching, uid, why) == ({"a"}, "a", "namespace ns is paused")


def test_the_recorded_matching_set_is_bounded_and_sorted() -> None:
    uids = [f"uid-{i:04d}" for i in range(MAX_MATCHING + 50)]
    assert recorded(reversed(uids)) == uids[:MAX_MATCHING]


def test_run_names_are_deterministic_bounded_and_distinct_per_edge() -> None:
    first = run_name("shop", "rollout", "uid-1", "g3", 0)
    assert first == run_name("shop", "rollout", "uid-1", "g3", 0), "the same edge: the same name (409, no duplicate)"
    assert first.startswith("shop-rollout-")
    assert (
        len({first, run_name("shop", "rollout", "uid-1", "g3", 1), run_name("shop", "rollout", "uid-2", "g3", 0)}) == 3
    )
    long = run_name("s" * 200, "t" * 40, "uid-1", "g1", 0)
    assert len(long) == 63


def test_triggered_by_names_the_trigger_the_object_and_the_time() -> None:
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": "shop", "name": "web", "uid": "u1", "resourceVersion": "42"},
    }
    assert json.loads(triggered_by("rollout", obj, T0)) == {
        "trigger": "rollout",
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "uid": "u1",
        "resourceVersion": "42",
        "at": "2026-03-02T12:00:00Z",
    }


# --- conditions, as the k8s probe compares fields --------------------------------------------------------------

ROLLOUT = {
    "name": "rollout",
    "resource": {"kind": "Deployment", "name": "web"},
    "conditions": [
        {"fieldPath": "status.updatedReplicas", "valueFromPath": "spec.replicas"},
        {"fieldPath": "status.observedGeneration", "valueFromPath": "metadata.generation"},
    ],
    "cooldown": "1m",
}


def deployment(uid: str = "dep-uid", generation: int = 2, updated: int | None = 3, observed: int = 2) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed}
    if updated is not None:
        status["updatedReplicas"] = updated
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": uid, "generation": generation},
        "spec": {"replicas": 3},
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (deployment(), True),
        (deployment(updated=2), False),
        (deployment(observed=1), False),
        (deployment(updated=None), False),  # an absent status counter is zero, as for the k8s probe
        ({**deployment(), "spec": {}}, False),  # nothing to compare with: not met
        ({**deployment(), "metadata": {**deployment()["metadata"], "deletionTimestamp": "x"}}, False),
    ],
)
def test_an_object_meets_a_trigger_when_every_condition_holds(obj: dict[str, Any], expected: bool) -> None:
    assert meets(obj, Trigger.model_validate(ROLLOUT)) is expected


# --- the engine against the in-memory API server ---------------------------------------------------------------

NS = "ns"
SCENARIO = resource_path("ChaosScenario", NS, "shop")
RUNS = resource_path("TestRun", NS)
DEPLOYMENTS = "/apis/apps/v1/namespaces/ns/deployments"


def add_owner(kube: FakeKube, **trigger: Any) -> dict[str, Any]:
    return kube.add(
        SCENARIO,
        {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "ChaosScenario",
            "metadata": {"name": "shop", "namespace": NS, "uid": "scenario-uid", "labels": {"team": "a"}},
            "spec": {
                "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
                "steps": [{"name": "kill", "duration": "1s", "faults": [{"type": "pod-kill"}]}],
                "runTemplate": {"timeout": "2m", "parameters": {"n": 1}},
                "triggers": [{**ROLLOUT, **trigger}],
            },
        },
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def engine(kube: FakeKube, clock: Clock) -> OwnerTriggers:
    triggers = OwnerTriggers(kube, Settings(), LiveBody(kube, SCENARIO), now=clock)
    triggers.load(kube.stored(SCENARIO))
    return triggers


def trigger_of(triggers: OwnerTriggers) -> Trigger:
    [trigger] = triggers.triggers()
    return trigger


def created(kube: FakeKube) -> list[dict[str, Any]]:
    return kube.written("ADDED", RUNS)


def event_reasons(kube: FakeKube) -> list[str]:
    return [e["reason"] for e in kube.written("ADDED", "/api/v1/namespaces/ns/events")]


def status_of(kube: FakeKube) -> dict[str, Any]:
    [entry] = kube.objects[SCENARIO]["status"]["triggers"]
    return dict(entry)


async def see(triggers: OwnerTriggers, *objects: dict[str, Any]) -> None:
    await triggers.apply(trigger_of(triggers), {o["metadata"]["uid"]: o for o in objects})


async def test_an_edge_creates_one_run_owned_labelled_and_annotated_with_what_triggered_it() -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube)
    triggers = engine(kube, clock)
    await see(triggers, deployment(updated=1))
    assert status_of(kube)["matching"] == []
    await see(triggers, deployment())
    [run] = created(kube)
    meta = run["metadata"]
    assert meta["name"] == run_name("shop", "rollout", "dep-uid", "g2", 0)
    assert meta["labels"] == {"team": "a", SCENARIO_LABEL: "shop", TRIGGER_LABEL: "rollout"}
    assert meta["ownerReferences"][0]["uid"] == "scenario-uid"
    assert meta["annotations"][REQUESTED_BY_ANNOTATION] == FAKE_REQUESTER.to_annotation()
    cause = json.loads(meta["annotations"][TRIGGERED_BY_ANNOTATION])
    assert (cause["trigger"], cause["kind"], cause["name"], cause["uid"]) == ("rollout", "Deployment", "web", "dep-uid")
    assert run["spec"] == {"scenarioRef": {"name": "shop"}, "timeout": "2m", "parameters": {"n": 1}}
    assert status_of(kube) == {
        "name": "rollout",
        "matching": ["dep-uid"],
        "fired": 1,
        "lastFiredAt": format_iso_seconds(T0),
        "lastRun": meta["name"],
    }
    assert "Triggered" in event_reasons(kube)
    await see(triggers, deployment())
    assert len(created(kube)) == 1, "still meeting: no second run"


async def test_what_meets_the_conditions_when_first_seen_starts_no_run() -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube)
    await see(engine(kube, clock), deployment())
    assert created(kube) == []
    assert status_of(kube)["matching"] == ["dep-uid"]


async def test_a_second_edge_within_the_cooldown_starts_none_and_after_it_one() -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube)
    triggers = engine(kube, clock)
    await see(triggers, deployment(updated=1))
    await see(triggers, deployment())
    clock.now = at(20)
    await see(triggers, deployment(generation=3, updated=1))
    await see(triggers, deployment(generation=3, observed=3))
    assert len(created(kube)) == 1
    assert "within the cooldown (60s)" in status_of(kube)["lastSkipped"]
    assert "TriggerSkipped" in event_reasons(kube)
    clock.now = at(90)
    await see(triggers, deployment(generation=4, updated=1))
    await see(triggers, deployment(generation=4, observed=4))
    assert len(created(kube)) == 2
    assert status_of(kube)["fired"] == 2


async def test_a_restarted_operator_neither_fires_again_nor_misses_an_edge() -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube, cooldown="0s")
    await see(engine(kube, clock), deployment(updated=1))
    await see(engine(kube, clock), deployment())
    assert len(created(kube)) == 1
    await see(engine(kube, clock), deployment())
    assert len(created(kube)) == 1, "the edge was recorded: a new process does not fire it again"
    await see(engine(kube, clock), deployment(updated=1))
    await see(engine(kube, clock), deployment())  # it stopped and met them again while "the operator was down"
    assert len(created(kube)) == 2


async def test_a_lost_status_write_makes_no_duplicate_run() -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube)
    await see(engine(kube, clock), deployment(updated=1))
    kube.fail(ApiError(503, "ServiceUnavailable", "down"), verb="patch", path=f"{SCENARIO}/status")
    with pytest.raises(ApiError):
        await see(engine(kube, clock), deployment())
    await see(engine(kube, clock), deployment())
    assert len(created(kube)) == 1, "the same edge, the same name: 409, not a second run"
    assert status_of(kube)["fired"] == 1
    assert status_of(kube)["matching"] == ["dep-uid"]


async def test_forbid_skips_while_its_run_is_active_and_replace_aborts_it() -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube, cooldown="0s", concurrencyPolicy="Forbid")
    triggers = engine(kube, clock)
    await see(triggers, deployment(updated=1))
    await see(triggers, deployment())
    await see(triggers, deployment(updated=1))
    await see(triggers, deployment())
    assert len(created(kube)) == 1
    assert "Forbid" in status_of(kube)["lastSkipped"]

    kube.objects[SCENARIO]["spec"]["triggers"][0]["concurrencyPolicy"] = "Replace"
    await see(triggers, deployment(updated=1))
    await see(triggers, deployment())
    first, second = (run["metadata"]["name"] for run in created(kube))
    assert kube.objects[f"{RUNS}/{first}"]["spec"]["abort"] is True
    assert "abort" not in kube.objects[f"{RUNS}/{second}"]["spec"]
    assert "Replaced" in event_reasons(kube)


@pytest.fixture
def paused_board() -> Iterator[PauseBoard]:
    yield PAUSES
    PAUSES.reset(None, [])


async def test_an_edge_during_an_emergency_stop_starts_no_run(paused_board: PauseBoard) -> None:
    kube, clock = FakeKube(), Clock()
    add_owner(kube)
    triggers = engine(kube, clock)
    await see(triggers, deployment(updated=1))
    paused_board.reset(None, [NS])
    await see(triggers, deployment())
    assert created(kube) == []
    assert "Skipped" in event_reasons(kube)
    paused_board.reset(None, [])
    await see(triggers, deployment())
    assert created(kube) == [], "the edge was consumed, as a scheduled time missed while paused"


# --- rights ------------------------------------------------------------------------------------------------------


def opted_in(kube: FakeKube, name: str = NS) -> None:
    kube.add(resource_path("Namespace", name=name), {"metadata": {"labels": {"chaos.coordinator.dev/allow": "true"}}})


async def test_a_requester_who_may_not_list_the_kind_gets_a_refused_trigger() -> None:
    kube = FakeKube()
    opted_in(kube)
    owner = add_owner(kube)
    trigger = Trigger.model_validate(ROLLOUT)
    assert await trigger_refusal(kube, Settings(), owner, trigger) is None
    kube.refuse_access(FAKE_REQUESTER.username, "watch", "deployments", NS)
    reason = await trigger_refusal(kube, Settings(), owner, trigger)
    assert reason == (
        f'{FAKE_REQUESTER.username} cannot watch resource "deployments" in API group "apps" in the namespace "ns" '
        "(needed by trigger rollout)"
    )


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"kind": "Deployment", "name": "web", "namespace": "kube-system"}, "namespace 'kube-system' is protected"),
        ({"apiVersion": "v1", "kind": "Secret", "name": "creds"}, "never read Secret"),
        ({"kind": "Deployment", "name": "web", "namespace": "elsewhere"}, "elsewhere"),
    ],
)
async def test_what_no_trigger_may_watch_is_refused(resource: dict[str, str], reason: str) -> None:
    kube = FakeKube()
    opted_in(kube)
    owner = add_owner(kube)
    refused = await trigger_refusal(kube, Settings(), owner, Trigger.model_validate({**ROLLOUT, "resource": resource}))
    assert refused is not None
    assert reason in refused


async def test_a_scenario_without_a_requester_watches_nothing() -> None:
    kube = FakeKube()
    kube.requester = None
    opted_in(kube)
    owner = add_owner(kube)
    refused = await trigger_refusal(kube, Settings(), owner, Trigger.model_validate(ROLLOUT))
    assert refused is not None
    assert "no requester" in refused


# --- the list-and-watch loop ---------------------------------------------------------------------------------


async def eventually(check: Any, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_the_follower_watches_fires_on_an_edge_and_reports_a_refusal() -> None:
    kube = FakeKube()
    opted_in(kube)
    kube.add(f"{DEPLOYMENTS}/web", deployment(updated=1))
    kube.add(f"{DEPLOYMENTS}/other", {**deployment(uid="x"), "metadata": {"name": "other", "uid": "x"}})
    add_owner(kube)
    follower = TriggerFollower(kube, Settings(), LiveBody(kube, SCENARIO))
    try:
        assert await follower.sync()
        await eventually(lambda: "matching" in status_of(kube))
        assert status_of(kube)["matching"] == [], "only web is watched (by name), and it does not meet them yet"
        await kube.patch(f"{DEPLOYMENTS}/web/status", {"status": {"updatedReplicas": 3}})
        await eventually(lambda: len(created(kube)) == 1)
        [watch] = [c for c in kube.calls_of("watch") if c.path == DEPLOYMENTS]
        assert watch.params == {"fieldSelector": "metadata.name=web"}

        kube.refuse_access(FAKE_REQUESTER.username, "list", "deployments", NS)
        kube.objects[SCENARIO]["spec"]["triggers"][0]["cooldown"] = "2m"  # a spec change: the rights are checked again
        assert await follower.sync()
        await eventually(lambda: "refused" in status_of(kube).get("lastSkipped", ""))
        assert "matching" not in status_of(kube), "a refused trigger forgets what it saw"
        assert "TriggerRefused" in event_reasons(kube)
    finally:
        await follower.close()


async def test_a_kind_the_operator_may_not_read_is_reported_not_retried_in_a_loop() -> None:
    kube = FakeKube()
    opted_in(kube)
    owner = add_owner(kube)
    triggers = OwnerTriggers(kube, Settings(), LiveBody(kube, SCENARIO))
    triggers.load(owner)
    kube.fail(ApiError(403, "Forbidden", "deployments is forbidden"), verb="get", path=DEPLOYMENTS, times=None)
    task = asyncio.create_task(TriggerWatch(triggers, trigger_of(triggers)).run())
    try:
        await eventually(lambda: "TriggerRefused" in event_reasons(kube))
        await asyncio.sleep(0.2)
        assert len(kube.calls_of("get", DEPLOYMENTS)) == 1, "asked again only after RECHECK_SECONDS"
        assert "the operator itself may not list and watch deployments" in status_of(kube)["lastSkipped"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class Stop:
    """kopf's DaemonStopped as the handler uses it: truthy once a stop is requested, ``wait`` until then."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - kopf's DaemonStopped.wait
        await asyncio.sleep(min(timeout, 0.01))
        return self.requested


async def test_the_daemon_watches_until_stopped_and_leaves_no_watch_behind() -> None:
    kube = FakeKube()
    opted_in(kube)
    add_owner(kube)
    stop = Stop()
    daemon = asyncio.create_task(
        handle_triggers(kube, Settings(), LiveBody(kube, SCENARIO), stop, logging.getLogger("test"))  # type: ignore[arg-type]
    )
    await eventually(lambda: bool(kube.calls_of("watch")))
    stop.requested = True
    await asyncio.wait_for(daemon, 5)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ChaosScenario ns/shop")], "watches ended"


async def test_the_daemon_ends_when_its_scenario_is_gone() -> None:
    kube = FakeKube()
    add_owner(kube)
    body = kube.stored(SCENARIO)
    await kube.delete(SCENARIO)
    await asyncio.wait_for(handle_triggers(kube, Settings(), body, Stop(), logging.getLogger("test")), 5)  # type: ignore[arg-type]


async def test_a_label_selector_only_the_parser_refuses_is_a_refused_trigger() -> None:
    kube = FakeKube()
    opted_in(kube)
    add_owner(kube)
    triggers = OwnerTriggers(kube, Settings(), LiveBody(kube, SCENARIO))
    triggers.load(kube.stored(SCENARIO))
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}
    trigger = Trigger.model_validate({**ROLLOUT, "resource": {"kind": "Deployment", "labelSelector": selector}})
    task = asyncio.create_task(TriggerWatch(triggers, trigger).run())
    try:
        await eventually(lambda: "TriggerRefused" in event_reasons(kube))
        assert status_of(kube)["lastSkipped"].startswith("refused: resource.labelSelector: ")
        assert not kube.calls_of("watch"), "nothing watched"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_archived_scenario_watches_nothing() -> None:
    """spec.lifecycle: archived stops the triggers as it stops the schedule; un-archiving starts them again."""
    kube, clock = FakeKube(), Clock()
    add_owner(kube)
    kube.objects[SCENARIO]["spec"]["lifecycle"] = "archived"
    assert engine(kube, clock).triggers() == []
    kube.objects[SCENARIO]["spec"]["lifecycle"] = "deprecated"
    assert [t.name for t in engine(kube, clock).triggers()] == ["rollout"]
