"""A run acts only with its requester's rights: real users, real RBAC, the real API server's SubjectAccessReviews.

``alice`` may edit pods and deployments and create scenarios and runs in her own namespace only (a Role there);
``bob`` is cluster-admin. Each is a client certificate signed by the cluster CA (tests/support/identities.py),
and each creates their own ChaosScenarios and TestRuns with their own credentials. The operator's mutating webhook
records them in the requested-by annotation; its validating webhook refuses what they may not do, and the run
checks again before it injects anything (a right lost since, a scheduled run).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from conftest import OPT_IN, make_deployment, own_operator, wait_ready
from coordinator.api.models import REQUESTED_BY_ANNOTATION, RUN_NOW_ANNOTATION, Requester
from coordinator.engine.scheduler import SCENARIO_LABEL
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos
from support.identities import user_kubeconfig

pytestmark = pytest.mark.e2e

AUTHENTICATED = "system:authenticated"  # every authenticated user's group, as the API server adds it
ALICE = Requester(username="alice", groups=[AUTHENTICATED])
BOB = Requester(username="bob", groups=[AUTHENTICATED])
NODE = "kwok-node-0"


def _role(namespace: str) -> client.V1Role:
    edit = ["get", "list", "watch", "create", "update", "patch", "delete"]
    return client.V1Role(
        metadata=client.V1ObjectMeta(name="alice-edit", namespace=namespace),
        rules=[
            client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=edit),
            client.V1PolicyRule(api_groups=["apps"], resources=["deployments", "deployments/scale"], verbs=edit),
            client.V1PolicyRule(api_groups=[GROUP], resources=["chaosscenarios", "testruns"], verbs=["get", "create"]),
            client.V1PolicyRule(api_groups=[GROUP], resources=["chaosscenarios"], verbs=["patch"]),
        ],
    )


@pytest.fixture
def team_a(make_namespace: Callable[[dict[str, str]], str], api_client: client.ApiClient) -> str:
    """alice's namespace: she may edit pods and deployments there, and create scenarios and runs."""
    namespace = make_namespace(OPT_IN)
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(namespace, _role(namespace))
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="alice-edit"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="alice-edit"),
            subjects=[client.RbacV1Subject(kind="User", name="alice", api_group="rbac.authorization.k8s.io")],
        ),
    )
    return namespace


@pytest.fixture
def team_b(make_namespace: Callable[[dict[str, str]], str]) -> str:
    """Another team's namespace, opted in to chaos: alice holds no right there."""
    return make_namespace(OPT_IN)


@pytest.fixture
def alice(kubeconfig: Path, tmp_path: Path) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(user_kubeconfig(kubeconfig, "alice", tmp_path))) as api:
        yield api


@pytest.fixture
def bob(kubeconfig: Path, tmp_path: Path, api_client: client.ApiClient) -> Iterator[client.ApiClient]:
    """bob, bound to cluster-admin for the test."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    binding = f"coordinator-e2e-bob-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=binding),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
            subjects=[client.RbacV1Subject(kind="User", name="bob", api_group="rbac.authorization.k8s.io")],
        )
    )
    try:
        with config.new_client_from_config(config_file=str(user_kubeconfig(kubeconfig, "bob", tmp_path))) as api:
            yield api
    finally:
        rbac.delete_cluster_role_binding(binding)


def _requested_by(requester: Requester | None) -> dict[str, str]:
    return {REQUESTED_BY_ANNOTATION: requester.to_annotation()} if requester is not None else {}


def create_scenario(api: client.ApiClient, namespace: str, spec: dict[str, Any], requester: Requester | None) -> str:
    """Create a ChaosScenario in ``namespace`` as the user of ``api`` (``requester`` in its requested-by
    annotation, or none); its name."""
    name = f"scn-{uuid.uuid4().hex[:6]}"
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "chaosscenarios",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ChaosScenario",
            "metadata": {"name": name, "annotations": _requested_by(requester)},
            "spec": spec,
        },
    )
    return name


def create_run(
    api: client.ApiClient, namespace: str, scenario: str, annotations: dict[str, str] | None = None, **spec: Any
) -> str:
    """Create a TestRun of ``scenario`` in ``namespace`` as the user of ``api``; its name."""
    run = f"run-{uuid.uuid4().hex[:6]}"
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "testruns",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TestRun",
            "metadata": {"name": run, "annotations": annotations or {}},
            "spec": {"scenarioRef": {"name": scenario}, **spec},
        },
    )
    return run


def submit(api: client.ApiClient, namespace: str, spec: dict[str, Any], requester: Requester | None) -> tuple[str, str]:
    """Create a ChaosScenario and a TestRun of it in ``namespace`` as the user of ``api``; their names. The
    requested-by annotation they carry (``requester``, or none) is replaced by the webhook."""
    scenario = create_scenario(api, namespace, spec, requester)
    return scenario, create_run(api, namespace, scenario, _requested_by(requester))


def kill_web(*namespaces: str) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}}
    if namespaces:
        target["namespaces"] = list(namespaces)
    return {
        "target": target,
        "mode": "all",
        "steps": [{"name": "kill", "duration": "1s", "faults": [{"type": "pod-kill"}]}],
    }


def cordon(node: str) -> dict[str, Any]:
    return {
        "target": {"kind": "Node", "names": [node]},
        "steps": [{"name": "cordon", "duration": "1s", "faults": [{"type": "node-cordon"}]}],
    }


def pods(core: client.CoreV1Api, namespace: str) -> dict[str, Any]:
    """The namespace's pods by UID, with their annotations: what a run would change."""
    return {p.metadata.uid: p.metadata.annotations for p in core.list_namespaced_pod(namespace).items}


