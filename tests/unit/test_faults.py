"""The pure parts of the fault drivers: ledger entries, record annotations, originals, patches and policies."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.adapters.kube import Credentials, KubeClient
from coordinator.api.models import (
    Fault,
    FaultType,
    Injection,
    InjectionState,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPartitionOptions,
    NetworkPeer,
    PodFailureOptions,
    ScaleOptions,
    TargetKind,
    TargetRef,
)
from coordinator.faults import DRIVERS, driver_for
from coordinator.faults.base import (
    ANNOTATION_PREFIX,
    INJECTED_LABEL,
    FaultContext,
    FaultError,
    PlannedTarget,
    ProtectedTargetError,
    RunIdentity,
    annotation_key,
    first_original,
    injection_id,
    new_injection,
    original_of,
    record_payload,
    records_on,
)
from coordinator.faults.network_partition import (
    PARTITION_LABEL_PREFIX,
    NetworkPartitionFault,
    build_policy,
    partition_label,
    peer_to_policy,
    policy_name,
)
from coordinator.faults.node_cordon import NodeCordonFault
from coordinator.faults.node_drain import NodeDrainFault, drainable
from coordinator.faults.pod_failure import PodFailureFault, _images_patch
from coordinator.faults.pod_kill import PodKillFault
from coordinator.faults.rollout_restart import RolloutRestartFault
from coordinator.faults.scale import ScaleFault, scaled_replicas

INPOD_FAULTS = [
    "network-delay",
    "network-loss",
    "network-duplicate",
    "network-corrupt",
    "network-bandwidth",
    "cpu-stress",
    "memory-stress",
    "io-stress",
    "container-kill",
    "clock-skew",
    "dns-fault",
    "http-fault",
]

FAST = settings(max_examples=60, deadline=None)

RUN = RunIdentity(namespace="chaos", name="checkout-restart-7x2k", uid="3f2b9c1e-8d4a-4c55-9e0f-1a2b3c4d5e6f")

# Kubernetes' qualified-name rules for annotation and label keys: an optional DNS-subdomain prefix, "/", and a
# name of at most 63 characters.
QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --- realistic objects ---------------------------------------------------------------------------------------


def pod_obj(
    name: str,
    namespace: str = "shop",
    *,
    containers: Mapping[str, str] | None = None,
    owner_kind: str = "ReplicaSet",
    phase: str = "Running",
    annotations: Mapping[str, str] | None = None,
    deletion_timestamp: str | None = None,
) -> dict[str, Any]:
    containers = containers if containers is not None else {"app": "registry.example.com/shop/checkout:1.4.2"}
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": {"app": "checkout", "pod-template-hash": "6d8f9c7b5"},
        "annotations": dict(annotations or {}),
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": owner_kind,
                "name": "checkout-6d8f9c7b5",
                "uid": "0b7e6a52-7d1c-4d3e-a6f2-1f0c9b8a7e6d",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if deletion_timestamp:
        meta["deletionTimestamp"] = deletion_timestamp
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": "worker-1",
            "containers": [
                {"name": c, "image": image, "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
                for c, image in containers.items()
            ],
        },
        "status": {"phase": phase, "podIP": "10.244.1.17"},
    }


def deployment_obj(name: str, replicas: int | None, namespace: str = "shop") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": name, "image": f"registry.example.com/shop/{name}:2.0.0"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 3},
        "spec": spec,
        "status": {"replicas": replicas or 0, "readyReplicas": replicas or 0},
    }


def node_obj(name: str, unschedulable: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podCIDR": "10.244.1.0/24", "providerID": f"kind://docker/kind/{name}"}
    if unschedulable is not None:
        spec["unschedulable"] = unschedulable
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"kubernetes.io/hostname": name}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def ref_of(obj: Mapping[str, Any]) -> TargetRef:
    meta = obj["metadata"]
    return TargetRef(kind=obj["kind"], namespace=meta.get("namespace"), name=meta["name"], uid=meta.get("uid"))


def planned(obj: Mapping[str, Any]) -> PlannedTarget:
    return PlannedTarget(ref=ref_of(obj), obj=obj)


def unused_client() -> KubeClient:
    """A real client that is never used: building it opens no connection."""
    return KubeClient(Credentials(host="https://127.0.0.1:6443", ssl_context=False, token=None, token_file=None))


# --- injection ids, record keys, ledger entries --------------------------------------------------------------


def test_injection_id_of_a_namespaced_target() -> None:
    target = TargetRef(kind="Pod", namespace="shop", name="checkout-6d8f9c7b5-x7k2p")
    assert injection_id(2, 1, "pod-kill", target) == "2.1/pod-kill/Pod/shop/checkout-6d8f9c7b5-x7k2p"


def test_injection_id_of_a_cluster_scoped_target() -> None:
    target = TargetRef(kind="Node", name="worker-2")
    assert injection_id(0, 0, "node-cordon", target) == "0.0/node-cordon/Node/worker-2"


def test_injection_ids_differ_by_step_fault_index_and_target() -> None:
    target = TargetRef(kind="Pod", namespace="shop", name="checkout-1")
    other = TargetRef(kind="Pod", namespace="payments", name="checkout-1")
    ids = {
        injection_id(0, 0, "pod-kill", target),
        injection_id(1, 0, "pod-kill", target),
        injection_id(0, 1, "pod-kill", target),
        injection_id(0, 0, "pod-failure", target),
        injection_id(0, 0, "pod-kill", other),
    }
    assert len(ids) == 5


def test_annotation_key_shape() -> None:
    key = annotation_key(RUN.uid, "0.0/pod-kill/Pod/shop/checkout-1")
    assert key.startswith(ANNOTATION_PREFIX + "3f2b9c1e-")
    assert re.fullmatch(re.escape(ANNOTATION_PREFIX) + r"3f2b9c1e-[0-9a-f]{10}", key)
    prefix, name = key.split("/")
    assert prefix == "chaos.coordinator.dev"
    assert len(name) <= 63
    assert QUALIFIED_NAME.match(name)


def test_annotation_key_is_deterministic_and_distinguishes_runs_and_injections() -> None:
    inj = "1.0/scale/Deployment/shop/checkout"
    assert annotation_key(RUN.uid, inj) == annotation_key(RUN.uid, inj)
    assert annotation_key(RUN.uid, inj) != annotation_key(RUN.uid, "1.0/scale/Deployment/shop/cart")
    assert annotation_key(RUN.uid, inj) != annotation_key("9a8b7c6d-0000-4000-8000-000000000000", inj)


@FAST
@given(
    uid=st.uuids().map(str),
    step=st.integers(min_value=0, max_value=31),
    fault_index=st.integers(min_value=0, max_value=15),
    name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?", fullmatch=True),
)
def test_annotation_keys_are_always_valid_kubernetes_keys(uid: str, step: int, fault_index: int, name: str) -> None:
    target = TargetRef(kind="Pod", namespace="shop", name=name)
    key = annotation_key(uid, injection_id(step, fault_index, "pod-failure", target))
    prefix, key_name = key.split("/")
    assert DNS_SUBDOMAIN.match(prefix)
    assert len(key_name) <= 63
    assert QUALIFIED_NAME.match(key_name)


def test_new_injection_serialises_the_original_with_sorted_keys() -> None:
    target = TargetRef(kind="Deployment", namespace="shop", name="checkout", uid="uid-checkout")
    inj = new_injection(3, 1, FaultType.SCALE, target, {"replicas": 4, "extra": "x"})
    assert inj.id == "3.1/scale/Deployment/shop/checkout"
    assert inj.step == 3
    assert inj.faultIndex == 1
    assert inj.fault == "scale"
    assert inj.target == target
    assert inj.state == InjectionState.RECORDED
    assert inj.original == '{"extra": "x", "replicas": 4}'
    assert inj.appliedAt is None
    assert inj.revertedAt is None


def test_new_injection_accepts_the_fault_type_as_a_string() -> None:
    target = TargetRef(kind="Pod", namespace="shop", name="checkout-1")
    inj = new_injection(0, 0, "pod-kill", target, None)
    assert inj.fault == FaultType.POD_KILL
    assert inj.original is None


def test_new_injection_rejects_an_unknown_fault_type() -> None:
    target = TargetRef(kind="Pod", namespace="shop", name="checkout-1")
    with pytest.raises(ValueError, match="network-latency"):
        new_injection(0, 0, "network-latency", target, None)


def test_original_of_round_trips_new_injection() -> None:
    original = {"images": {"app": "registry.example.com/shop/checkout:1.4.2", "sidecar": "envoyproxy/envoy:v1.30"}}
    inj = new_injection(0, 0, FaultType.POD_FAILURE, TargetRef(kind="Pod", namespace="shop", name="p"), original)
    assert original_of(inj) == original


@pytest.mark.parametrize("stored", [None, ""])
def test_original_of_without_an_original_is_empty(stored: str | None) -> None:
    inj = Injection(
        id="0.0/pod-kill/Pod/shop/p",
        step=0,
        fault=FaultType.POD_KILL,
        target=TargetRef(kind="Pod", namespace="shop", name="p"),
        state=InjectionState.IRREVERSIBLE,
        original=stored,
    )
    assert original_of(inj) == {}


def test_record_payload_holds_what_a_sweep_needs_to_revert() -> None:
    target = TargetRef(kind="Node", name="worker-2", uid="uid-worker-2")
    inj = new_injection(1, 0, FaultType.NODE_CORDON, target, {"unschedulable": False})
    payload = record_payload(RUN, inj)
    assert json.loads(payload) == {
        "run": "chaos/checkout-restart-7x2k",
        "runUid": RUN.uid,
        "id": "1.0/node-cordon/Node/worker-2",
        "fault": "node-cordon",
        "original": '{"unschedulable": false}',
    }
    # Sorted keys: the same change always writes the same annotation value.
    assert list(json.loads(payload)) == ["fault", "id", "original", "run", "runUid"]


def test_record_payload_of_an_irreversible_change_has_a_null_original() -> None:
    inj = new_injection(0, 0, FaultType.POD_KILL, TargetRef(kind="Pod", namespace="shop", name="p"), None)
    assert json.loads(record_payload(RUN, inj))["original"] is None


def test_run_identity_ref() -> None:
    assert RUN.ref == "chaos/checkout-restart-7x2k"


# --- FaultContext --------------------------------------------------------------------------------------------


def context(protected: frozenset[str] = frozenset({"kube-system", "test-coordinator"})) -> FaultContext:
    return FaultContext(client=unused_client(), run=RUN, protected=protected)


def test_guard_refuses_a_protected_namespace() -> None:
    target = TargetRef(kind="Pod", namespace="kube-system", name="coredns-5d78c9869d-4hq8v")
    with pytest.raises(ProtectedTargetError, match=r"Pod kube-system/coredns-5d78c9869d-4hq8v.*protected"):
        context().guard(target)


def test_protected_target_error_is_a_fault_error() -> None:
    with pytest.raises(FaultError):
        context().guard(TargetRef(kind="Deployment", namespace="test-coordinator", name="operator"))


def test_guard_lets_unprotected_and_cluster_scoped_targets_through() -> None:
    ctx = context()
    ctx.guard(TargetRef(kind="Pod", namespace="shop", name="checkout-1"))  # raises if refused
    ctx.guard(TargetRef(kind="Node", name="worker-1"))
    # A Node has no namespace, so even a protected set holding every name lets it through.
    context(frozenset({"worker-1", "shop", ""})).guard(TargetRef(kind="Node", name="worker-1"))


async def test_may_touch_consults_protection_then_the_policy() -> None:
    asked: list[str] = []

    async def policy(namespace: str) -> tuple[bool, str]:
        asked.append(namespace)
        return namespace == "shop", "label chaos.coordinator.dev/allow=true is missing"

    ctx = context()
    assert await ctx.may_touch("shop") is True  # no policy: anything unprotected
    ctx.namespace_policy = policy
    assert await ctx.may_touch("shop") is True
    assert await ctx.may_touch("payments") is False
    assert await ctx.may_touch("kube-system") is False
    assert asked == ["shop", "payments"]  # a protected namespace never reaches the policy


# --- the default plan ----------------------------------------------------------------------------------------


def test_default_plan_is_one_entry_per_target_with_its_original() -> None:
    fault = Fault(type=FaultType.SCALE, scale=ScaleOptions(replicas=0))
    targets = [planned(deployment_obj("checkout", 3)), planned(deployment_obj("cart", 5))]
    entries = ScaleFault().plan(2, 1, fault, targets, RUN)
    assert [e.id for e in entries] == [
        "2.1/scale/Deployment/shop/checkout",
        "2.1/scale/Deployment/shop/cart",
    ]
    assert [original_of(e) for e in entries] == [{"replicas": 3}, {"replicas": 5}]
    assert all(e.state == InjectionState.RECORDED and e.step == 2 and e.faultIndex == 1 for e in entries)
    assert [e.target.uid for e in entries] == ["uid-checkout", "uid-cart"]


def test_default_plan_of_an_irreversible_fault_records_no_original() -> None:
    fault = Fault(type=FaultType.POD_KILL)
    entries = PodKillFault().plan(0, 0, fault, [planned(pod_obj("checkout-1")), planned(pod_obj("checkout-2"))], RUN)
    assert [e.id for e in entries] == ["0.0/pod-kill/Pod/shop/checkout-1", "0.0/pod-kill/Pod/shop/checkout-2"]
    assert [e.original for e in entries] == [None, None]


def test_default_plan_of_no_targets_is_empty() -> None:
    assert NodeCordonFault().plan(0, 0, Fault(type=FaultType.NODE_CORDON), [], RUN) == []


# --- scale ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "options", "expected"),
    [
        (5, ScaleOptions(replicas=0), 0),
        (5, ScaleOptions(replicas=2), 2),
        (1, ScaleOptions(replicas=8), 8),
        (10, ScaleOptions(percent=50), 5),
        (5, ScaleOptions(percent=50), 2),  # rounded down
        (3, ScaleOptions(percent=33), 0),
        (4, ScaleOptions(percent=200), 8),
        (7, ScaleOptions(percent=0), 0),
        (0, ScaleOptions(percent=50), 0),
        (7, ScaleOptions(percent=100), 7),
    ],
)
def test_scaled_replicas(current: int, options: ScaleOptions, expected: int) -> None:
    assert scaled_replicas(current, options) == expected


@FAST
@given(current=st.integers(min_value=0, max_value=10000), percent=st.integers(min_value=0, max_value=1000))
def test_scaled_replicas_by_percent_is_the_floor(current: int, percent: int) -> None:
    result = scaled_replicas(current, ScaleOptions(percent=percent))
    assert result * 100 <= current * percent < (result + 1) * 100
    if percent <= 100:
        assert result <= current


@pytest.mark.parametrize(("replicas", "expected"), [(3, 3), (0, 0), (None, 1)])
def test_scale_original_is_the_current_replicas(replicas: int | None, expected: int) -> None:
    fault = Fault(type=FaultType.SCALE, scale=ScaleOptions(percent=50))
    assert ScaleFault().original(fault, deployment_obj("checkout", replicas)) == {"replicas": expected}


# --- pod-failure ---------------------------------------------------------------------------------------------

TWO_CONTAINERS = {
    "app": "registry.example.com/shop/checkout:1.4.2",
    "envoy": "envoyproxy/envoy:v1.30.1",
}


def test_pod_failure_original_is_every_container_image_by_default() -> None:
    fault = Fault(type=FaultType.POD_FAILURE)
    original = PodFailureFault().original(fault, pod_obj("checkout-1", containers=TWO_CONTAINERS))
    assert original == {"images": TWO_CONTAINERS}


def test_pod_failure_original_is_only_the_named_containers() -> None:
    fault = Fault(type=FaultType.POD_FAILURE, podFailure=PodFailureOptions(containerNames=["envoy"]))
    original = PodFailureFault().original(fault, pod_obj("checkout-1", containers=TWO_CONTAINERS))
    assert original == {"images": {"envoy": "envoyproxy/envoy:v1.30.1"}}


def test_pod_failure_original_rejects_unknown_container_names() -> None:
    fault = Fault(type=FaultType.POD_FAILURE, podFailure=PodFailureOptions(containerNames=["app", "redis", "db"]))
    with pytest.raises(FaultError, match=r"pod checkout-1 has no container\(s\) \['db', 'redis'\]"):
        PodFailureFault().original(fault, pod_obj("checkout-1", containers=TWO_CONTAINERS))


def test_pod_failure_plan_fails_on_the_pod_missing_a_container() -> None:
    fault = Fault(type=FaultType.POD_FAILURE, podFailure=PodFailureOptions(containerNames=["envoy"]))
    targets = [
        planned(pod_obj("checkout-1", containers=TWO_CONTAINERS)),
        planned(pod_obj("checkout-2", containers={"app": "registry.example.com/shop/checkout:1.4.2"})),
    ]
    with pytest.raises(FaultError, match="checkout-2"):
        PodFailureFault().plan(0, 0, fault, targets, RUN)


def test_images_patch_is_a_strategic_merge_of_the_containers_by_name() -> None:
    patch = _images_patch({"envoy": "coordinator.invalid/x:y", "app": "coordinator.invalid/x:y"})
    assert patch == {
        "spec": {
            "containers": [
                {"name": "app", "image": "coordinator.invalid/x:y"},
                {"name": "envoy", "image": "coordinator.invalid/x:y"},
            ]
        }
    }


def test_images_patch_of_the_original_restores_each_image() -> None:
    fault = Fault(type=FaultType.POD_FAILURE)
    entry = PodFailureFault().plan(0, 0, fault, [planned(pod_obj("checkout-1", containers=TWO_CONTAINERS))], RUN)[0]
    patch = _images_patch(original_of(entry)["images"])
    assert patch["spec"]["containers"] == [
        {"name": "app", "image": "registry.example.com/shop/checkout:1.4.2"},
        {"name": "envoy", "image": "envoyproxy/envoy:v1.30.1"},
    ]


# --- node-cordon and node-drain ------------------------------------------------------------------------------


@pytest.mark.parametrize(("unschedulable", "expected"), [(None, False), (False, False), (True, True)])
@pytest.mark.parametrize("driver", [NodeCordonFault(), NodeDrainFault()], ids=["cordon", "drain"])
def test_node_original_is_whether_it_was_unschedulable(
    driver: NodeCordonFault | NodeDrainFault, unschedulable: bool | None, expected: bool
) -> None:
    fault = Fault(type=driver.type)
    assert driver.original(fault, node_obj("worker-1", unschedulable)) == {"unschedulable": expected}


def test_node_cordon_plan_targets_the_cluster_scoped_node() -> None:
    entries = NodeCordonFault().plan(1, 0, Fault(type=FaultType.NODE_CORDON), [planned(node_obj("worker-3"))], RUN)
    assert len(entries) == 1
    assert entries[0].id == "1.0/node-cordon/Node/worker-3"
    assert entries[0].target.namespace is None
    assert original_of(entries[0]) == {"unschedulable": False}


def test_drainable_running_pod_of_a_replicaset() -> None:
    assert drainable(pod_obj("checkout-1")) is True


def test_drainable_pending_pod_and_a_bare_pod() -> None:
    assert drainable(pod_obj("checkout-1", phase="Pending")) is True
    bare = pod_obj("debug")
    del bare["metadata"]["ownerReferences"]
    del bare["status"]
    assert drainable(bare) is True


def test_daemonset_pods_stay() -> None:
    assert drainable(pod_obj("kube-proxy-8xk2l", namespace="kube-system", owner_kind="DaemonSet")) is False


def test_mirror_pods_stay() -> None:
    static = pod_obj(
        "etcd-control-plane",
        namespace="kube-system",
        owner_kind="Node",
        annotations={"kubernetes.io/config.mirror": "6b1d2a7f0c9e8d3b", "kubernetes.io/config.source": "file"},
    )
    assert drainable(static) is False


def test_terminating_pods_stay() -> None:
    assert drainable(pod_obj("checkout-1", deletion_timestamp="2024-05-01T10:00:00Z")) is False


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_stay(phase: str) -> None:
    assert drainable(pod_obj("migrate-28571234-abcde", owner_kind="Job", phase=phase)) is False


def test_drainable_tolerates_null_annotations_and_owner_references() -> None:
    pod = pod_obj("checkout-1")
    pod["metadata"]["annotations"] = None
    pod["metadata"]["ownerReferences"] = None
    assert drainable(pod) is True


# --- network-partition ---------------------------------------------------------------------------------------


def test_partition_label_and_policy_name() -> None:
    assert partition_label(RUN.uid) == "chaos.coordinator.dev/partition-3f2b9c1e"
    assert partition_label(RUN.uid).startswith(PARTITION_LABEL_PREFIX)
    assert policy_name(RUN, 4) == "chaos-partition-3f2b9c1e-4"
    assert DNS_SUBDOMAIN.match(policy_name(RUN, 4))
    prefix, name = partition_label(RUN.uid).split("/")
    assert DNS_SUBDOMAIN.match(prefix)
    assert QUALIFIED_NAME.match(name)


def test_peer_to_policy_cidr() -> None:
    assert peer_to_policy(NetworkPeer(cidr="10.96.0.0/12")) == {"ipBlock": {"cidr": "10.96.0.0/12"}}


def test_peer_to_policy_pod_and_namespace_selectors() -> None:
    peer = NetworkPeer(
        podSelector=LabelSelector(
            matchLabels={"k8s-app": "kube-dns"},
            matchExpressions=[
                LabelSelectorRequirement(key="tier", operator="In", values=["dns", "cache"]),
                LabelSelectorRequirement(key="canary", operator="DoesNotExist"),
            ],
        ),
        namespaceSelector=LabelSelector(matchLabels={"kubernetes.io/metadata.name": "kube-system"}),
    )
    assert peer_to_policy(peer) == {
        "podSelector": {
            "matchLabels": {"k8s-app": "kube-dns"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["dns", "cache"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        },
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    }


def test_peer_to_policy_empty_selector_means_every_pod() -> None:
    assert peer_to_policy(NetworkPeer(podSelector=LabelSelector())) == {"podSelector": {}}


def test_build_policy_cuts_both_directions_by_default() -> None:
    label = partition_label(RUN.uid)
    policy = build_policy("chaos-partition-3f2b9c1e-1", "shop", label, 1, NetworkPartitionOptions())
    assert policy == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "chaos-partition-3f2b9c1e-1",
            "namespace": "shop",
            "labels": {INJECTED_LABEL: "true"},
        },
        "spec": {
            "podSelector": {"matchLabels": {"chaos.coordinator.dev/partition-3f2b9c1e": "1"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }


@pytest.mark.parametrize(
    ("direction", "types", "present", "absent"),
    [("ingress", ["Ingress"], "ingress", "egress"), ("egress", ["Egress"], "egress", "ingress")],
)
def test_build_policy_one_direction(direction: str, types: list[str], present: str, absent: str) -> None:
    options = NetworkPartitionOptions(direction=direction)
    spec = build_policy("p", "shop", partition_label(RUN.uid), 0, options)["spec"]
    assert spec["policyTypes"] == types
    assert spec[present] == []
    assert absent not in spec


def test_build_policy_lets_allowed_peers_through() -> None:
    options = NetworkPartitionOptions(
        allowedPeers=[
            NetworkPeer(
                namespaceSelector=LabelSelector(matchLabels={"kubernetes.io/metadata.name": "kube-system"}),
                podSelector=LabelSelector(matchLabels={"k8s-app": "kube-dns"}),
            ),
            NetworkPeer(cidr="192.168.0.0/16"),
        ]
    )
    spec = build_policy("p", "shop", partition_label(RUN.uid), 2, options)["spec"]
    peers = [
        {
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        },
        {"ipBlock": {"cidr": "192.168.0.0/16"}},
    ]
    assert spec["ingress"] == [{"from": peers}]
    assert spec["egress"] == [{"to": peers}]
    assert spec["podSelector"] == {"matchLabels": {"chaos.coordinator.dev/partition-3f2b9c1e": "2"}}


def test_network_partition_plan_labels_each_pod_and_creates_one_policy_per_namespace() -> None:
    fault = Fault(type=FaultType.NETWORK_PARTITION)
    targets = [
        planned(pod_obj("checkout-1", namespace="shop")),
        planned(pod_obj("ledger-0", namespace="payments")),
        planned(pod_obj("checkout-2", namespace="shop")),
    ]
    driver = NetworkPartitionFault()
    entries = driver.plan(1, 0, fault, targets, RUN)
    assert [e.id for e in entries] == [
        "1.0/network-partition/Pod/shop/checkout-1",
        "1.0/network-partition/Pod/payments/ledger-0",
        "1.0/network-partition/Pod/shop/checkout-2",
        "1.0/network-partition/NetworkPolicy/payments/chaos-partition-3f2b9c1e-1",
        "1.0/network-partition/NetworkPolicy/shop/chaos-partition-3f2b9c1e-1",
    ]
    pods, policies = entries[:3], entries[3:]
    assert all(original_of(e) == {"label": "chaos.coordinator.dev/partition-3f2b9c1e"} for e in pods)
    assert all(original_of(e) == {"created": True} for e in policies)
    assert [(p.target.kind, p.target.namespace, p.target.name) for p in policies] == [
        ("NetworkPolicy", "payments", "chaos-partition-3f2b9c1e-1"),
        ("NetworkPolicy", "shop", "chaos-partition-3f2b9c1e-1"),
    ]
    assert [driver.creates_object(e) for e in entries] == [False, False, False, True, True]
    assert all(e.fault == FaultType.NETWORK_PARTITION and e.state == InjectionState.RECORDED for e in entries)
    assert len({e.id for e in entries}) == len(entries)


def test_network_partition_policies_come_in_namespace_order_whatever_the_target_order() -> None:
    namespaces = ["shop", "payments", "search", "auth", "cart", "inventory"]
    targets = [planned(pod_obj(f"api-{i}", namespace=ns)) for i, ns in enumerate(namespaces * 2)]
    entries = NetworkPartitionFault().plan(0, 2, Fault(type=FaultType.NETWORK_PARTITION), targets, RUN)
    policies = [e.target.namespace for e in entries if e.target.kind == "NetworkPolicy"]
    assert policies == sorted(namespaces)
    assert len(entries) == 12 + 6


def test_network_partition_plan_of_no_targets_is_empty() -> None:
    assert NetworkPartitionFault().plan(0, 0, Fault(type=FaultType.NETWORK_PARTITION), [], RUN) == []


# --- the driver registry -------------------------------------------------------------------------------------


def test_every_fault_type_has_its_driver() -> None:
    assert set(DRIVERS) == {str(t) for t in FaultType}
    for fault_type in FaultType:
        assert driver_for(fault_type).type == fault_type
        assert driver_for(str(fault_type)) is DRIVERS[str(fault_type)]


def test_driver_kinds_are_target_kinds() -> None:
    kinds = {str(k) for k in TargetKind}
    for name, driver in DRIVERS.items():
        assert driver.kinds, name
        assert driver.kinds <= kinds, name


def test_driver_kinds() -> None:
    assert {name: sorted(d.kinds) for name, d in DRIVERS.items()} == {
        "pod-kill": ["Pod"],
        "pod-failure": ["Pod"],
        "rollout-restart": ["DaemonSet", "Deployment", "StatefulSet"],
        "scale": ["Deployment", "StatefulSet"],
        "node-cordon": ["Node"],
        "node-drain": ["Node"],
        "network-partition": ["Pod"],
        **{name: ["Pod"] for name in INPOD_FAULTS},
    }


def test_reversible_flags() -> None:
    assert {name: d.reversible for name, d in DRIVERS.items()} == {
        "pod-kill": False,
        "rollout-restart": False,
        "pod-failure": True,
        "scale": True,
        "node-cordon": True,
        "node-drain": True,
        "network-partition": True,
        # In-pod agents remove their fault themselves; the record annotation still marks the pod.
        **{name: name != "container-kill" for name in INPOD_FAULTS},
    }


def test_irreversible_drivers_record_no_original() -> None:
    deployment = deployment_obj("checkout", 3)
    assert RolloutRestartFault().original(Fault(type=FaultType.ROLLOUT_RESTART), deployment) is None
    assert PodKillFault().original(Fault(type=FaultType.POD_KILL), pod_obj("checkout-1")) is None


def test_options_reads_the_field_named_after_the_type() -> None:
    options = ScaleOptions(percent=25)
    assert ScaleFault().options(Fault(type=FaultType.SCALE, scale=options)) == options
    assert PodFailureFault().options(Fault(type=FaultType.POD_FAILURE)) is None


def test_two_partition_faults_in_one_step_get_their_own_label_and_policy() -> None:
    assert partition_label(RUN.uid, 1) != partition_label(RUN.uid, 0)
    assert policy_name(RUN, 0, 1) != policy_name(RUN, 0, 0)
    driver = NetworkPartitionFault()
    targets = [planned(pod_obj("checkout-1", namespace="shop"))]
    first = driver.plan(0, 0, Fault(type=FaultType.NETWORK_PARTITION), targets, RUN)
    second = driver.plan(0, 1, Fault(type=FaultType.NETWORK_PARTITION), targets, RUN)
    policies = {i.target.name for i in first + second if i.target.kind == "NetworkPolicy"}
    assert len(policies) == 2
    labels = {original_of(i)["label"] for i in first + second if i.target.kind == "Pod"}
    assert len(labels) == 2


def _record(run_uid: str, fault: str, original: str | None, recorded_at: str | None = None) -> str:
    record = {"run": f"shop/{run_uid}", "runUid": run_uid, "id": "x", "fault": fault, "original": original}
    if recorded_at is not None:
        record["recordedAt"] = recorded_at
    return json.dumps(record)


def test_the_first_original_recorded_on_a_target_wins() -> None:
    """Overlapping changes: the later runs read the first run's change as their "original"; the first record's
    original is what was there before any of them."""
    obj = {
        "metadata": {
            "annotations": {
                f"{ANNOTATION_PREFIX}cccccccc-1": _record("c", "scale", '{"replicas": 2}', "2026-12-06T08:00:02.0Z"),
                f"{ANNOTATION_PREFIX}aaaaaaaa-1": _record("a", "scale", '{"replicas": 3}', "2026-12-06T08:00:00.0Z"),
                f"{ANNOTATION_PREFIX}bbbbbbbb-1": _record("b", "scale", '{"replicas": 1}', "2026-12-06T08:00:01.0Z"),
                "unrelated": "x",
            }
        }
    }
    assert [r["runUid"] for _, r in records_on(obj)] == ["a", "b", "c"]
    assert first_original(records_on(obj), "scale") == '{"replicas": 3}'
    assert first_original(records_on(obj), "node-cordon") is None


def test_records_from_before_recorded_at_count_as_the_oldest() -> None:
    obj = {
        "metadata": {
            "annotations": {
                f"{ANNOTATION_PREFIX}bbbbbbbb-1": _record("b", "scale", '{"replicas": 1}', "2026-12-06T08:00:01.0Z"),
                f"{ANNOTATION_PREFIX}aaaaaaaa-1": _record("a", "scale", '{"replicas": 3}'),
                f"{ANNOTATION_PREFIX}dddddddd-1": "not json",
            }
        }
    }
    assert first_original(records_on(obj), "scale") == '{"replicas": 3}'
