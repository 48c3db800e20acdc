"""The examples in examples/, loaded and moved into a test's namespace as a user would apply them."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from coordinator.api.models import INPOD_OPTION_FIELDS, Parameter
from coordinator.domain.parameters import render, resolve_parameters

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
WORKLOAD = EXAMPLES_DIR / "workload.yaml"
EXAMPLES = sorted(path for path in EXAMPLES_DIR.glob("*.yaml") if path != WORKLOAD)
EXAMPLE_NAMESPACE = "demo"
# The examples hold each fault for a few seconds; a run taking longer than this means an example grew slow.
MAX_RUN_SECONDS = 15.0


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def in_namespace(docs: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """Copies of ``docs`` moved to ``namespace`` (scenario references included); Namespace documents dropped."""
    moved = []
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        ref = doc.get("spec", {}).get("scenarioRef")
        if doc["kind"] == "TestRun" and ref and ref.get("namespace"):
            ref["namespace"] = namespace
        moved.append(doc)
    return moved


def rendered(doc: dict[str, Any]) -> dict[str, Any]:
    """A scenario as the operator runs it: parameters filled in (a scheduled run's values, else the defaults)."""
    spec = doc["spec"]
    declared = [Parameter.model_validate(p) for p in spec.get("parameters") or []]
    values = resolve_parameters(declared, (spec.get("runTemplate") or {}).get("parameters") or {})
    return {**doc, "spec": render(spec, values)}


def due_soon(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A scheduled example with its schedule brought forward, so the test sees a scheduled run within seconds."""
    out = copy.deepcopy(docs)
    out[0]["spec"]["schedule"] = "@every 2s"
    out[0]["spec"].pop("timeZone", None)
    return out


def kubectl_apply(kubeconfig: Path, docs: list[dict[str, Any]]) -> None:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl apply failed ({proc.returncode}): {proc.stderr or proc.stdout}"


def fault_types(path: Path) -> set[str]:
    return {
        fault["type"]
        for doc in load_docs(path)
        if doc["kind"] == "ChaosScenario"
        for step in doc["spec"]["steps"]
        for fault in step["faults"]
    }


# In-pod faults need a kubelet to start their agent: those examples run on the real node only.
INPOD_EXAMPLES = [path for path in EXAMPLES if fault_types(path) & set(INPOD_OPTION_FIELDS)]
# Workflow examples chain several scenarios (and may wait for a person): tests/e2e/test_workflows.py runs them.
WORKFLOW_EXAMPLES = [path for path in EXAMPLES if any(doc["kind"] == "ChaosWorkflow" for doc in load_docs(path))]


def probe_types(path: Path) -> set[str]:
    return {
        probe["type"]
        for doc in load_docs(path)
        if doc["kind"] == "ChaosScenario"
        for probe in (doc["spec"].get("steadyState") or {}).get("probes") or []
    }


# grpc and cmd probes need running containers (a gRPC server, the command's Pod), which kwok does not run:
# tests/e2e/test_cmd_probe.py runs them, playing the kubelet for the command's Pod.
CONTAINER_PROBE_EXAMPLES = [path for path in EXAMPLES if probe_types(path) & {"grpc", "cmd"}]
KWOK_EXAMPLES = [
    path
    for path in EXAMPLES
    if path not in INPOD_EXAMPLES and path not in WORKFLOW_EXAMPLES and path not in CONTAINER_PROBE_EXAMPLES
]
