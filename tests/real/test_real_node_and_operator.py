"""node-drain of the real node, and the operator itself running in the cluster from its own image."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.cluster import CLUSTER_SCRIPT, REPO_ROOT, ClusterUnderTest
from support.realnode import (
    EXTERNAL_KUBECONFIG,
    NODE,
    OPERATOR_IMAGE,
    REAL_CLUSTER_DIR,
    REAL_CLUSTER_ENV,
    REAL_NODE_NAME,
    EffectLog,
    kubectl,
    ready_pods,
    timestamp,
    wait_ready,
    web_deployment,
)

OPERATOR_NAMESPACE = "test-coordinator"
LEASE = "test-coordinator-leader"


def test_node_drain_honours_the_pod_disruption_budget(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    web_deployment(apps, ns, replicas=2)
    before = {p.metadata.name for p in wait_ready(core, ns, "web", 2)}
    client.PolicyV1Api(core.api_client).create_namespaced_pod_disruption_budget(
        ns,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=1, selector=client.V1LabelSelector(match_labels={"app": "web"})
            ),
        ),
    )
    wait_for(
        lambda: (
            client.PolicyV1Api(core.api_client)
            .read_namespaced_pod_disruption_budget("web", ns)
            .status.disruptions_allowed
            == 1
        ),
        timeout=30,
        description="the PDB allows one disruption",
    )
    spec = {
        "target": {"kind": "Node", "names": [REAL_NODE_NAME]},
        "mode": "all",
        "steps": [{"name": "drain", "duration": "12s", "faults": [{"type": "node-drain"}]}],
    }
    chaos.scenario("drain", spec)
    run = chaos.run("drain")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    assert core.read_node(REAL_NODE_NAME).spec.unschedulable is True
    # One pod is evicted; the other stays, because its replacement cannot be scheduled on the cordoned node and
    # the budget forbids a second disruption.
    wait_for(
        lambda: len(before - {p.metadata.name for p in ready_pods(core, ns, "web")}) == 1,
        timeout=30,
        description="one pod evicted",
    )
    time.sleep(3)  # let the drain try again: the budget must still hold
    assert len(before & {p.metadata.name for p in ready_pods(core, ns, "web")}) == 1, "the PDB was not honoured"
    status = chaos.wait_phase(run, {"Passed", "Failed"}, timeout=90)
    reverted = timestamp(status["steps"][0]["revertedAt"])
    assert not core.read_node(REAL_NODE_NAME).spec.unschedulable
    wait_ready(core, ns, "web", 2, timeout=90)
    effects.record(
        "node-drain",
        "real node cordoned; 1 of 2 pods evicted, the 2nd kept by its PodDisruptionBudget (minAvailable 1)",
        f"uncordoned; 2 pods Ready {time.time() - reverted:.1f} s after the revert",
    )


# The local real node has no cluster DNS: the history database's Service gets this fixed ClusterIP, and the
# database URL in the Secret names it instead of the Service's DNS name (the only change to the Secret).
HISTORY_CLUSTER_IP = "10.96.200.200"
HISTORY_SERVICE = "test-coordinator-history"


def _install_docs(watched: str) -> list[dict[str, Any]]:
    """manifests/install.yaml as shipped, with its pods pinned to the real node, the operator limited to one
    namespace (so it never acts on the host-process operator's namespaces) and failing over within 6 s."""
    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "manifests" / "install.yaml").read_text()) if d]
    for doc in docs:
        if doc["kind"] == "Service" and doc["metadata"]["name"] == HISTORY_SERVICE:
            doc["spec"]["clusterIP"] = HISTORY_CLUSTER_IP
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == HISTORY_SERVICE:
            url = doc["stringData"]["database-url"]
            doc["stringData"]["database-url"] = url.replace(
                f"@{HISTORY_SERVICE}.{OPERATOR_NAMESPACE}.svc:", f"@{HISTORY_CLUSTER_IP}:"
            )
            assert doc["stringData"]["database-url"] != url
        if doc["kind"] == "StatefulSet":
            pod = doc["spec"]["template"]["spec"]
            pod["nodeSelector"] = {NODE.REAL_NODE_LABEL: NODE.REAL_NODE_LABEL_VALUE}
            pod["tolerations"] = [{"key": NODE.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            pod["nodeSelector"] = {NODE.REAL_NODE_LABEL: NODE.REAL_NODE_LABEL_VALUE}
            pod["tolerations"] = [{"key": NODE.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
            (container,) = pod["containers"]
            container["env"] += [
                {"name": "COORDINATOR_WATCH_NAMESPACES", "value": watched},
                {"name": "COORDINATOR_LEADER_ELECTION_LEASE_DURATION", "value": "6"},
                {"name": "COORDINATOR_LEADER_ELECTION_RENEW_DEADLINE", "value": "4"},
                {"name": "COORDINATOR_LEADER_ELECTION_RETRY_PERIOD", "value": "1"},
            ]
    return docs


@pytest.fixture
def installed_operator(kubeconfig: Path, core: client.CoreV1Api, crds_installed: list[str]) -> Iterator[str]:
    """The shipped install, applied from its own image. Yields the namespace the operator watches."""
    watched = f"incluster-{uuid.uuid4().hex[:6]}"

    def not_terminating() -> bool:
        try:
            return bool(core.read_namespace(OPERATOR_NAMESPACE).status.phase != "Terminating")
        except client.ApiException as exc:
            return exc.status == 404

    wait_for(not_terminating, timeout=120, description="an earlier install's namespace gone")
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=watched, labels={"chaos.coordinator.dev/allow": "true", "test": "real"})
        )
    )
    # The database's volume: a hostPath PersistentVolume under the cluster's directory (the local real node has no
    # storage provisioner; a cluster with a default StorageClass, kind's included, needs nothing).
    if not EXTERNAL_KUBECONFIG:
        volume_dir = REAL_CLUSTER_DIR / "volumes" / watched
        volume_dir.mkdir(parents=True)
        os.chown(volume_dir, 999, 999)
        volume_dir.chmod(0o700)
        core.create_persistent_volume(
            client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(name=f"history-{watched}"),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": "1Gi"},
                    access_modes=["ReadWriteOnce"],
                    persistent_volume_reclaim_policy="Retain",
                    storage_class_name="",
                    host_path=client.V1HostPathVolumeSource(path=str(volume_dir), type="Directory"),
                ),
            )
        )
    docs = _install_docs(watched)
    apply = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "--server-side", "--force-conflicts", "-f", "-"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        check=False,
    )
    assert apply.returncode == 0, apply.stderr
    yield watched
    kubectl(kubeconfig, "delete", "namespace", watched, "--wait=false", check=False)
    # Everything but the CRDs: deleting a CRD deletes every object of its kind, the rest of the tier's included.
    installed = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "delete", "--ignore-not-found", "--wait=false", "-f", "-"],
        input=yaml.safe_dump_all(installed),
        capture_output=True,
        text=True,
        check=False,
    )
    kubectl(kubeconfig, "delete", "pvc", "--all", "-n", OPERATOR_NAMESPACE, "--wait=false", check=False)
    if not EXTERNAL_KUBECONFIG:
        kubectl(kubeconfig, "delete", "pv", f"history-{watched}", "--wait=false", check=False)


