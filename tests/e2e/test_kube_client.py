"""The operator's own API client (adapters/kube.py) against the real API server: how it lists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from kubernetes import client

from coordinator.adapters.kube import KubeClient
from coordinator.testing.waiting import wait_for

ETCD_LISTS = re.compile(r'^etcd_requests_total\{operation="list",type="configmaps"\} (\d+)', re.MULTILINE)


def etcd_configmap_lists(kubeconfig: Path) -> int:
    """ConfigMap list requests the API server has sent to etcd so far (not those served from its watch cache)."""
    metrics = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    match = ETCD_LISTS.search(metrics)
    return int(match.group(1)) if match else 0


async def test_a_list_in_one_response_is_served_from_the_watch_cache(
    kubeconfig: Path, core: client.CoreV1Api, namespace: str
) -> None:
    """Target selection lists in one response (``list_summaries``): one request, read from the watch cache, not
    etcd. Paginated, every page after the first is an etcd read (benchmarks/README.md, finding 15)."""
    for i in range(7):
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"pick": "yes"}))
        )
    kube = await KubeClient.connect(str(kubeconfig))
    try:
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        before, requests = etcd_configmap_lists(kubeconfig), kube.requests
        whole = await kube.list_summaries(path, label_selector="pick=yes")
        assert kube.requests - requests == 1
        assert etcd_configmap_lists(kubeconfig) == before, "the one-response list was read from etcd"

        before, requests = etcd_configmap_lists(kubeconfig), kube.requests
        paged = await kube.list(path, label_selector="pick=yes", page_size=2)
        assert kube.requests - requests == 4
        assert etcd_configmap_lists(kubeconfig) - before >= 3, "continued pages come from etcd"
    finally:
        await kube.close()
    names = sorted(item.summary["metadata"]["name"] for item in whole)
    assert names == [f"cm-{i}" for i in range(7)]
    assert sorted(item["metadata"]["name"] for item in paged) == names
    by_name = {item["metadata"]["name"]: item for item in paged}
    for item in whole:
        full = item.object()
        assert full == by_name[full["metadata"]["name"]], "the summary's object is the listed object"
        assert item.summary["metadata"]["labels"] == {"pick": "yes"}


async def test_a_metadata_list_keeps_what_selection_reads(
    kubeconfig: Path, core: client.CoreV1Api, namespace: str
) -> None:
    """Pods listed as metadata only, the phase filtered by the API server: a pod kill's selection reads
    nothing else (benchmarks/README.md, finding 20)."""
    node = core.list_node().items[0].metadata.name
    for name, node_name in (("running", node), ("pending", "no-such-node")):
        core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name=name, labels={"app": "meta"}, annotations={"team": "a"}),
                spec=client.V1PodSpec(node_name=node_name, containers=[client.V1Container(name="c", image="x")]),
            ),
        )
    wait_for(
        lambda: core.read_namespaced_pod("running", namespace).status.phase == "Running",
        timeout=30,
        description="the pod on a kwok node Running",
    )
    assert core.read_namespaced_pod("pending", namespace).status.phase == "Pending"
    kube = await KubeClient.connect(str(kubeconfig))
    try:
        path = f"/api/v1/namespaces/{namespace}/pods"
        listed = await kube.list_summaries(
            path, label_selector="app=meta", field_selector="status.phase=Running", metadata_only=True
        )
        both = await kube.list_summaries(path, label_selector="app=meta", metadata_only=True)
    finally:
        await kube.close()
    assert [item.summary["metadata"]["name"] for item in listed] == ["running"]
    assert sorted(item.summary["metadata"]["name"] for item in both) == ["pending", "running"]
    [item] = listed
    assert item.summary["metadata"]["labels"] == {"app": "meta"}
    assert item.summary["metadata"]["annotations"] == {"team": "a"}
    assert item.summary["metadata"]["uid"]
    assert "status" not in item.summary
    whole = item.object()
    assert whole["kind"] == "PartialObjectMetadata"
    assert "spec" not in whole
    assert "status" not in whole