def cordoned(core: client.CoreV1Api, node: str) -> bool:
    spec = core.read_node(node).spec
    return bool(spec is not None and spec.unschedulable)


def refused(create: Callable[[], object]) -> str:
    """The message of the admission webhook's refusal of ``create`` (a 403 from the API server)."""
    with pytest.raises(ApiException) as raised:
        create()
    assert raised.value.status == 403, raised.value.body
    message = str(json.loads(raised.value.body)["message"])
    assert "denied the request" in message, message
    return message


def test_alice_cannot_reach_another_teams_namespace(
    alice: client.ApiClient,
    bob: client.ApiClient,
    team_a: str,
    team_b: str,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    running_operator: OperatorProcess,
) -> None:
    make_deployment(apps, team_b, "web", replicas=2)
    wait_ready(core, team_b, "web", 2)
    before = pods(core, team_b)
    expected = (
        f'alice cannot list resource "pods" in the namespace "{team_b}" (needed by target selection); '
        f'alice cannot delete resource "pods" in the namespace "{team_b}" (needed by pod-kill)'
    )
    # Her own scenario is refused ...
    assert expected in refused(lambda: create_scenario(alice, team_a, kill_web(team_b), None))
    # ... and so is her run of bob's scenario, which bob may run.
    scenario = create_scenario(bob, team_a, kill_web(team_b), None)
    assert expected in refused(lambda: create_run(alice, team_a, scenario))
    assert pods(core, team_b) == before, "nothing changed in team-b"


def test_templated_parameters_and_schedules_cannot_reach_another_team(
    alice: client.ApiClient, bob: client.ApiClient, team_a: str, team_b: str, running_operator: OperatorProcess
) -> None:
    spec = {**kill_web("{{ params.ns }}"), "parameters": [{"name": "ns", "type": "string", "default": team_a}]}
    scenario = create_scenario(bob, team_a, spec, None)
    create_run(alice, team_a, scenario, dryRun=True)  # with the default, her own namespace: admitted
    message = refused(lambda: create_run(alice, team_a, scenario, parameters={"ns": team_b}))
    assert f'alice cannot delete resource "pods" in the namespace "{team_b}"' in message
    scheduled = {**spec, "schedule": "@every 1m", "runTemplate": {"parameters": {"ns": team_b}}}
    message = refused(lambda: create_scenario(alice, team_a, scheduled, None))
    assert f'alice cannot delete resource "pods" in the namespace "{team_b}"' in message


def test_alice_cannot_start_bobs_scenario_in_another_team_by_run_now(
    alice: client.ApiClient, bob: client.ApiClient, team_a: str, team_b: str, running_operator: OperatorProcess
) -> None:
    """Asking for a run-now makes alice the scenario's requester: she may patch the scenario, not break team-b."""
    scenario = create_scenario(bob, team_a, kill_web(team_b), None)
    annotate = {"metadata": {"annotations": {RUN_NOW_ANNOTATION: "now"}}}
    custom = client.CustomObjectsApi(alice)
    message = refused(
        lambda: custom.patch_namespaced_custom_object(GROUP, VERSION, team_a, "chaosscenarios", scenario, annotate)
    )
    assert f'alice cannot delete resource "pods" in the namespace "{team_b}" (needed by pod-kill)' in message


def test_alice_cannot_cordon_a_node(
    alice: client.ApiClient,
    bob: client.ApiClient,
    team_a: str,
    core: client.CoreV1Api,
    running_operator: OperatorProcess,
) -> None:
    expected = 'alice cannot patch resource "nodes" at the cluster scope (needed by node-cordon)'
    assert expected in refused(lambda: create_scenario(alice, team_a, cordon(NODE), None))
    scenario = create_scenario(bob, team_a, cordon(NODE), None)
    assert expected in refused(lambda: create_run(alice, team_a, scenario))
    assert not cordoned(core, NODE)


