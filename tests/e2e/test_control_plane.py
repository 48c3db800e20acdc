"""The foundation every other e2e test stands on: a real API server with controllers and simulated kubelets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kubernetes import client

from coordinator.testing.waiting import wait_for
from support.cluster import ClusterUnderTest

VERSIONS = dict(
    line.split("=", 1)
    for line in (Path(__file__).resolve().parents[2] / "hack" / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)


def _ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> dict[str, str]:
    """uid -> name of pods that are Running, Ready and not terminating."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = {}
    for pod in pods:
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        if (
            pod.metadata.deletion_timestamp is None
            and pod.status.phase == "Running"
            and conditions.get("Ready") == "True"
        ):
            ready[pod.metadata.uid] = pod.metadata.name
    return ready


def test_deployment_pods_are_replaced_after_deletion(
    namespace: str, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)

    def three_ready() -> dict[str, str] | None:
        pods = _ready_pods(core, namespace, "app=web")
        return pods if len(pods) == 3 else None

    first = wait_for(three_ready, timeout=60, description="3 Running and Ready pods")
    victim_uid, victim_name = next(iter(first.items()))
    core.delete_namespaced_pod(victim_name, namespace, grace_period_seconds=0)

    def replaced() -> dict[str, str] | None:
        pods = _ready_pods(core, namespace, "app=web")
        return pods if len(pods) == 3 and victim_uid not in pods else None

    after = wait_for(replaced, timeout=60, description="the deleted pod replaced by a new Ready pod")
    new_uids = set(after) - set(first)
    assert len(new_uids) == 1, f"expected exactly one new pod, got {after} (before: {first})"

    # The Deployment's status is written by the controller after it sees the new pod Ready: wait for it, not race it.
    def deployment_ready() -> int | None:
        ready = apps.read_namespaced_deployment_status("web", namespace).status.ready_replicas
        return ready if ready == 3 else None

    assert wait_for(deployment_ready, timeout=30, description="Deployment status readyReplicas == 3") == 3


def test_kubectl_sees_nodes_and_pinned_version(cluster: ClusterUnderTest, kubeconfig: Path) -> None:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    server = json.loads(out.stdout)["serverVersion"]
    if cluster.local:
        assert server["gitVersion"] == VERSIONS["KUBE_VERSION"]
    else:
        assert server["gitVersion"].startswith("v1.")
    nodes = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    ready = [
        n["metadata"]["name"]
        for n in json.loads(nodes.stdout)["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]
    assert len(ready) >= 3, ready