def _operator_pods(core: client.CoreV1Api) -> list[client.V1Pod]:
    selector = "app.kubernetes.io/name=test-coordinator,app.kubernetes.io/component=operator"
    pods = core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def _leader(kubeconfig: Path) -> str | None:
    proc = kubectl(kubeconfig, "get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    holder: str | None = json.loads(proc.stdout)["spec"].get("holderIdentity")
    return holder


def _shrink_web(
    core: client.CoreV1Api, apps: client.AppsV1Api, api_client: client.ApiClient, ns: str, name: str, hold: str
) -> tuple[Chaos, str]:
    """Two Ready web pods, and a run of scenario ``name`` scaling them to one for ``hold``; (chaos, run name)."""
    web_deployment(apps, ns, replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos = Chaos(api_client, ns)
    spec = {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [{"name": "shrink", "duration": hold, "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
    }
    chaos.scenario(name, spec)
    return chaos, chaos.run(name)


def _ready_operator_pods(core: client.CoreV1Api, count: int = 2) -> list[client.V1Pod]:
    def ready() -> list[client.V1Pod] | None:
        pods = [
            p
            for p in _operator_pods(core)
            if p.status.container_statuses and all(c.ready for c in p.status.container_statuses)
        ]
        return pods if len(pods) == count else None

    return wait_for(ready, timeout=180, description=f"{count} operator replicas Ready")


def test_operator_image_runs_in_cluster_and_a_standby_finishes_the_run(
    installed_operator: str,
    kubeconfig: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    api_client: client.ApiClient,
    effects: EffectLog,
) -> None:
    ns = installed_operator
    ready = _ready_operator_pods(core)
    for pod in ready:
        (container,) = pod.spec.containers
        assert container.image == OPERATOR_IMAGE
        assert pod.spec.node_name == REAL_NODE_NAME
    labels = core.read_namespace(OPERATOR_NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", "admitted under the restricted profile"
    names = {p.metadata.name for p in ready}
    leader = wait_for(lambda: h if (h := _leader(kubeconfig)) in names else None, timeout=60, description="a leader")

    chaos, run = _shrink_web(core, apps, api_client, ns, "ha", "20s")
    chaos.wait_step(run, 0, "Injected", timeout=90)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1
    killed_at = time.time()
    core.delete_namespaced_pod(leader, OPERATOR_NAMESPACE, grace_period_seconds=0)
    # The standby usually wins; the Deployment's replacement pod polls the same Lease and may win the race instead
    # (the CI run on a loaded host saw that): either way another replica than the dead leader takes over.
    successor = wait_for(
        lambda: h if (h := _leader(kubeconfig)) not in (None, leader) else None,
        timeout=90,
        description="another replica takes the Lease",
    )
    took_over = time.time() - killed_at
    who = "the standby" if successor in names else "the replacement pod"
    status = chaos.wait_phase(run, "Passed", timeout=120)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 2, f"{who} reverted the scale"
    assert [i["state"] for i in status["injections"]] == ["Reverted"]
    effects.record(
        "operator in-cluster",
        "2 replicas from the built image under restricted Pod Security; leader pod deleted mid-run",
        f"{who} held the Lease {took_over:.1f} s later and finished the run: Passed, scale reverted",
    )


@pytest.mark.last
def test_cluster_down_leaves_nothing_behind(cluster: ClusterUnderTest) -> None:
    """Runs last in the real tier, with the last tests' pods still on the node: `hack/cluster down`, then look for
    anything of the real node left on the host, independently of the teardown's own check."""
    if EXTERNAL_KUBECONFIG:
        pytest.skip("the cluster under test is not this host's own (COORDINATOR_TEST_KUBECONFIG): nothing to stop")
    saved = json.loads((REAL_CLUSTER_DIR / "sysctls.json").read_text())
    netns_before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    proc = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "down"],
        env={**os.environ, **REAL_CLUSTER_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not REAL_CLUSTER_DIR.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(REAL_CLUSTER_DIR) not in mounts
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                # The operator under test is a client of the cluster; its own fixture stops it.
                if str(REAL_CLUSTER_DIR).encode() in cmdline and b"coordinator.cli.main" not in cmdline:
                    processes.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    assert processes == [], "processes of the real node still run"
    assert not Path("/sys/class/net/coord0").exists()
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("veth")], "pod veths left"
    netns_after = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    assert not {n for n in netns_after if n.startswith("cni-")}, f"pod network namespaces left ({netns_before})"
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "KUBE-" not in rules, "kube-proxy or kube-router rules left"
    sets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=True).stdout.split()
    assert not [s for s in sets if s.startswith("KUBE-")], "kube-router ipsets left"
    for name, value in saved.items():
        assert Path("/proc/sys", name).read_text().strip() == value, f"sysctl {name} not restored"
    leftover_ctr = subprocess.run(["pgrep", "-f", "containerd-shim"], capture_output=True, text=True, check=False)
    assert str(REAL_CLUSTER_DIR) not in leftover_ctr.stdout


def test_history_outlives_both_operator_pods(
    installed_operator: str,
    kubeconfig: Path,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    api_client: client.ApiClient,
    effects: EffectLog,
) -> None:
    """The shipped install's history is PostgreSQL in the cluster: delete every operator pod, and the report the
    new pods give still has the run."""
    ns = installed_operator
    before = {p.metadata.name for p in _ready_operator_pods(core)}
    chaos, run = _shrink_web(core, apps, api_client, ns, "kept", "1s")
    chaos.wait_phase(run, "Passed", timeout=120)
    wait_for(
        lambda: (chaos.status(run).get("history") or {}).get("synced"), timeout=60, description="the run in history"
    )
    assert chaos.status(run)["history"]["store"] == "postgresql"
    for name in before:
        core.delete_namespaced_pod(name, OPERATOR_NAMESPACE, grace_period_seconds=0)
    after = _ready_operator_pods(core)
    assert not before & {p.metadata.name for p in after}, "every operator pod was replaced"
    report = kubectl(
        kubeconfig, "exec", "-n", OPERATOR_NAMESPACE, after[0].metadata.name, "--",
        "coordinator", "report", "--namespace", ns, "--format", "json",
    )  # fmt: skip
    data = json.loads(report.stdout)
    assert data["totals"]["runs"] == 1, data["totals"]
    assert data["totals"]["passed"] == 1
    effects.record(
        "history (install)",
        "both operator pods deleted after a run; the shipped install keeps its history in PostgreSQL",
        "the new pods' coordinator report still has the run (1 run, 1 passed)",
    )
