"""The rights a scenario's run uses (domain/permissions.py): every fault type, probe, scope and template."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.api.models import FAULT_TYPES, ChaosScenarioSpec, FaultType, TargetKind
from coordinator.domain.permissions import (
    SELECTION,
    TARGET_RESOURCES,
    Need,
    distinct,
    node_targeting_refusal,
    refusal_message,
    scenario_needs,
)
from coordinator.engine.run.admission import render_scenario

pytestmark = pytest.mark.unit

NS = "team-a"

# Per fault type: the target kind, the fault as written, and the accesses (verb, group, resource, subresource,
# namespace) its requester needs besides listing the targets; namespace "*" stands for each target namespace.
ACCESS = tuple[str, str, str, str, str | None]
FAULTS: dict[str, tuple[str, dict[str, Any], set[ACCESS]]] = {
    "pod-kill": ("Pod", {}, {("delete", "", "pods", "", "*")}),
    "pod-failure": ("Pod", {}, {("patch", "", "pods", "", "*")}),
    "rollout-restart": ("StatefulSet", {}, {("patch", "apps", "statefulsets", "", "*")}),
    "scale": ("Deployment", {"scale": {"replicas": 0}}, {("patch", "apps", "deployments", "scale", "*")}),
    "node-cordon": ("Node", {}, {("patch", "", "nodes", "", None)}),
    "node-drain": (
        "Node",
        {},
        {
            ("patch", "", "nodes", "", None),
            ("list", "", "pods", "", None),
            ("create", "", "pods", "eviction", None),
        },
    ),
    "network-partition": (
        "Pod",
        {},
        {
            ("patch", "", "pods", "", "*"),
            ("create", "networking.k8s.io", "networkpolicies", "", "*"),
            ("delete", "networking.k8s.io", "networkpolicies", "", "*"),
        },
    ),
    "network-delay": (
        "Pod",
        {"networkDelay": {"latencyMs": 100}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "network-loss": ("Pod", {"networkLoss": {"percent": 10}}, {("patch", "", "pods", "ephemeralcontainers", "*")}),
    "network-duplicate": (
        "Pod",
        {"networkDuplicate": {"percent": 10}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "network-corrupt": (
        "Pod",
        {"networkCorrupt": {"percent": 10}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "network-bandwidth": (
        "Pod",
        {"networkBandwidth": {"rate": "1mbit"}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "cpu-stress": ("Pod", {}, {("patch", "", "pods", "ephemeralcontainers", "*")}),
    "memory-stress": ("Pod", {}, {("patch", "", "pods", "ephemeralcontainers", "*")}),
    "io-stress": ("Pod", {}, {("patch", "", "pods", "ephemeralcontainers", "*")}),
    "container-kill": (
        "Pod",
        {"containerKill": {"containerName": "app"}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "clock-skew": (
        "Pod",
        {"clockSkew": {"containerName": "app", "offset": "-1h"}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "dns-fault": (
        "Pod",
        {"dnsFault": {"patterns": ["*.example.com"], "error": {}}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
    "http-fault": (
        "Pod",
        {"httpFault": {"port": 8080, "abort": {"statusCode": 503}}},
        {("patch", "", "pods", "ephemeralcontainers", "*")},
    ),
}


def spec(
    target: dict[str, Any], *faults: dict[str, Any], probes: list[dict[str, Any]] | None = None
) -> ChaosScenarioSpec:
    body: dict[str, Any] = {"target": target, "steps": [{"name": "s", "faults": list(faults)}]}
    if probes is not None:
        body["steadyState"] = {"probes": probes}
    return ChaosScenarioSpec.model_validate(body)


def accesses(needs: list[Need]) -> set[ACCESS]:
    return {need.access for need in needs}


def test_the_table_covers_every_fault_type() -> None:
    assert set(FAULTS) == {str(t) for t in FaultType}


@pytest.mark.parametrize("fault_type", list(FAULTS))
def test_each_fault_needs_its_rights_in_every_target_namespace(fault_type: str) -> None:
    kind, options, expected = FAULTS[fault_type]
    namespaces = [] if kind == "Node" else ["team-a", "team-b"]
    scenario = spec({"kind": kind, "namespaces": namespaces}, {"type": fault_type, **options})
    needs = scenario_needs(scenario, NS)
    group, resource = TARGET_RESOURCES[kind]
    scopes: list[str | None] = [None] if kind == "Node" else namespaces
    listing = {("list", group, resource, "", ns) for ns in scopes}
    faults = {(v, g, r, s, n) for v, g, r, s, where in expected for n in (scopes if where == "*" else [where])}
    assert accesses(needs) == listing | faults
    assert {n.needed_by for n in needs if n.access in faults - listing} == {fault_type}
    assert {n.needed_by for n in needs if n.access in listing} >= {SELECTION}


def test_scale_and_rollout_restart_need_the_workload_kind_they_act_on() -> None:
    scale = spec({"kind": "StatefulSet"}, {"type": "scale", "scale": {"percent": 50}})
    assert ("patch", "apps", "statefulsets", "scale", NS) in accesses(scenario_needs(scale, NS))
    restart = spec({"kind": "DaemonSet"}, {"type": "rollout-restart"})
    assert ("patch", "apps", "daemonsets", "", NS) in accesses(scenario_needs(restart, NS))


def test_a_drain_that_ignores_budgets_deletes_pods_at_the_cluster_scope() -> None:
    drain = spec({"kind": "Node"}, {"type": "node-drain", "nodeDrain": {"ignorePodDisruptionBudgets": True}})
    assert ("delete", "", "pods", "", None) in accesses(scenario_needs(drain, NS))
    evicting = spec({"kind": "Node"}, {"type": "node-drain", "nodeDrain": {"ignorePodDisruptionBudgets": False}})
    assert ("delete", "", "pods", "", None) not in accesses(scenario_needs(evicting, NS))


def test_node_targets_ignore_namespaces_and_need_everything_at_the_cluster_scope() -> None:
    cordon = spec({"kind": "Node", "namespaces": ["team-a"]}, {"type": "node-cordon"})
    assert {n.namespace for n in scenario_needs(cordon, NS)} == {None}


def test_empty_namespaces_mean_the_scenarios_own() -> None:
    kill = spec({"kind": "Pod"}, {"type": "pod-kill"})
    assert accesses(scenario_needs(kill, "shop")) == {
        ("list", "", "pods", "", "shop"),
        ("delete", "", "pods", "", "shop"),
    }


def test_templated_namespaces_are_checked_as_rendered() -> None:
    raw = {
        "parameters": [{"name": "where", "default": "team-a"}],
        "target": {"kind": "Pod", "namespaces": ["{{ params.where }}"]},
        "steps": [{"name": "s", "faults": [{"type": "pod-kill"}]}],
    }
    rendered = ChaosScenarioSpec.model_validate(render_scenario("run", "scenario", raw, {"where": "team-b"}))
    assert {n.namespace for n in scenario_needs(rendered, NS)} == {"team-b"}
    with pytest.raises(ValueError, match=r"render the scenario's parameters .*\{\{ params.where \}\}"):
        scenario_needs(ChaosScenarioSpec.model_validate(raw), NS)


PROBE = {"name": "p", "type": "k8s", "k8s": {"kind": "Deployment", "name": "web", "fieldPath": "status.readyReplicas"}}


@pytest.mark.parametrize(
    ("k8s", "access"),
    [
        ({}, ("get", "apps", "deployments", "", NS)),
        ({"namespace": "team-c"}, ("get", "apps", "deployments", "", "team-c")),
        ({"count": True, "value": 1, "fieldPath": None}, ("list", "apps", "deployments", "", NS)),
        (
            {"name": None, "labelSelector": {"matchLabels": {"app": "web"}}},
            ("list", "apps", "deployments", "", NS),
        ),
        ({"apiVersion": "v1", "kind": "Pod"}, ("get", "", "pods", "", NS)),
        ({"apiVersion": "v1", "kind": "Node", "namespace": "team-c"}, ("get", "", "nodes", "", None)),
        (
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"},
            ("get", "networking.k8s.io", "ingresses", "", NS),
        ),
    ],
)
def test_k8s_probes_read_their_kind_in_their_namespace(k8s: dict[str, Any], access: ACCESS) -> None:
    probe = {**PROBE, "k8s": {key: value for key, value in {**PROBE["k8s"], **k8s}.items() if value is not None}}
    scenario = spec({"kind": "Pod"}, {"type": "pod-kill"}, probes=[probe])
    (need,) = [n for n in scenario_needs(scenario, NS) if n.needed_by == "probe p"]
    assert need.access == access


def test_http_and_prometheus_probes_need_no_kubernetes_rights() -> None:
    probes = [
        {"name": "h", "type": "http", "http": {"url": "http://web.shop/"}},
        {
            "name": "q",
            "type": "prometheus",
            "prometheus": {"endpoint": "http://prom:9090", "query": "up", "threshold": 1},
        },
    ]
    scenario = spec({"kind": "Pod"}, {"type": "pod-kill"}, probes=probes)
    assert not [n for n in scenario_needs(scenario, NS) if n.needed_by.startswith("probe")]


def test_each_access_is_asked_once_with_everything_that_needs_it() -> None:
    scenario = spec(
        {"kind": "Pod", "namespaces": ["a", "a", "b"]},
        {"type": "pod-failure"},
        {"type": "network-partition"},
        {"type": "pod-failure"},
    )
    grouped = distinct(scenario_needs(scenario, NS))
    assert grouped[("patch", "", "pods", "", "a")] == ["pod-failure", "network-partition"]
    assert list(grouped).count(("patch", "", "pods", "", "b")) == 1
    assert list(grouped)[:2] == [("list", "", "pods", "", "a"), ("list", "", "pods", "", "b")]


def test_refusals_read_like_kubernetes_rbac_errors() -> None:
    assert (
        refusal_message("alice", ("patch", "", "nodes", "", None), ["node-drain"])
        == 'alice cannot patch resource "nodes" at the cluster scope (needed by node-drain)'
    )
    assert (
        refusal_message("alice", ("delete", "", "pods", "", "team-b"), ["pod-kill"])
        == 'alice cannot delete resource "pods" in the namespace "team-b" (needed by pod-kill)'
    )
    assert (
        refusal_message("alice", ("patch", "apps", "deployments", "scale", "shop"), ["scale", "probe p"])
        == 'alice cannot patch resource "deployments/scale" in API group "apps" in the namespace "shop" '
        "(needed by scale, probe p)"
    )
    assert (
        refusal_message("bob", ("create", "", "pods", "eviction", None), ["node-drain"])
        == 'bob cannot create resource "pods/eviction" at the cluster scope (needed by node-drain)'
    )


def test_node_targets_are_refused_while_the_setting_is_off() -> None:
    drain = spec({"kind": "Node"}, {"type": "node-drain"})
    message = node_targeting_refusal(drain, enabled=False)
    assert message is not None
    assert message.startswith("spec.target.kind: Node targets are turned off")
    assert "spec.steps[0].faults[0] (node-drain)" in message
    assert "COORDINATOR_NODE_TARGETING=true" in message
    assert node_targeting_refusal(drain, enabled=True) is None
    assert node_targeting_refusal(spec({"kind": "Pod"}, {"type": "pod-kill"}), enabled=False) is None


def test_every_declared_right_is_well_formed() -> None:
    for declaration in FAULT_TYPES:
        assert declaration.rights, declaration.type
        for right in declaration.rights:
            assert right.verb in {"get", "list", "create", "patch", "delete"}, (declaration.type, right)
            if right.resource is None:
                assert right.group == "", "a right on the target takes the target kind's group"
            if right.when:  # names a boolean option, so an omitted options object means False
                field = declaration.options.model_fields[right.when]
                assert field.annotation in (bool, "bool"), (declaration.type, right.when)
    assert set(TARGET_RESOURCES) == set(TargetKind)
