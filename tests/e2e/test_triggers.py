"""Triggers against the real API server: a Deployment's rollout starts one run per edge, the cooldown skips an edge
and says so, an operator restart fires nothing again, and a requester who may not watch the kind gets a refused
trigger.

The edge is a real rollout (``kubectl rollout restart``): the Deployment's spec changes (its generation moves ahead
of status.observedGeneration: the conditions no longer hold), then the Deployment controller rolls the pods and
the conditions hold again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from conftest import OPT_IN, make_deployment, wait_ready
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos, pod_kill_spec
from support.identities import user_kubeconfig

SCENARIO_LABEL = "chaos.coordinator.dev/scenario"
TRIGGER_LABEL = "chaos.coordinator.dev/trigger"
TRIGGERED_BY = "chaos.coordinator.dev/triggered-by"
COOLDOWN = 25  # seconds: long enough for a second rollout inside it, short enough to wait out

ROLLOUT_DONE = [
    {"fieldPath": "status.updatedReplicas", "valueFromPath": "spec.replicas"},
    {"fieldPath": "status.observedGeneration", "valueFromPath": "metadata.generation"},
]


def rollout_trigger(**fields: Any) -> dict[str, Any]:
    return {
        "name": "rollout",
        "resource": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "conditions": ROLLOUT_DONE,
        "cooldown": f"{COOLDOWN}s",
        **fields,
    }


def triggered_spec(**trigger: Any) -> dict[str, Any]:
    # dryRun: the runs select their targets and change nothing, so a run never disturbs the rollout it follows.
    return {**pod_kill_spec({"app": "web"}), "triggers": [rollout_trigger(**trigger)], "runTemplate": {"dryRun": True}}


def runs_of(chaos: Chaos, scenario: str) -> dict[str, dict[str, Any]]:
    items = chaos.custom.list_namespaced_custom_object(
        GROUP, VERSION, chaos.namespace, "testruns", label_selector=f"{SCENARIO_LABEL}={scenario}"
    )["items"]
    return {item["metadata"]["name"]: item for item in items}


def trigger_status(chaos: Chaos, scenario: str, namespace: str | None = None) -> dict[str, Any]:
    obj = chaos.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace or chaos.namespace, "chaosscenarios", scenario
    )
    entries = (obj.get("status") or {}).get("triggers") or []
    return dict(entries[0]) if entries else {}


def restart_rollout(apps: client.AppsV1Api, namespace: str) -> int:
    """``kubectl rollout restart deployment/web``; the Deployment's new generation."""
    stamp = datetime.now().isoformat()  # noqa: DTZ005 (a marker, as kubectl writes it)
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
    return int(apps.patch_namespaced_deployment("web", namespace, patch).metadata.generation)


def wait_rolled_out(apps: client.AppsV1Api, namespace: str, generation: int) -> None:
    def done() -> bool:
        deployment = apps.read_namespaced_deployment("web", namespace)
        status = deployment.status
        return (
            (status.observed_generation or 0) >= generation
            and status.updated_replicas == deployment.spec.replicas
            and (status.ready_replicas or 0) == deployment.spec.replicas
        )

    wait_for(done, timeout=60, description=f"the rollout of web generation {generation} complete")


