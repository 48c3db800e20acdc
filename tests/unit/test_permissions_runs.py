"""A run acts only with its requester's rights: SubjectAccessReviews (engine/authorization.py), the check before a
run changes anything (engine/run/admission.py), and the requester scheduled runs inherit (engine/scheduler.py).

On the in-memory API server (tests/support/fake_kube.py), which answers SubjectAccessReviews as told.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import REQUESTED_BY_ANNOTATION, ChaosScenarioSpec, Requester
from coordinator.engine.authorization import CONCURRENT_REVIEWS, SUBJECT_ACCESS_REVIEWS, scenario_refusals
from coordinator.engine.run import RetryLater, RunHandle, RunMachine
from coordinator.engine.scheduler import RUN_NOW_ANNOTATION, reconcile_schedule, start_run_now
from coordinator.settings import Settings
from support.fake_kube import FAKE_REQUESTER, FakeKube, RunClock

pytestmark = pytest.mark.unit

NS = "team-a"
ALICE = Requester(username="alice", uid="alice-uid", groups=["developers", "system:authenticated"])
KILL = {
    "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
    "mode": "all",
    "steps": [{"name": "kill", "duration": "0s", "faults": [{"type": "pod-kill"}]}],
}
DRAIN = {"target": {"kind": "Node"}, "steps": [{"name": "drain", "duration": "0s", "faults": [{"type": "node-drain"}]}]}


def world(scenario: dict[str, Any], *namespaces: str) -> FakeKube:
    kube = FakeKube()
    for ns in {NS, *namespaces}:
        kube.add(resource_path("Namespace", name=ns), {"metadata": {"labels": {"chaos.coordinator.dev/allow": "true"}}})
        kube.add(
            resource_path("Pod", ns, "web-0"),
            {
                "metadata": {"labels": {"app": "web"}},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            },
        )
    kube.add(resource_path("Node", name="node-1"), {"metadata": {"labels": {}}, "spec": {}})
    kube.add(resource_path("ChaosScenario", NS, "scn"), {"spec": scenario})
    return kube


def add_run(kube: FakeKube, requested_by: str | None, **spec: Any) -> str:
    path = resource_path("TestRun", NS, "run")
    annotations = {REQUESTED_BY_ANNOTATION: requested_by} if requested_by is not None else {}
    kube.requester = None  # as given: the fake's webhook records nobody
    kube.add(path, {"metadata": {"annotations": annotations}, "spec": {"scenarioRef": {"name": "scn"}, **spec}})
    return path


async def finish(kube: FakeKube, path: str, **settings: Any) -> dict[str, Any]:
    """Run the TestRun at ``path`` to its end (retrying as the kopf layer would); its final status."""
    clock = RunClock()
    for _attempt in range(20):
        stored = kube.stored(path)
        if (stored.get("status") or {}).get("phase") in ("Passed", "Failed", "Error", "Cancelled", "TimedOut"):
            return dict(stored["status"])
        machine = RunMachine(
            kube,
            Settings(poll_interval=1, recovery_interval=1, **settings),
            RunHandle(body=stored, stopped=lambda: False),
            clock=clock,
        )
        with contextlib.suppress(RetryLater):
            await machine.execute()
    pytest.fail(f"the run did not end: {kube.stored(path).get('status')}")


def target_writes(kube: FakeKube) -> list[str]:
    """Every write to a pod or a node: what a run changed."""
    return [f"{c.verb} {c.path}" for c in kube.mutations() if "/pods/" in c.path or "/nodes/" in c.path]


# --- SubjectAccessReviews ------------------------------------------------------------------------------------------


async def test_each_access_is_reviewed_once_for_the_requester_as_recorded() -> None:
    kube = FakeKube()
    spec = ChaosScenarioSpec.model_validate(
        {
            **KILL,
            "target": {"kind": "Pod", "namespaces": ["team-a", "team-b"]},
            "steps": [{"name": "kill", "faults": [{"type": "pod-kill"}, {"type": "pod-kill"}]}],
        }
    )
    assert await scenario_refusals(kube, Settings(), ALICE, spec, NS) == []
    reviews = [c.body for c in kube.calls_of("review", SUBJECT_ACCESS_REVIEWS)]
    assert [r["spec"]["resourceAttributes"] for r in reviews] == [
        {"verb": "list", "group": "", "resource": "pods", "namespace": "team-a"},
        {"verb": "list", "group": "", "resource": "pods", "namespace": "team-b"},
        {"verb": "delete", "group": "", "resource": "pods", "namespace": "team-a"},
        {"verb": "delete", "group": "", "resource": "pods", "namespace": "team-b"},
    ]
    assert {(r["spec"]["user"], r["spec"]["uid"], tuple(r["spec"]["groups"])) for r in reviews} == {
        ("alice", "alice-uid", ("developers", "system:authenticated"))
    }
    assert {(r["apiVersion"], r["kind"]) for r in reviews} == {("authorization.k8s.io/v1", "SubjectAccessReview")}


async def test_refusals_name_subject_verb_resource_scope_and_what_needs_it() -> None:
    kube = FakeKube()
    kube.refuse_access("alice", "delete", "pods", "team-b")
    kube.refuse_access("alice", "patch", "nodes")
    kube.refuse_access("alice", "create", "pods/eviction")
    other = ChaosScenarioSpec.model_validate({**KILL, "target": {"kind": "Pod", "namespaces": ["team-b"]}})
    assert await scenario_refusals(kube, Settings(), ALICE, other, NS) == [
        'alice cannot delete resource "pods" in the namespace "team-b" (needed by pod-kill)'
    ]
    drain = ChaosScenarioSpec.model_validate(DRAIN)
    assert await scenario_refusals(kube, Settings(node_targeting=True), ALICE, drain, NS) == [
        'alice cannot patch resource "nodes" at the cluster scope (needed by node-drain)',
        'alice cannot create resource "pods/eviction" at the cluster scope (needed by node-drain)',
    ]


async def test_node_targets_are_refused_while_node_targeting_is_off_whoever_asks() -> None:
    kube = FakeKube()
    drain = ChaosScenarioSpec.model_validate(DRAIN)
    (refusal,) = await scenario_refusals(kube, Settings(), FAKE_REQUESTER, drain, NS)
    assert "spec.target.kind" in refusal
    assert "COORDINATOR_NODE_TARGETING=true" in refusal


async def test_reviews_run_concurrently_but_bounded() -> None:
    kube = FakeKube()
    kube.latency = 0.01
    in_flight, most = 0, 0
    review = kube._review

    async def counted(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await review(body)
        finally:
            in_flight -= 1

    kube._review = counted  # type: ignore[method-assign]
    many = ChaosScenarioSpec.model_validate(
        {**KILL, "target": {"kind": "Pod", "namespaces": [f"ns-{n}" for n in range(20)]}}
    )
    assert await scenario_refusals(kube, Settings(), ALICE, many, NS) == []
    assert len(kube.calls_of("review")) == 40
    assert most == CONCURRENT_REVIEWS


async def test_a_review_the_api_server_cannot_answer_is_an_error_not_a_permission() -> None:
    kube = FakeKube()
    kube.fail(ApiError(403, "Forbidden", "cannot create subjectaccessreviews"), verb="review")
    with pytest.raises(ApiError):
        await scenario_refusals(kube, Settings(), ALICE, ChaosScenarioSpec.model_validate(KILL), NS)


# --- the check before a run changes anything --------------------------------------------------------------------


async def test_a_permitted_run_records_its_requester_and_runs() -> None:
    kube = world(KILL)
    path = add_run(kube, ALICE.to_annotation())
    status = await finish(kube, path)
    assert status["phase"] == "Passed", status.get("message")
    assert status["requestedBy"] == ALICE.model_dump(exclude_none=True)
    assert target_writes(kube)  # the pod was killed


async def test_a_run_into_a_namespace_its_requester_may_not_touch_ends_forbidden_with_nothing_changed() -> None:
    kube = world({**KILL, "target": {**KILL["target"], "namespaces": ["team-b"]}}, "team-b")
    kube.refuse_access("alice", "delete", "pods", "team-b")
    path = add_run(kube, ALICE.to_annotation())
    status = await finish(kube, path)
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert status["message"] == 'alice cannot delete resource "pods" in the namespace "team-b" (needed by pod-kill)'
    assert status["requestedBy"]["username"] == "alice"
    assert target_writes(kube) == []
    assert status.get("injections", []) == []


async def test_every_refusal_is_in_the_message() -> None:
    probe = {"name": "nodes", "type": "k8s", "k8s": {"apiVersion": "v1", "kind": "Node", "count": True, "value": 1}}
    kube = world({**KILL, "steadyState": {"probes": [probe]}})
    kube.refuse_access("alice", "delete", "pods", NS)
    kube.refuse_access("alice", "list", "nodes")
    status = await finish(kube, add_run(kube, ALICE.to_annotation()))
    assert status["message"] == (
        f'alice cannot delete resource "pods" in the namespace "{NS}" (needed by pod-kill); '
        'alice cannot list resource "nodes" at the cluster scope (needed by probe nodes)'
    )


@pytest.mark.parametrize(
    ("annotation", "says"),
    [
        (None, "the annotation chaos.coordinator.dev/requested-by is missing"),
        ("alice", "is not a requester as JSON"),
        ('{"uid": "x"}', "is not a requester as JSON"),
    ],
)
async def test_a_run_without_a_recorded_requester_ends_forbidden(annotation: str | None, says: str) -> None:
    kube = world(KILL)
    status = await finish(kube, add_run(kube, annotation))
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert status["message"].startswith(f"TestRun {NS}/run: no requester recorded")
    assert says in status["message"]
    assert "admission webhook" in status["message"]
    assert "requestedBy" not in status
    assert target_writes(kube) == []
    assert kube.calls_of("review") == []


async def test_node_targets_end_forbidden_while_node_targeting_is_off() -> None:
    kube = world(DRAIN)
    path = add_run(kube, FAKE_REQUESTER.to_annotation())
    status = await finish(kube, path)
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert "COORDINATOR_NODE_TARGETING=true" in status["message"]
    assert target_writes(kube) == []
    kube = world(DRAIN)
    status = await finish(kube, add_run(kube, FAKE_REQUESTER.to_annotation()), node_targeting=True)
    assert status["phase"] == "Passed", status.get("message")
    assert "patch /api/v1/nodes/node-1" in target_writes(kube)


async def test_a_scenario_in_another_namespace_needs_the_right_to_read_it_before_it_is_read() -> None:
    kube = world(KILL, "shared")
    kube.add(resource_path("ChaosScenario", "shared", "scn"), {"spec": KILL})
    kube.refuse_access("alice", "get", "chaosscenarios", "shared")
    path = add_run(kube, ALICE.to_annotation(), scenarioRef={"name": "scn", "namespace": "shared"})
    status = await finish(kube, path)
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert status["message"] == (
        'alice cannot get resource "chaosscenarios" in API group "chaos.coordinator.dev" in the namespace "shared" '
        "(needed by spec.scenarioRef)"
    )
    assert kube.calls_of("get", resource_path("ChaosScenario", "shared", "scn")) == []


async def test_templated_namespaces_are_checked_as_the_run_renders_them() -> None:
    templated = {
        **KILL,
        "parameters": [{"name": "where", "default": NS}],
        "target": {**KILL["target"], "namespaces": ["{{ params.where }}"]},
    }
    kube = world(templated, "team-b")
    kube.refuse_access("alice", "delete", "pods", "team-b")
    status = await finish(kube, add_run(kube, ALICE.to_annotation(), parameters={"where": "team-b"}))
    assert (status["reason"], status["message"]) == (
        "Forbidden",
        'alice cannot delete resource "pods" in the namespace "team-b" (needed by pod-kill)',
    )
    assert target_writes(kube) == []


async def test_a_queued_run_is_checked_again_on_each_attempt() -> None:
    kube = world(KILL)
    kube.add(
        resource_path("TestRun", NS, "other"),
        {"spec": {"scenarioRef": {"name": "scn"}}, "status": {"phase": "Running"}},
    )
    path = add_run(kube, ALICE.to_annotation())
    settings = Settings(poll_interval=1, recovery_interval=1, max_concurrent_runs=1)
    machine = RunMachine(kube, settings, RunHandle(body=kube.stored(path), stopped=lambda: False), clock=RunClock())
    with pytest.raises(RetryLater):
        await machine.execute()
    assert kube.stored(path)["status"]["reason"] == "Queued"
    kube.refuse_access("alice", "delete", "pods", NS)  # the RoleBinding is gone while the run waits
    status = await finish(kube, path, max_concurrent_runs=1)
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert target_writes(kube) == []


# --- scheduled and run-now runs act for whoever made the scenario ------------------------------------------------


def scheduled_scenario(kube: FakeKube, requested_by: str | None, **annotations: str) -> dict[str, Any]:
    kube.requester = None
    if requested_by is not None:
        annotations[REQUESTED_BY_ANNOTATION] = requested_by
    return kube.add(
        resource_path("ChaosScenario", NS, "nightly"),
        {
            "kind": "ChaosScenario",
            "metadata": {"annotations": annotations, "creationTimestamp": "2026-03-02T11:59:59Z"},
            "spec": {**KILL, "schedule": "@every 5s"},
        },
    )


async def test_scheduled_runs_carry_the_scenarios_requester() -> None:
    kube = FakeKube()
    scheduled_scenario(kube, ALICE.to_annotation())
    await reconcile_schedule(
        kube, kube.stored(resource_path("ChaosScenario", NS, "nightly")), datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    )
    (run,) = kube.written("ADDED", resource_path("TestRun", NS))
    assert run["metadata"]["annotations"][REQUESTED_BY_ANNOTATION] == ALICE.to_annotation()


async def test_run_now_runs_carry_the_scenarios_requester() -> None:
    kube = FakeKube()
    scenario = scheduled_scenario(kube, ALICE.to_annotation(), **{RUN_NOW_ANNOTATION: "go"})
    name = await start_run_now(kube, scenario)
    run = kube.stored(resource_path("TestRun", NS, str(name)))
    assert run["metadata"]["annotations"] == {RUN_NOW_ANNOTATION: "go", REQUESTED_BY_ANNOTATION: ALICE.to_annotation()}


async def test_a_scenario_without_a_requester_makes_runs_without_one() -> None:
    kube = FakeKube()
    scenario = scheduled_scenario(kube, None, **{RUN_NOW_ANNOTATION: "go"})
    name = await start_run_now(kube, scenario)
    run = kube.stored(resource_path("TestRun", NS, str(name)))
    assert REQUESTED_BY_ANNOTATION not in run["metadata"]["annotations"]


async def test_rights_removed_between_two_scheduled_runs_stop_the_next() -> None:
    kube = world(KILL)
    scheduled_scenario(kube, ALICE.to_annotation())
    scenario = resource_path("ChaosScenario", NS, "nightly")
    start = datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    await reconcile_schedule(kube, kube.stored(scenario), start)
    (first,) = kube.written("ADDED", resource_path("TestRun", NS))
    assert (await finish(kube, resource_path("TestRun", NS, first["metadata"]["name"])))["phase"] == "Passed"
    kube.refuse_access("alice", "delete", "pods", NS)
    changed = len(target_writes(kube))
    await reconcile_schedule(kube, kube.stored(scenario), start + timedelta(seconds=5))
    second = kube.written("ADDED", resource_path("TestRun", NS))[-1]["metadata"]["name"]
    status = await finish(kube, resource_path("TestRun", NS, second))
    assert (status["phase"], status["reason"]) == ("Error", "Forbidden")
    assert len(target_writes(kube)) == changed


async def test_the_fake_refuses_only_what_it_was_told() -> None:
    kube = FakeKube()
    kube.refuse_access("alice", "delete", "pods", "team-b")

    async def ask(user: str, namespace: str | None) -> bool:
        attributes = {"verb": "delete", "group": "", "resource": "pods"}
        if namespace:
            attributes["namespace"] = namespace
        answer = await kube.create(SUBJECT_ACCESS_REVIEWS, {"spec": {"user": user, "resourceAttributes": attributes}})
        return bool(answer["status"]["allowed"])

    answers = [await ask("alice", "team-b"), await ask("alice", "team-a"), await ask("bob", "team-b")]
    assert [*answers, await ask("alice", None)] == [False, True, True, True]
    assert kube.mutations() == []
