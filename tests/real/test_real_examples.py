"""The in-pod examples of examples/, applied as a user would, on the real node (kwok cannot start their agents)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from support.chaos import Chaos
from support.examples import INPOD_EXAMPLES, WORKLOAD, fault_types, in_namespace, kubectl_apply, load_docs
from support.realnode import NODE, WEB_IMAGE, netem_available, wait_ready
from support.residue import residue

NETEM_FAULTS = {"network-delay", "network-duplicate", "network-corrupt"}


def on_the_real_node(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sample workload with the locally built web image, pinned to the real node (port 8080, not 80)."""
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        pod["nodeSelector"] = {NODE.REAL_NODE_LABEL: NODE.REAL_NODE_LABEL_VALUE}
        pod["tolerations"] = [{"key": NODE.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
        for container in pod["containers"]:
            container["image"] = WEB_IMAGE
            container["imagePullPolicy"] = "Never"
            container["ports"] = [{"containerPort": 8080}]
            container["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1}
    return docs


@pytest.mark.parametrize("example", INPOD_EXAMPLES, ids=[path.stem for path in INPOD_EXAMPLES])
def test_inpod_example_runs_on_the_real_node(
    example: Path, chaos: Chaos, kubeconfig: Path, core: client.CoreV1Api
) -> None:
    ns = chaos.namespace
    kubectl_apply(kubeconfig, on_the_real_node(in_namespace(load_docs(WORKLOAD), ns)))
    wait_ready(core, ns, "web", 3)
    docs = load_docs(example)
    kubectl_apply(kubeconfig, in_namespace(docs, ns))
    run = docs[1]["metadata"]["name"]
    if fault_types(example) & NETEM_FAULTS and not netem_available():
        status = chaos.wait_phase(run, "Error", timeout=120)
        assert "sch_netem" in status["message"], status["message"]
        assert residue(kubeconfig, ns, ignore={NODE.REAL_NODE_LABEL}) == [], "a key of ours outlived the run"
        return
    status = chaos.wait_phase(run, "Passed", timeout=120)
    for step in status["steps"]:
        assert step["outcome"] == "Reverted", f"step {step['name']}: {step.get('message')}"
    assert {i["state"] for i in status["injections"]} <= {"Reverted", "Irreversible"}
    # Every object of the namespace, the pods the agents ran in included.
    assert residue(kubeconfig, ns, ignore={NODE.REAL_NODE_LABEL}) == [], "a key of ours outlived the run"
