"""The emergency stop (engine/pausing.py): the board of paused namespaces, how it is fed, and what runs make of it.

The follower's polls and retries, and the tests' waits, pass in the event loop's fake time (looptime).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import PAUSED_LABEL, Phase, Target
from coordinator.engine.pausing import (
    PAUSES,
    POLL_INTERVAL,
    Pause,
    PauseBoard,
    PauseFollower,
    apply_event,
    is_paused,
    polled_namespaces,
    run_scope,
)
from coordinator.engine.run import RunHandle, RunMachine, Waiting
from coordinator.engine.run.errors import RunEnded
from coordinator.engine.run.state import RunState
from coordinator.settings import Settings
from support.fake_kube import FakeKube

pytestmark = pytest.mark.looptime

PAUSED = {PAUSED_LABEL: "true"}


@pytest.fixture(autouse=True)
def empty_board() -> Iterator[None]:
    PAUSES.reset(None, [])
    yield
    PAUSES.reset(None, [])


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}}


# --- pure parts ----------------------------------------------------------------------------------------------


def test_only_the_value_true_pauses() -> None:
    assert is_paused(PAUSED)
    assert not is_paused({PAUSED_LABEL: "false"})
    assert not is_paused({PAUSED_LABEL: ""})
    assert not is_paused({})
    assert not is_paused(None)


def test_a_runs_scope_is_its_namespace_its_scenarios_and_its_target_namespaces() -> None:
    assert run_scope("runs", "scenarios", None) == {"runs", "scenarios"}
    assert run_scope("runs", "scenarios", Target(kind="Pod")) == {"runs", "scenarios"}, "empty: the scenario's"
    assert run_scope("runs", "scenarios", Target(kind="Pod", namespaces=["a", "b"])) == {"runs", "scenarios", "a", "b"}
    assert run_scope("shop", "shop", Target(kind="Deployment", namespaces=["db"])) == {"shop", "db"}


def test_node_targets_are_in_no_namespace() -> None:
    # Only the cluster-wide pause (the operator's namespace) covers nodes; namespaces listed are ignored for them.
    assert run_scope("runs", "scenarios", Target(kind="Node", namespaces=["a"])) == {"runs", "scenarios"}


def test_the_cluster_wide_pause_covers_every_run_and_comes_first() -> None:
    board = PauseBoard()
    board.reset("test-coordinator", ["shop"])
    assert board.pausing({"shop"}) == Pause("shop", cluster_wide=False)
    assert board.pausing({"db"}) is None
    board.set("test-coordinator", True)
    assert board.pausing({"db"}) == Pause("test-coordinator", cluster_wide=True)
    assert board.pausing({"shop"}) == Pause("test-coordinator", cluster_wide=True), "the wider pause is named"
    assert board.pausing(set()) == Pause("test-coordinator", cluster_wide=True)


def test_a_pause_names_the_first_paused_namespace_of_the_scope() -> None:
    board = PauseBoard()
    board.reset("test-coordinator", ["b", "a"])
    assert board.pausing({"c", "b", "a"}) == Pause("a", cluster_wide=False)
    board.set("a", False)
    board.set("b", False)
    assert board.pausing({"c", "b", "a"}) is None
    assert board.paused == frozenset()


def test_the_messages_name_the_label_the_namespace_and_the_way_out() -> None:
    local = Pause("shop", cluster_wide=False)
    assert local.waiting_message() == (
        "paused: namespace shop carries the label chaos.coordinator.dev/paused=true; the run starts once it is "
        "removed (coordinator resume --namespace shop)"
    )
    assert local.ending_message() == (
        "paused: namespace shop carries the label chaos.coordinator.dev/paused=true; every fault was reverted"
    )
    cluster = Pause("test-coordinator", cluster_wide=True)
    assert cluster.waiting_message() == (
        "paused cluster-wide: the operator's namespace test-coordinator carries the label "
        "chaos.coordinator.dev/paused=true; the run starts once it is removed (coordinator resume)"
    )


def test_watch_events_put_on_and_take_off_the_board() -> None:
    board = PauseBoard()
    board.reset("op", [])
    assert apply_event(board, {"type": "ADDED", "object": namespace("shop", PAUSED)}) == "ADDED"
    assert board.paused == {"shop"}
    apply_event(board, {"type": "MODIFIED", "object": namespace("shop", {PAUSED_LABEL: "false"})})
    assert board.paused == frozenset()
    apply_event(board, {"type": "MODIFIED", "object": namespace("shop", PAUSED)})
    # The label removed: the object leaves the watch's selector, which the API server says as DELETED.
    apply_event(board, {"type": "DELETED", "object": namespace("shop", PAUSED)})
    assert board.paused == frozenset()
    assert apply_event(board, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}}) == "BOOKMARK"
    assert apply_event(board, {"type": "ERROR", "object": {"code": 410}}) == "ERROR"
    assert board.paused == frozenset()


def test_pausing_and_resuming_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    board = PauseBoard()
    with caplog.at_level(logging.WARNING, logger="coordinator.engine.pausing"):
        board.reset("op", ["shop"])
        board.set("shop", True)
        board.reset("op", ["shop"])
        board.set("shop", False)
    assert [r.getMessage().split(" (")[0].split(":")[0] for r in caplog.records] == [
        "namespace shop is paused",
        "namespace shop is no longer paused",
    ]


def test_an_exact_namespace_list_is_read_one_by_one_with_the_operators_namespace() -> None:
    assert polled_namespaces(Settings(watch_namespaces="shop,db", namespace="ops")) == ["db", "ops", "shop"]
    assert polled_namespaces(Settings(watch_namespaces="team-*", namespace="ops")) is None, "patterns: watched"
    assert polled_namespaces(Settings(watch_namespaces="", namespace="ops")) is None, "all namespaces: watched"


# --- the follower ----------------------------------------------------------------------------------------------


async def wait_until(check: Any) -> None:
    for _ in range(600):  # 30 s of loop time
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within 30 s")


async def test_watching_reads_the_labels_before_it_returns_then_follows_them() -> None:
    kube = FakeKube()
    kube.add(resource_path("Namespace", name="shop"), namespace("shop", PAUSED))
    kube.add(resource_path("Namespace", name="db"), namespace("db"))
    board = PauseBoard()
    follower = PauseFollower(kube, Settings(namespace="ops"), board)
    await follower.start()
    try:
        assert board.paused == {"shop"}, "known when start() returns: before kopf admits any run"
        assert board.cluster_namespace == "ops"
        listed = kube.calls_of("get", resource_path("Namespace"))
        assert listed[0].params == {"labelSelector": "chaos.coordinator.dev/paused=true"}, "only the labelled"
        await kube.patch(resource_path("Namespace", name="db"), {"metadata": {"labels": PAUSED}})
        await wait_until(lambda: board.paused == {"shop", "db"})
        assert not kube.calls_of("get", resource_path("Namespace", name="db")), "one watch, no reads per namespace"
    finally:
        await follower.stop()


async def test_polling_reads_each_namespace_of_an_exact_list_and_the_operators_own() -> None:
    kube = FakeKube()
    kube.add(resource_path("Namespace", name="shop"), namespace("shop"))
    kube.add(resource_path("Namespace", name="ops"), namespace("ops"))
    board = PauseBoard()
    follower = PauseFollower(kube, Settings(watch_namespaces="shop,gone", namespace="ops"), board)
    await follower.start()
    try:
        assert board.paused == frozenset()
        assert not kube.calls_of("get", resource_path("Namespace")), "never lists namespaces"
        await kube.patch(resource_path("Namespace", name="ops"), {"metadata": {"labels": PAUSED}})
        await asyncio.sleep(POLL_INTERVAL * 1.5)
        assert board.pausing({"anything"}) == Pause("ops", cluster_wide=True)
        await kube.patch(resource_path("Namespace", name="ops"), {"metadata": {"labels": {PAUSED_LABEL: None}}})
        await kube.patch(resource_path("Namespace", name="shop"), {"metadata": {"labels": PAUSED}})
        await asyncio.sleep(POLL_INTERVAL * 1.5)
        assert board.paused == {"shop"}
    finally:
        await follower.stop()


async def test_a_namespace_that_may_not_be_read_pauses_nothing_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeKube()
    kube.add(resource_path("Namespace", name="shop"), namespace("shop", PAUSED))
    kube.fail(
        ApiError(403, "Forbidden", "cannot get namespaces"),
        verb="get",
        path=resource_path("Namespace", name="ops"),
        times=None,
    )
    board = PauseBoard()
    follower = PauseFollower(kube, Settings(watch_namespaces="shop", namespace="ops"), board)
    with caplog.at_level(logging.WARNING, logger="coordinator.engine.pausing"):
        await follower.start()
        await asyncio.sleep(POLL_INTERVAL * 3.5)
        await follower.stop()
    assert board.paused == {"shop"}
    refused = [r for r in caplog.records if "may not read namespace ops" in r.getMessage()]
    assert len(refused) == 1


async def test_start_waits_for_the_api_server_rather_than_guess() -> None:
    kube = FakeKube()
    kube.add(resource_path("Namespace", name="shop"), namespace("shop", PAUSED))
    kube.fail(ApiError(503, "ServiceUnavailable", "away"), verb="get", path=resource_path("Namespace"), times=3)
    board = PauseBoard()
    follower = PauseFollower(kube, Settings(), board)
    await follower.start()
    await follower.stop()
    assert board.paused == {"shop"}
    assert len(kube.calls_of("get", resource_path("Namespace"))) == 4


# --- what runs make of it --------------------------------------------------------------------------------------

NS = "shop"
RUN = resource_path("TestRun", NS, "run")
WEB = resource_path("Deployment", NS, "web")


def cluster(target_namespaces: list[str] | None = None, duration: str = "30s") -> FakeKube:
    kube = FakeKube()
    for name in (NS, "db"):
        kube.add(
            resource_path("Namespace", name=name),
            {"metadata": {"name": name, "labels": {"chaos.coordinator.dev/allow": "true"}}},
        )
    target: dict[str, Any] = {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "web"}}}
    if target_namespaces:
        target["namespaces"] = target_namespaces
    scenario = {
        "target": target,
        "steps": [{"name": "s", "duration": duration, "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
    }
    kube.add(resource_path("ChaosScenario", NS, "scn"), {"metadata": {"name": "scn"}, "spec": scenario})
    for ns in (NS, "db"):
        kube.add(
            resource_path("Deployment", ns, "web"),
            {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 3}},
        )
    kube.add(RUN, {"metadata": {"name": "run", "uid": "run-uid"}, "spec": {"scenarioRef": {"name": "scn"}}})
    return kube


def machine(kube: FakeKube, settings: Settings | None = None) -> RunMachine:
    return RunMachine(
        kube,
        settings or Settings(poll_interval=0.5),
        RunHandle(body=kube.stored(RUN), stopped=lambda: False),
        stored=kube.stored(RUN),
    )


async def test_a_new_run_in_a_paused_namespace_waits_pending_without_reading_its_scenario() -> None:
    kube = cluster()
    PAUSES.reset("test-coordinator", [NS])
    with pytest.raises(Waiting, match="namespace shop carries the label"):
        await machine(kube).execute()
    status = kube.stored(RUN)["status"]
    assert (status["phase"], status["reason"]) == ("Pending", "Paused")
    assert status["message"] == Pause(NS, cluster_wide=False).waiting_message()
    assert not kube.calls_of("get", resource_path("ChaosScenario", NS, "scn"))
    assert [e.object["reason"] for e in kube.events if e.object.get("kind") == "Event"] == ["Paused"]
    # Asked again while still paused: no second write, no second Event.
    writes = len(kube.mutations("patch", RUN + "/status"))
    with pytest.raises(Waiting):
        await machine(kube).execute()
    assert len(kube.mutations("patch", RUN + "/status")) == writes


async def test_a_paused_target_namespace_holds_the_run_too_and_resuming_starts_it() -> None:
    kube = cluster(target_namespaces=["db"], duration="0s")
    PAUSES.reset("test-coordinator", ["db"])
    with pytest.raises(Waiting, match="namespace db"):
        await machine(kube).execute()
    assert kube.stored(RUN)["status"]["reason"] == "Paused"
    PAUSES.set("db", False)
    await machine(kube).execute()
    status = kube.stored(RUN)["status"]
    assert status["phase"] == "Passed", status.get("message")


async def test_an_abort_is_honoured_while_paused() -> None:
    kube = cluster()
    PAUSES.reset("test-coordinator", ["test-coordinator"])
    with pytest.raises(Waiting, match="cluster-wide"):
        await machine(kube).execute()
    kube.objects[RUN]["spec"]["abort"] = True
    await machine(kube).execute()
    status = kube.stored(RUN)["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Aborted")


async def test_a_running_run_is_cancelled_by_a_pause_and_every_change_reverted() -> None:
    kube = cluster(target_namespaces=["db"])
    run = machine(kube)
    task = asyncio.create_task(run.execute())
    await wait_until(lambda: kube.stored(resource_path("Deployment", "db", "web"))["spec"]["replicas"] == 1)
    PAUSES.reset("test-coordinator", ["db"])
    await asyncio.wait_for(task, timeout=2)
    status = kube.stored(RUN)["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Paused")
    assert status["message"] == Pause("db", cluster_wide=False).ending_message()
    assert [i["state"] for i in status["injections"]] == ["Reverted"]
    assert kube.stored(resource_path("Deployment", "db", "web"))["spec"]["replicas"] == 3


async def test_a_pause_elsewhere_leaves_a_run_alone() -> None:
    kube = cluster(duration="2s")
    PAUSES.reset("test-coordinator", ["db"])
    await machine(kube).execute()
    assert kube.stored(RUN)["status"]["phase"] == "Passed"


def test_check_stop_ends_only_a_started_run() -> None:
    kube = cluster()
    state = RunState(kube, Settings(), RunHandle(body=kube.stored(RUN), stopped=lambda: False))
    PAUSES.reset("test-coordinator", ["test-coordinator"])
    state.check_stop()  # Pending: admission makes it wait, check_stop does not end it
    state.status.phase = Phase.RUNNING
    with pytest.raises(RunEnded) as ended:
        state.check_stop()
    assert (ended.value.phase, ended.value.reason) == (Phase.CANCELLED, "Paused")
    assert "paused cluster-wide" in ended.value.message


# --- coordinator pause / resume: the pure parts (tests/e2e/test_pause.py runs the commands) ---------------------


def test_the_commands_set_and_remove_the_label_by_merge_patch() -> None:
    from coordinator.domain.pauses import label_patch

    assert label_patch(True) == {"metadata": {"labels": {PAUSED_LABEL: "true"}}}
    assert label_patch(False) == {"metadata": {"labels": {PAUSED_LABEL: None}}}, "null removes a label"


def test_the_commands_say_what_they_did() -> None:
    from coordinator.domain.pauses import PauseScope, done_message

    shop = PauseScope("shop", cluster_wide=False)
    ops = PauseScope("ops", cluster_wide=True)
    assert done_message(shop, paused=True, was_paused=False) == (
        "paused namespace shop (label chaos.coordinator.dev/paused=true on namespace shop): every run that touches "
        "it is cancelled with every change reverted, and new runs wait until `coordinator resume --namespace shop`"
    )
    assert done_message(ops, paused=True, was_paused=False).startswith(
        "paused the whole cluster (label chaos.coordinator.dev/paused=true on the operator's namespace ops): every run"
    )
    assert "already paused" in done_message(shop, paused=True, was_paused=True)
    assert done_message(ops, paused=False, was_paused=True) == (
        "resumed the whole cluster (label chaos.coordinator.dev/paused removed from the operator's namespace ops): "
        "waiting runs start"
    )
    assert done_message(shop, paused=False, was_paused=False) == "namespace shop was not paused; nothing to do"


def test_the_commands_are_registered_with_their_options() -> None:
    from coordinator.cli.main import build_parser
    from coordinator.cli.pause import pause, resume

    args = build_parser().parse_args(["pause", "--namespace", "shop", "--kubeconfig", "/k"])
    assert (args.handler, args.namespace, args.kubeconfig) == (pause, "shop", "/k")
    args = build_parser().parse_args(["resume"])
    assert (args.handler, args.namespace) == (resume, None)
