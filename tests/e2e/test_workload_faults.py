"""Workload and node faults: visible through the API while they last, reverted afterwards."""

from __future__ import annotations

import re

from kubernetes import client

from conftest import make_deployment, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos


def _one_step(target: dict, fault: dict, duration: str = "3s", mode: str = "all", **extra: object) -> dict:
    return {"target": target, "mode": mode, "steps": [{"name": "s", "duration": duration, "faults": [fault]}], **extra}


def test_scale_sets_replicas_for_the_step_and_restores_them(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=3)
    make_deployment(apps, ns, "other", replicas=2)
    wait_ready(core, ns, "web", 3)
    chaos.scenario(
        "scale-down",
        _one_step(
            {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "web"}}},
            {"type": "scale", "scale": {"replicas": 1}},
        ),
    )
    run = chaos.run("scale-down")
    chaos.wait_step(run, 0, "Injected")
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1
    wait_ready(core, ns, "web", 1)
    assert apps.read_namespaced_deployment("other", ns).spec.replicas == 2, "only the selected workload is scaled"
    status = chaos.wait_phase(run, "Passed")
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
    wait_ready(core, ns, "web", 3)
    (entry,) = status["injections"]
    assert entry["state"] == "Reverted"
    assert entry["appliedAt"]
    assert entry["revertedAt"]
    annotations = apps.read_namespaced_deployment("web", ns).metadata.annotations or {}
    assert not [k for k in annotations if k.startswith("chaos.coordinator.dev/")]
    # The Deployment controller copies a Deployment's annotations onto its ReplicaSets and never removes them:
    # after the run, nothing of ours is left on any object of the namespace, derived ones included.
    objects = [
        *apps.list_namespaced_deployment(ns).items,
        *apps.list_namespaced_replica_set(ns).items,
        *core.list_namespaced_pod(ns).items,
    ]
    ours = {
        f"{type(o).__name__} {o.metadata.name}: {key}"
        for o in objects
        for key in [*(o.metadata.annotations or {}), *(o.metadata.labels or {})]
        if key.startswith("chaos.coordinator.dev/")
    }
    assert ours == set(), "a record outlived the run"


def test_scale_by_percent(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=4)
    chaos.scenario(
        "half",
        _one_step({"kind": "Deployment", "names": ["web"]}, {"type": "scale", "scale": {"percent": 50}}),
    )
    run = chaos.run("half")
    chaos.wait_step(run, 0, "Injected")
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 2
    chaos.wait_phase(run, "Passed")
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 4


def test_rollout_restart_replaces_every_pod(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    before = wait_ready(core, ns, "web", 2)
    chaos.scenario(
        "restart",
        _one_step({"kind": "Deployment", "names": ["web"]}, {"type": "rollout-restart"}, duration="1s"),
    )
    run = chaos.run("restart")
    chaos.wait_phase(run, "Passed")
    template = apps.read_namespaced_deployment("web", ns).spec.template.metadata.annotations
    assert "kubectl.kubernetes.io/restartedAt" in template
    wait_for(
        lambda: (pods := wait_ready(core, ns, "web", 2)) and set(pods).isdisjoint(before),
        timeout=60,
        description="every pod replaced by the rollout",
    )


def test_node_cordon_marks_only_the_selected_node(chaos: Chaos, core: client.CoreV1Api) -> None:
    chaos.scenario(
        "cordon",
        _one_step(
            {"kind": "Node", "labelSelector": {"matchLabels": {"kubernetes.io/hostname": "kwok-node-1"}}},
            {"type": "node-cordon"},
        ),
    )
    run = chaos.run("cordon")
    chaos.wait_step(run, 0, "Injected")
    assert core.read_node("kwok-node-1").spec.unschedulable is True
    assert not core.read_node("kwok-node-0").spec.unschedulable
    chaos.wait_phase(run, "Passed")
    assert not core.read_node("kwok-node-1").spec.unschedulable
    assert "chaos.coordinator.dev/injected" not in (core.read_node("kwok-node-1").metadata.labels or {})


def test_node_drain_evicts_only_allowed_pods_and_uncordons(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, make_namespace: object
) -> None:
    ns = chaos.namespace
    bystander_ns = make_namespace({})  # type: ignore[operator]  # not opted in: must be left alone
    make_deployment(apps, ns, "pinned", replicas=2, node="kwok-node-2")
    make_deployment(apps, bystander_ns, "bystander", replicas=1, node="kwok-node-2")
    before = wait_ready(core, ns, "pinned", 2)
    bystander = wait_ready(core, bystander_ns, "bystander", 1)
    chaos.scenario(
        "drain",
        _one_step({"kind": "Node", "names": ["kwok-node-2"]}, {"type": "node-drain"}, duration="4s"),
    )
    run = chaos.run("drain")
    status = chaos.wait_step(run, 0, "Injected")
    assert core.read_node("kwok-node-2").spec.unschedulable is True
    # Other opted-in namespaces may have pods on the shared node too; ours are two of those evicted.
    evicted = re.search(r"evicted (\d+) pod", status["steps"][0]["message"])
    assert evicted, status["steps"][0]["message"]
    assert int(evicted.group(1)) >= 2, status["steps"][0]["message"]
    # The replacements are pinned to the cordoned node, so they wait Pending until it is uncordoned.
    wait_for(
        lambda: not set(before) & set(wait_ready_uids(core, ns, "pinned")),
        timeout=30,
        description="the pinned pods evicted",
    )
    assert set(wait_ready_uids(core, bystander_ns, "bystander")) == set(bystander), "bystander untouched"
    chaos.wait_phase(run, "Passed")
    assert not core.read_node("kwok-node-2").spec.unschedulable
    wait_ready(core, ns, "pinned", 2)


def wait_ready_uids(core: client.CoreV1Api, ns: str, app: str) -> list[str]:
    return [
        p.metadata.uid
        for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
        if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
    ]


def test_network_partition_policy_exists_only_during_the_step(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, api_client: client.ApiClient
) -> None:
    ns = chaos.namespace
    net = client.NetworkingV1Api(api_client)
    make_deployment(apps, ns, "web", replicas=3)
    wait_ready(core, ns, "web", 3)
    chaos.scenario(
        "partition",
        _one_step(
            {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
            {
                "type": "network-partition",
                "networkPartition": {
                    "direction": "ingress",
                    "allowedPeers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}}}],
                },
            },
            mode="fixed",
            value=2,
        ),
    )
    run = chaos.run("partition")
    status = chaos.wait_step(run, 0, "Injected")
    (policy,) = net.list_namespaced_network_policy(ns).items
    assert policy.spec.policy_types == ["Ingress"]
    assert policy.spec.ingress[0]._from[0].namespace_selector.match_labels == {"kubernetes.io/metadata.name": "dns"}
    ((label, value),) = policy.spec.pod_selector.match_labels.items()
    isolated = {p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"{label}={value}").items}
    assert isolated == {t["name"] for t in status["steps"][0]["targets"]}
    assert len(isolated) == 2
    chaos.wait_phase(run, "Passed")
    assert net.list_namespaced_network_policy(ns).items == []
    assert core.list_namespaced_pod(ns, label_selector=label).items == []
