"""network-partition enforced by a real NetworkPolicy implementation, and probes that reach real pods through a
ClusterIP Service (kube-proxy) and a real Prometheus scraping them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kubernetes import client

from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.prometheus import PrometheusServer
from support.realnode import (
    WEB_PORT,
    EffectLog,
    client_pod,
    fetch_from_pod,
    kubectl,
    one_web_pod,
    pod_ip,
    timestamp,
    wait_ready,
    web_deployment,
    web_service,
)


def test_network_partition_cuts_traffic_but_allowed_peers(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = one_web_pod(core, apps, ns)
    url = f"http://{pod_ip(core, ns, pod.metadata.name)}:{WEB_PORT}/"
    stranger = client_pod(core, ns, "stranger", {"role": "stranger"})
    friend = client_pod(core, ns, "friend", {"role": "friend"})
    for peer in (stranger, friend):
        assert fetch_from_pod(kubeconfig, ns, peer, url, count=3).ok == 3, f"{peer} reaches web before the fault"
    fault = {
        "type": "network-partition",
        "networkPartition": {
            "direction": "both",
            "allowedPeers": [{"podSelector": {"matchLabels": {"role": "friend"}}}],
        },
    }
    spec = {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "all",
        "steps": [{"name": "cut", "duration": "25s", "faults": [fault]}],
    }
    chaos.scenario("partition", spec)
    run = chaos.run("partition")
    status = chaos.wait_step(run, 0, "Injected", timeout=60)
    injected = timestamp(status["steps"][0]["injectedAt"])

    def cut() -> float | None:
        return time.time() if fetch_from_pod(kubeconfig, ns, stranger, url, count=1, timeout=1).ok == 0 else None

    enforced = wait_for(cut, timeout=15, interval=0.2, description="the stranger cut off")
    during = fetch_from_pod(kubeconfig, ns, stranger, url, count=5, timeout=1)
    assert during.ok == 0, "every request of a peer outside allowedPeers fails while the partition holds"
    assert fetch_from_pod(kubeconfig, ns, friend, url, count=5).ok == 5, "allowedPeers still reach the target"
    status = chaos.wait_phase(run, "Passed", timeout=90)
    reverted = timestamp(status["steps"][0]["revertedAt"])

    def healed() -> float | None:
        return time.time() if fetch_from_pod(kubeconfig, ns, stranger, url, count=1, timeout=1).ok == 1 else None

    restored = wait_for(healed, timeout=30, interval=0.2, description="the stranger reaches web again")
    effects.record(
        "network-partition",
        f"enforced by kube-router {enforced - injected:.1f} s after injection: 0/5 requests of a stranger pod, "
        "5/5 of an allowed peer",
        f"traffic back {restored - reverted:.1f} s after the NetworkPolicy was deleted",
    )


def test_http_probe_reaches_pods_through_a_clusterip_service(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    web_deployment(apps, ns, replicas=2)
    pods = wait_ready(core, ns, "web", 2)
    cluster_ip = web_service(core, ns)
    probe = {
        "name": "web-http",
        "type": "http",
        "mode": "continuous",
        "interval": "300ms",
        "http": {"url": f"http://{cluster_ip}/", "expectedStatus": [200]},
    }
    spec = {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "one",
        "steps": [{"name": "kill", "duration": "3s", "faults": [{"type": "pod-kill"}]}],
        "steadyState": {"probes": [probe]},
    }
    chaos.scenario("svc", spec)
    run = chaos.run("svc")
    status = chaos.wait_phase(run, {"Passed", "Failed"}, timeout=120)
    (result,) = status["probes"]
    assert result["name"] == "web-http"
    # The requests went through kube-proxy to the pods: the pods' own logs of what they served say so.
    served = 0
    for pod in [*wait_ready(core, ns, "web", 2), *pods]:
        proc = kubectl(
            kubeconfig,
            "exec",
            "-n",
            ns,
            pod.metadata.name,
            "--",
            "python3",
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8080/served').read().decode())",
            check=False,
        )
        if proc.returncode == 0:
            served += json.loads(proc.stdout)["count"]
    assert served > 0, "no pod served the probe's requests"
    assert status["phase"] == "Passed", status.get("message")
    effects.record(
        "http probe",
        f"through ClusterIP {cluster_ip} (kube-proxy): the pods served {served} probe requests during a pod-kill",
        "-",
    )


def test_prometheus_probe_reads_real_pods_metrics_through_their_service(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, tmp_path: Path, effects: EffectLog
) -> None:
    """A real Prometheus scrapes the pods' /metrics through their ClusterIP Service (kube-proxy), across a
    rollout-restart that replaces every pod; the probe reads what it scraped."""
    ns = chaos.namespace
    web_deployment(apps, ns, replicas=2)
    wait_ready(core, ns, "web", 2)
    cluster_ip = web_service(core, ns)
    with PrometheusServer(tmp_path, f"{cluster_ip}:80") as prom:
        probe = {
            "name": "web-ready",
            "type": "prometheus",
            "mode": "edge",
            "prometheus": {
                "endpoint": prom.url,
                "query": 'min(web_ready{job="test"})',
                "operator": "==",
                "threshold": 1,
            },
        }
        spec = {
            "target": {"kind": "Deployment", "names": ["web"]},
            "mode": "all",
            "steps": [{"name": "s", "duration": "1s", "faults": [{"type": "rollout-restart"}]}],
            "steadyState": {"probes": [probe]},
        }
        chaos.scenario("prom", spec)
        run = chaos.run("prom")
        status = chaos.wait_phase(run, "Passed", timeout=90)
        assert status["probes"][0]["lastValue"] == "1"
        scraped = prom.query('web_requests_served_total{job="test"}')["data"]["result"]  # type: ignore[index]
        assert scraped, "Prometheus scraped the pods' own metrics"
    effects.record(
        "prometheus probe",
        f"a real Prometheus scraped the pods' /metrics via ClusterIP {cluster_ip}; the probe read web_ready == 1",
        "-",
    )
