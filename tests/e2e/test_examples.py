"""Every example in examples/ applied as a user would (``kubectl apply``), so the examples cannot rot.

Each example runs in a fresh opted-in namespace instead of ``demo``: its documents and the sample workload are
rewritten into that namespace before they are applied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from conftest import wait_ready
from coordinator.api.models import ChaosScenario, FaultType, TestRun
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos
from support.examples import (
    EXAMPLE_NAMESPACE,
    EXAMPLES,
    EXAMPLES_DIR,
    INPOD_EXAMPLES,
    KWOK_EXAMPLES,
    MAX_RUN_SECONDS,
    WORKLOAD,
    due_soon,
    in_namespace,
    kubectl_apply,
    load_docs,
    rendered,
)
from support.residue import residue


def test_examples_cover_every_fault() -> None:
    assert EXAMPLES, f"no examples in {EXAMPLES_DIR}"
    used = {
        fault["type"]
        for path in EXAMPLES
        for doc in load_docs(path)
        if doc["kind"] == "ChaosScenario"
        for step in doc["spec"]["steps"]
        for fault in step["faults"]
    }
    assert used == {str(fault) for fault in FaultType}


# Examples of in-pod faults need a kubelet to run their agent; they run on the real node (tests/real/test_real_examples.py).
@pytest.mark.parametrize("example", KWOK_EXAMPLES, ids=[path.stem for path in KWOK_EXAMPLES])
def test_example_runs_and_passes(
    example: Path, chaos: Chaos, kubeconfig: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    docs = load_docs(example)
    scheduled = bool(docs[0]["spec"].get("schedule"))
    triggered = bool(docs[0]["spec"].get("triggers"))
    expected = ["ChaosScenario"] if scheduled or triggered else ["ChaosScenario", "TestRun"]
    assert [doc["kind"] for doc in docs] == expected, (
        "a scenario, then a run of it (its schedule or its trigger makes the runs)"
    )
    assert all(doc["metadata"].get("namespace") == EXAMPLE_NAMESPACE for doc in docs), "examples live in demo"
    scenario = ChaosScenario.model_validate(rendered(docs[0]))  # the operator's own models accept it
    if not (scheduled or triggered):
        run = TestRun.model_validate(docs[1])
        assert run.spec.scenarioRef.name == scenario.metadata["name"]
    assert scenario.spec.description, "an example says what it tests"
    assert "type" in docs[0]["spec"], "an example names its scenario type"

    ns = chaos.namespace
    kubectl_apply(kubeconfig, in_namespace(load_docs(WORKLOAD), ns))
    wait_ready(core, ns, "web", 3)

    kubectl_apply(kubeconfig, in_namespace(due_soon(docs) if scheduled else docs, ns))
    if scheduled:
        scenario_label = f"chaos.coordinator.dev/scenario={scenario.metadata['name']}"
        runs = wait_for(
            lambda: chaos.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "testruns", label_selector=scenario_label
            )["items"],
            timeout=30,
            description="the first scheduled run",
        )
        run_name = runs[0]["metadata"]["name"]
        # The brought-forward schedule fires every 2 s: stop it while the first run still holds its step (Forbid
        # keeps a second run out until then), or the next run scales web down again before the checks below.
        chaos.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "chaosscenarios", scenario.metadata["name"], {"spec": {"suspend": True}}
        )
    elif triggered:
        run_name = _trigger_rollout(chaos, apps, scenario.metadata["name"])
    else:
        run_name = run.metadata["name"]
    status = chaos.wait_phase(run_name, "Passed", timeout=60)
    if scheduled:
        names = [
            item["metadata"]["name"]
            for item in chaos.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "testruns", label_selector=scenario_label
            )["items"]
        ]
        assert names == [run_name], f"one scheduled run while the schedule was live, got {names}"

    steps = status["steps"]
    assert [step["name"] for step in steps] == [step.name for step in scenario.spec.steps]
    for step in steps:
        assert step["outcome"] == "Reverted", f"step {step['name']}: {step.get('message')}"
        assert step["targetCount"] >= 1, f"step {step['name']} hit nothing"
    states = {injection["id"]: injection["state"] for injection in status["injections"]}
    assert states, "the run recorded its changes"
    assert set(states.values()) <= {"Reverted", "Irreversible"}, states
    assert status["durationSeconds"] < MAX_RUN_SECONDS, f"the example took {status['durationSeconds']}s"

    nodes: set[str] = set()
    if str(scenario.spec.target.kind) == "Node":
        nodes = {target["name"] for step in steps for target in step["targets"]}
        assert nodes, "the node example recorded its node"
        for node in nodes:
            spec = core.read_node(node).spec
            assert spec is not None
            assert not spec.unschedulable, f"node {node} left cordoned"
    else:
        assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3, "the workload is back to 3 replicas"
    # Every object of the namespace (ReplicaSets and pods a controller made from a changed template included).
    assert residue(kubeconfig, ns, sorted(nodes)) == [], "a key of ours outlived the run"


def _trigger_rollout(chaos: Chaos, apps: client.AppsV1Api, scenario: str) -> str:
    """Restart web's rollout once the trigger has recorded it as rolled out (an object already meeting the
    conditions starts nothing); the name of the one run its completion starts."""
    ns = chaos.namespace

    def recorded() -> bool:
        obj = chaos.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", scenario)
        return any(entry.get("matching") for entry in (obj.get("status") or {}).get("triggers") or [])

    wait_for(recorded, timeout=30, description="the rolled-out Deployment recorded by the trigger")
    restarted = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "example"}}}}}
    apps.patch_namespaced_deployment("web", ns, restarted)
    label = f"chaos.coordinator.dev/scenario={scenario}"
    runs = wait_for(
        lambda: chaos.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "testruns", label_selector=label)[
            "items"
        ],
        timeout=60,
        description="the run the completed rollout triggers",
    )
    assert len(runs) == 1, "one run per edge"
    return str(runs[0]["metadata"]["name"])


@pytest.mark.parametrize("example", INPOD_EXAMPLES, ids=[path.stem for path in INPOD_EXAMPLES])
def test_inpod_example_on_kwok_says_no_agent_ran(
    example: Path, chaos: Chaos, kubeconfig: Path, core: client.CoreV1Api
) -> None:
    """kwok starts no containers: an in-pod example must end Error (AgentNotRunning), never Passed."""
    ns = chaos.namespace
    kubectl_apply(kubeconfig, in_namespace(load_docs(WORKLOAD), ns))
    wait_ready(core, ns, "web", 3)
    docs = load_docs(example)
    kubectl_apply(kubeconfig, in_namespace(docs, ns))
    status = chaos.wait_phase(docs[1]["metadata"]["name"], "Error", timeout=60)
    assert status["reason"] == "AgentNotRunning"
    assert "did not confirm the fault" in status["message"]
    assert all(i.get("appliedAt") is None for i in status["injections"]), "nothing counts as applied"
    assert residue(kubeconfig, ns) == [], "a key of ours outlived the run"
