"""network-partition: a NetworkPolicy that isolates the selected pods, removed afterwards.

NetworkPolicies select pods by label, so each target pod gets a run-specific label first, and one policy per
namespace selects that label. Everything is cut in the chosen direction except ``allowedPeers``. The effect
needs a NetworkPolicy-enforcing network plugin (kind's default CNI enforces it; kwok's simulated pods have no
network, so there only the API side is visible).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import (
    NETWORK_PARTITION,
    Fault,
    Injection,
    InjectionState,
    LabelSelector,
    NetworkPartitionOptions,
    NetworkPeer,
    TargetRef,
)
from coordinator.faults.base import (
    INJECTED_LABEL,
    FaultContext,
    FaultDriver,
    PlannedTarget,
    RunIdentity,
    annotation_key,
    new_injection,
    original_of,
    record_payload,
    target_path,
    unless_gone,
)

PARTITION_LABEL_PREFIX = "chaos.coordinator.dev/partition-"


def partition_label(run_uid: str, fault_index: int = 0) -> str:
    """The label marking a run's partitioned pods; each partition fault of a step has its own."""
    suffix = f"-{fault_index}" if fault_index else ""
    return f"{PARTITION_LABEL_PREFIX}{run_uid[:8]}{suffix}"


def policy_name(run: RunIdentity, step: int, fault_index: int = 0) -> str:
    suffix = f"-{fault_index}" if fault_index else ""
    return f"chaos-partition-{run.uid[:8]}-{step}{suffix}"


def _selector(selector: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.matchLabels:
        out["matchLabels"] = dict(selector.matchLabels)
    if selector.matchExpressions:
        out["matchExpressions"] = [
            {"key": e.key, "operator": str(e.operator), **({"values": list(e.values)} if e.values else {})}
            for e in selector.matchExpressions
        ]
    return out


def peer_to_policy(peer: NetworkPeer) -> dict[str, Any]:
    if peer.cidr:
        return {"ipBlock": {"cidr": peer.cidr}}
    out: dict[str, Any] = {}
    if peer.podSelector is not None:
        out["podSelector"] = _selector(peer.podSelector)
    if peer.namespaceSelector is not None:
        out["namespaceSelector"] = _selector(peer.namespaceSelector)
    return out


def build_policy(name: str, namespace: str, label: str, step: int, options: NetworkPartitionOptions) -> dict[str, Any]:
    """The NetworkPolicy that cuts the labelled pods off (pure)."""
    peers = [peer_to_policy(p) for p in options.allowedPeers]
    direction = str(options.direction)
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {label: str(step)}}, "policyTypes": []}
    if direction in ("both", "ingress"):
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = [{"from": peers}] if peers else []
    if direction in ("both", "egress"):
        spec["policyTypes"].append("Egress")
        spec["egress"] = [{"to": peers}] if peers else []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {INJECTED_LABEL: "true"}},
        "spec": spec,
    }


class NetworkPartitionFault(FaultDriver):
    declaration = NETWORK_PARTITION

    def plan(
        self, step: int, fault_index: int, fault: Fault, targets: Sequence[PlannedTarget], run: RunIdentity
    ) -> list[Injection]:
        label = partition_label(run.uid, fault_index)
        entries = [new_injection(step, fault_index, self.type, t.ref, {"label": label}) for t in targets]
        for namespace in sorted({t.ref.namespace for t in targets if t.ref.namespace}):
            policy = TargetRef(kind="NetworkPolicy", namespace=namespace, name=policy_name(run, step, fault_index))
            entries.append(new_injection(step, fault_index, self.type, policy, {"created": True}))
        return entries

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return None  # plan() is overridden

    def creates_object(self, injection: Injection) -> bool:
        return injection.target.kind == "NetworkPolicy"

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        ctx.guard(injection.target)
        target = injection.target
        if target.kind == "Pod":
            label = original_of(injection)["label"]
            await ctx.client.patch(target_path(target), {"metadata": {"labels": {label: str(injection.step)}}})
            return InjectionState.APPLIED
        options = NETWORK_PARTITION.options_of(fault) or NetworkPartitionOptions()
        assert target.namespace is not None
        label = partition_label(ctx.run.uid, injection.faultIndex)
        policy = build_policy(target.name, target.namespace, label, injection.step, options)
        # A created object carries its own record, written in the same request that creates it.
        policy["metadata"]["annotations"] = {
            annotation_key(ctx.run.uid, injection.id): record_payload(ctx.run, injection)
        }
        try:
            await ctx.client.create(resource_path("NetworkPolicy", target.namespace), policy)
        except ApiError as exc:
            if not exc.conflict:  # already there: a repeated apply after a restart
                raise
        return InjectionState.APPLIED

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        target = injection.target
        if target.kind == "Pod":
            label = original_of(injection)["label"]
            await unless_gone(client.patch(target_path(target), {"metadata": {"labels": {label: None}}}))
        else:
            await unless_gone(client.delete(target_path(target)))