def test_bob_may_not_target_nodes_while_node_targeting_is_off(
    bob: client.ApiClient, kubeconfig: Path, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    """An operator of a namespace of its own (its own webhooks) with Node targets off refuses bob, who may do
    anything: only the setting refuses him."""
    system = f"nonodes-{uuid.uuid4().hex[:6]}"
    env = {"COORDINATOR_NODE_TARGETING": "false", "COORDINATOR_NAMESPACE": system}
    try:
        with own_operator(kubeconfig, api_client, core, "nonodes", env) as chaos:
            message = refused(lambda: create_scenario(bob, chaos.namespace, cordon(NODE), None))
    finally:
        core.delete_namespace(system)
    assert "spec.target.kind: Node targets are turned off" in message
    assert "COORDINATOR_NODE_TARGETING=true" in message
    assert "bob cannot" not in message
    assert not cordoned(core, NODE)


def test_alice_cannot_forge_the_requester(
    alice: client.ApiClient, team_a: str, api_client: client.ApiClient, running_operator: OperatorProcess
) -> None:
    scenario = create_scenario(alice, team_a, kill_web(), BOB)
    custom = client.CustomObjectsApi(api_client)
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, team_a, "chaosscenarios", scenario)
    assert stored["metadata"]["annotations"][REQUESTED_BY_ANNOTATION] == ALICE.to_annotation()
    run = create_run(alice, team_a, scenario, dryRun=True, annotations=_requested_by(BOB))
    created = Chaos(api_client, team_a).get_run(run)
    assert created["metadata"]["annotations"][REQUESTED_BY_ANNOTATION] == ALICE.to_annotation()


def test_alice_may_break_her_own_namespace(
    alice: client.ApiClient,
    team_a: str,
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    running_operator: OperatorProcess,
) -> None:
    make_deployment(apps, team_a, "web", replicas=2)
    before = set(wait_ready(core, team_a, "web", 2))
    _, run = submit(alice, team_a, kill_web(), ALICE)
    status = Chaos(api_client, team_a).wait_phase(run, "Passed")
    assert status["requestedBy"] == {"username": "alice", "groups": [AUTHENTICATED]}
    assert {i["target"]["uid"] for i in status["injections"]} == before, "both pods were killed"


def test_alice_may_not_start_an_agent_in_her_pods_without_the_ephemeral_containers_right(
    alice: client.ApiClient,
    team_a: str,
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    running_operator: OperatorProcess,
) -> None:
    make_deployment(apps, team_a, "web", replicas=1)
    wait_ready(core, team_a, "web", 1)
    before = pods(core, team_a)
    delay = {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "steps": [
            {"name": "slow", "duration": "1s", "faults": [{"type": "network-delay", "networkDelay": {"latencyMs": 50}}]}
        ],
    }
    message = refused(lambda: submit(alice, team_a, delay, None))
    assert message.endswith(
        f'alice cannot patch resource "pods/ephemeralcontainers" in the namespace "{team_a}" (needed by network-delay)'
    )
    assert pods(core, team_a) == before


def test_a_scheduled_run_after_alice_lost_her_rights_is_forbidden(
    alice: client.ApiClient,
    team_a: str,
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    running_operator: OperatorProcess,
) -> None:
    """Scheduled runs act for whoever made the scenario, checked again on each run: removing alice's RoleBinding
    between two ticks stops the next run, with nothing changed."""
    make_deployment(apps, team_a, "web", replicas=1)
    wait_ready(core, team_a, "web", 1)
    spec = {**kill_web(), "schedule": "@every 5s", "concurrencyPolicy": "Forbid", "failedRunsHistoryLimit": 5}
    scenario = create_scenario(alice, team_a, spec, None)
    custom = client.CustomObjectsApi(api_client)

    def scheduled() -> list[dict[str, Any]]:
        listed = custom.list_namespaced_custom_object(
            GROUP, VERSION, team_a, "testruns", label_selector=f"{SCENARIO_LABEL}={scenario}"
        )
        return list(listed["items"])

    def phase(run: dict[str, Any]) -> str | None:
        return (run.get("status") or {}).get("phase")

    passed = wait_for(
        lambda: [r for r in scheduled() if phase(r) == "Passed"], timeout=60, description="a scheduled run Passed"
    )
    assert passed[0]["metadata"]["annotations"][REQUESTED_BY_ANNOTATION] == ALICE.to_annotation()
    client.RbacAuthorizationV1Api(api_client).delete_namespaced_role_binding("alice-edit", team_a)
    earlier = {r["metadata"]["name"] for r in scheduled()}
    wait_ready(core, team_a, "web", 1)
    before = pods(core, team_a)
    later = wait_for(
        lambda: [r for r in scheduled() if r["metadata"]["name"] not in earlier and phase(r) == "Error"],
        timeout=60,
        description="a run scheduled after the RoleBinding was removed ended Error",
    )
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, team_a, "chaosscenarios", scenario, {"spec": {"suspend": True}}
    )
    status = later[0]["status"]
    assert status["reason"] == "Forbidden", status.get("message")
    assert f'alice cannot delete resource "pods" in the namespace "{team_a}" (needed by pod-kill)' in status["message"]
    assert not status.get("injections")
    assert not [r for r in scheduled() if r["metadata"]["name"] not in earlier and phase(r) == "Passed"]
    assert pods(core, team_a) == before, "nothing changed after the rights were gone"