def stays(predicate: Callable[[], bool], seconds: float, description: str) -> None:
    """Assert that ``predicate`` holds throughout ``seconds`` (an absence, which no event can signal)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), description
        time.sleep(0.3)


@pytest.fixture
def web(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> Chaos:
    make_deployment(apps, chaos.namespace, "web")
    wait_ready(core, chaos.namespace, "web", 3)
    return chaos


def test_a_rollout_fires_once_per_edge_within_its_cooldown_and_not_again_after_a_restart(
    web: Chaos, apps: client.AppsV1Api, running_operator: OperatorProcess
) -> None:
    ns = web.namespace
    scenario = web.scenario("on-rollout", triggered_spec())
    uid = apps.read_namespaced_deployment("web", ns).metadata.uid
    wait_for(
        lambda: trigger_status(web, "on-rollout").get("matching") == [uid],
        timeout=30,
        description="the rolled-out Deployment recorded as matching",
    )
    stays(lambda: not runs_of(web, "on-rollout"), 3, "a Deployment already rolled out when first seen starts no run")

    # Edge 1: one run, owned, labelled and annotated with what triggered it.
    wait_rolled_out(apps, ns, restart_rollout(apps, ns))
    [first] = wait_for(lambda: list(runs_of(web, "on-rollout").values()) or None, timeout=30, description="a run")
    meta = first["metadata"]
    assert meta["labels"][TRIGGER_LABEL] == "rollout"
    [owner] = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ChaosScenario", scenario["metadata"]["uid"], True)
    cause = json.loads(meta["annotations"][TRIGGERED_BY])
    assert (cause["trigger"], cause["kind"], cause["namespace"], cause["name"], cause["uid"]) == (
        "rollout",
        "Deployment",
        ns,
        "web",
        uid,
    )
    assert (first["spec"]["scenarioRef"], first["spec"]["dryRun"]) == ({"name": "on-rollout"}, True), "runTemplate"
    assert "Triggered" in web.events("on-rollout")
    web.wait_phase(meta["name"], "Passed", timeout=60)
    fired_at = trigger_status(web, "on-rollout")["lastFiredAt"]

    # Edge 2, within the cooldown: no run, and the trigger says why.
    wait_rolled_out(apps, ns, restart_rollout(apps, ns))
    wait_for(
        lambda: "cooldown" in (trigger_status(web, "on-rollout").get("lastSkipped") or ""),
        timeout=30,
        description="the second edge skipped for the cooldown",
    )
    assert "TriggerSkipped" in web.events("on-rollout")
    assert list(runs_of(web, "on-rollout")) == [meta["name"]]

    # A restarted operator reads what was recorded: the Deployment still meets the conditions, nothing fires.
    running_operator.kill()
    running_operator.start()
    stays(lambda: len(runs_of(web, "on-rollout")) == 1, 8, "no run fired again after the restart")

    # After the cooldown, the next edge starts exactly one run.
    wait_for(
        lambda: time.time() >= datetime.fromisoformat(fired_at).timestamp() + COOLDOWN + 1,
        timeout=COOLDOWN + 5,
        description="the cooldown over",
    )
    wait_rolled_out(apps, ns, restart_rollout(apps, ns))
    runs = wait_for(
        lambda: found if len(found := runs_of(web, "on-rollout")) >= 2 else None,
        timeout=30,
        description="a run for the edge after the cooldown",
    )
    stays(lambda: len(runs_of(web, "on-rollout")) == 2, 3, "exactly one run for that edge")
    assert trigger_status(web, "on-rollout")["fired"] == 2
    assert trigger_status(web, "on-rollout")["lastRun"] in runs


# --- a requester who may not watch the kind ------------------------------------------------------------------


@pytest.fixture
def alice_namespace(make_namespace: Callable[[dict[str, str]], str], api_client: client.ApiClient) -> str:
    """A namespace where alice may edit pods and create scenarios, and holds no right on Deployments."""
    namespace = make_namespace(OPT_IN)
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="alice-pods"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods"], verbs=["get", "list", "watch", "patch", "delete"]
                ),
                client.V1PolicyRule(api_groups=[GROUP], resources=["chaosscenarios"], verbs=["get", "create"]),
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="alice-pods"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="alice-pods"),
            subjects=[client.RbacV1Subject(kind="User", name="alice", api_group="rbac.authorization.k8s.io")],
        ),
    )
    return namespace


@pytest.fixture
def alice(kubeconfig: Path, tmp_path: Path) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(user_kubeconfig(kubeconfig, "alice", tmp_path))) as api:
        yield api


def test_a_requester_who_may_not_list_the_kind_gets_a_refused_trigger(
    alice: client.ApiClient,
    alice_namespace: str,
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    running_operator: OperatorProcess,
) -> None:
    ns = alice_namespace
    make_deployment(apps, ns, "web")
    wait_ready(core, ns, "web", 3)
    name = f"alice-{uuid.uuid4().hex[:6]}"
    client.CustomObjectsApi(alice).create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "chaosscenarios",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ChaosScenario",
            "metadata": {"name": name},
            "spec": triggered_spec(),
        },
    )
    admin = Chaos(api_client, ns)
    status = wait_for(
        lambda: found if "refused" in ((found := trigger_status(admin, name)).get("lastSkipped") or "") else None,
        timeout=30,
        description="the trigger refused",
    )
    assert 'alice cannot list resource "deployments" in API group "apps"' in status["lastSkipped"]
    assert "matching" not in status, "a refused trigger watches nothing"
    assert "TriggerRefused" in admin.events(name)
    wait_rolled_out(apps, ns, restart_rollout(apps, ns))
    stays(lambda: not runs_of(admin, name), 3, "a refused trigger starts no run")


def test_a_trigger_on_a_workflow_starts_a_workflow_run_acting_as_the_workflows_requester(
    web: Chaos, apps: client.AppsV1Api
) -> None:
    ns = web.namespace
    web.scenario("kill", pod_kill_spec({"app": "web"}))
    flow = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosWorkflow",
        "metadata": {"name": "flow"},
        "spec": {
            "nodes": [{"name": "kill", "scenarioRef": {"name": "kill"}}],
            "triggers": [rollout_trigger()],
            "runTemplate": {"dryRun": True},
        },
    }
    web.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "chaosworkflows", flow)
    uid = apps.read_namespaced_deployment("web", ns).metadata.uid

    def workflow() -> dict[str, Any]:
        return dict(web.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "chaosworkflows", "flow"))

    wait_for(
        lambda: ((workflow().get("status") or {}).get("triggers") or [{}])[0].get("matching") == [uid],
        timeout=30,
        description="the workflow's trigger following web",
    )
    wait_rolled_out(apps, ns, restart_rollout(apps, ns))

    def runs() -> list[dict[str, Any]]:
        return list(
            web.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "testruns", label_selector="chaos.coordinator.dev/workflow=flow"
            )["items"]
        )

    [run] = wait_for(lambda: runs() or None, timeout=30, description="the triggered workflow run")
    name = run["metadata"]["name"]
    assert run["spec"]["workflowRef"] == {"name": "flow"}
    assert json.loads(run["metadata"]["annotations"][TRIGGERED_BY])["uid"] == uid
    status = web.wait_phase(name, "Passed", timeout=60)
    assert [node["phase"] for node in status["nodes"]] == ["Passed"]
    child = web.get_run(status["nodes"][0]["testRun"])
    requester = workflow()["metadata"]["annotations"]["chaos.coordinator.dev/requested-by"]
    assert child["metadata"]["annotations"]["chaos.coordinator.dev/requested-by"] == requester
    assert child["spec"]["dryRun"] is True
