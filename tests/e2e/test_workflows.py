"""ChaosWorkflows through the real API server: serial, parallel and conditional nodes, suspend gates, the failure
policy, a SIGKILLed operator, and the parent's abort and deletion reaching every child."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from conftest import make_deployment, wait_ready
from coordinator.api.workflow import ChaosWorkflow
from coordinator.faults.base import ANNOTATION_PREFIX
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, TERMINAL, VERSION, Chaos
from support.examples import WORKFLOW_EXAMPLES, in_namespace, kubectl_apply, load_docs
from support.residue import residue

WORKFLOW_RUN = "chaos.coordinator.dev/workflow-run"
WORKFLOW_NODE = "chaos.coordinator.dev/workflow-node"


# --- building blocks ----------------------------------------------------------------------------------------------


def hold(app: str, seconds: str = "3s") -> dict[str, Any]:
    """pod-failure on one pod of ``app`` for ``seconds``: reversible, with injection and revert times."""
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": app}}},
        "mode": "one",
        "steps": [{"name": "hold", "duration": seconds, "faults": [{"type": "pod-failure"}]}],
    }


def failing(app: str) -> dict[str, Any]:
    """A scenario whose baseline fails at once (``app`` never has 99 replicas): it ends Failed, changing nothing."""
    probe = {
        "name": "impossible",
        "type": "k8s",
        "mode": "before",
        "k8s": {"kind": "Deployment", "name": app, "fieldPath": "spec.replicas", "operator": "==", "value": 99},
    }
    return {**hold(app, "1s"), "steadyState": {"probes": [probe]}}


def workflow(chaos: Chaos, name: str, nodes: list[dict[str, Any]], **spec: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosWorkflow",
        "metadata": {"name": name},
        "spec": {"nodes": nodes, **spec},
    }
    ChaosWorkflow.model_validate(body)
    chaos.custom.create_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "chaosworkflows", body)


def run_workflow(chaos: Chaos, workflow_name: str, name: str, **spec: Any) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestRun",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow_name}, **spec},
    }
    chaos.custom.create_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns", body)
    return name


def children(chaos: Chaos, parent: str) -> dict[str, dict[str, Any]]:
    """The parent's children by node."""
    items = chaos.custom.list_namespaced_custom_object(
        GROUP, VERSION, chaos.namespace, "testruns", label_selector=f"{WORKFLOW_RUN}={parent}"
    )["items"]
    return {item["metadata"]["labels"][WORKFLOW_NODE]: item for item in items}


def nodes_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in status.get("nodes") or []}


def when(value: str | None) -> datetime:
    assert value, "a timestamp was recorded"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def injected_window(run: dict[str, Any]) -> tuple[datetime, datetime]:
    """From the child's first applied change to its last revert."""
    injections = run["status"]["injections"]
    assert injections, f"{run['metadata']['name']} changed nothing"
    return (
        min(when(i.get("appliedAt")) for i in injections),
        max(when(i.get("revertedAt")) for i in injections),
    )


def all_reverted(run: dict[str, Any]) -> None:
    states = {i["id"]: i["state"] for i in run["status"].get("injections") or []}
    assert set(states.values()) <= {"Reverted", "Irreversible"}, f"{run['metadata']['name']}: {states}"


def no_pod_records(core: client.CoreV1Api, namespace: str) -> None:
    for pod in core.list_namespaced_pod(namespace).items:
        ours = [k for k in (pod.metadata.annotations or {}) if k.startswith(ANNOTATION_PREFIX)]
        assert not ours, f"pod {pod.metadata.name} still carries {ours}"


@pytest.fixture
def two_apps(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> Chaos:
    """Deployments web and api (2 replicas each), Ready."""
    for app in ("web", "api"):
        make_deployment(apps, chaos.namespace, app, replicas=2)
    for app in ("web", "api"):
        wait_ready(core, chaos.namespace, app, 2)
    return chaos


# --- the DAG --------------------------------------------------------------------------------------------------------


def test_serial_nodes_run_one_after_the_other_as_labelled_owned_children(
    two_apps: Chaos, kubeconfig: Path, core: client.CoreV1Api
) -> None:
    chaos = two_apps
    chaos.scenario("hold-web", hold("web", "2s"))
    workflow(
        chaos,
        "serial",
        [
            {"name": "first", "scenarioRef": {"name": "hold-web"}},
            {"name": "second", "scenarioRef": {"name": "hold-web"}, "dependsOn": ["first"]},
        ],
    )
    parent = run_workflow(chaos, "serial", "serial-run")
    status = chaos.wait_phase(parent, "Passed", timeout=90)

    kids = children(chaos, parent)
    assert set(kids) == {"first", "second"}
    uid = chaos.get_run(parent)["metadata"]["uid"]
    for node, child in kids.items():
        assert child["metadata"]["name"] == f"{parent}-{node}", "children are named after their parent"
        [owner] = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("TestRun", uid, True)
        assert child["status"]["phase"] == "Passed"
        all_reverted(child)
    first_end = injected_window(kids["first"])[1]
    second_start = injected_window(kids["second"])[0]
    assert second_start >= first_end, "second was injected only after first had reverted"

    nodes = nodes_of(status)
    assert [n["phase"] for n in nodes.values()] == ["Passed", "Passed"]
    assert nodes["first"]["testRun"] == f"{parent}-first"
    assert when(nodes["second"]["startedAt"]) >= when(nodes["first"]["completedAt"])
    assert status["workflow"] == f"{chaos.namespace}/serial"
    assert status["reason"] == "Completed"
    # kubectl shows the parent and its children, the children with their parent in the WORKFLOW column.
    table = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "testruns", "-n", chaos.namespace],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["NAME", "SCENARIO", "WORKFLOW"], header
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name[f"{parent}-first"][1:3] == ["hold-web", parent]
    no_pod_records(core, chaos.namespace)
    # The workflow counts its finished runs, as a scenario does.
    counted = wait_for(
        lambda: (
            s
            if (
                s := chaos.custom.get_namespaced_custom_object(
                    GROUP, VERSION, chaos.namespace, "chaosworkflows", "serial"
                ).get("status")
                or {}
            ).get("totalRuns")
            else None
        ),
        timeout=10,
        description="the workflow's run counted",
    )
    assert counted["lastRun"]["name"] == parent
    assert counted["passRate"] == "100%"


def test_parallel_branches_overlap_in_time(two_apps: Chaos) -> None:
    chaos = two_apps
    chaos.scenario("hold-web", hold("web", "4s"))
    chaos.scenario("hold-api", hold("api", "4s"))
    workflow(
        chaos,
        "fan-out",
        [
            {"name": "web", "scenarioRef": {"name": "hold-web"}},
            {"name": "api", "scenarioRef": {"name": "hold-api"}},
            {"name": "after", "scenarioRef": {"name": "hold-web"}, "dependsOn": ["web", "api"]},
        ],
    )
    parent = run_workflow(chaos, "fan-out", "fan-out-run")
    chaos.wait_phase(parent, "Passed", timeout=90)
    kids = children(chaos, parent)
    web, api, after = (injected_window(kids[n]) for n in ("web", "api", "after"))
    assert web[0] < api[1], f"the branches overlapped: web {web}, api {api}"
    assert api[0] < web[1], f"the branches overlapped: web {web}, api {api}"
    assert after[0] >= max(web[1], api[1]), "the join ran after both branches"


def test_two_branches_on_one_target_are_serialized_and_the_status_says_so(two_apps: Chaos) -> None:
    chaos = two_apps
    scale = {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [{"name": "down", "duration": "4s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
    }
    chaos.scenario("scale-web", scale)
    workflow(
        chaos,
        "same-target",
        [{"name": "one", "scenarioRef": {"name": "scale-web"}}, {"name": "two", "scenarioRef": {"name": "scale-web"}}],
    )
    parent = run_workflow(chaos, "same-target", "same-target-run")

    def waiting() -> dict[str, Any] | None:
        nodes = nodes_of(chaos.status(parent))
        return next((n for n in nodes.values() if n.get("reason") == "WaitingForTarget"), None)

    node = wait_for(waiting, timeout=30, description="one branch waiting for the other's target")
    other = "one" if node["name"] == "two" else "two"
    assert f"node {other}" in node["message"], node["message"]
    chaos.wait_phase(parent, "Passed", timeout=90)
    kids = children(chaos, parent)
    first, second = sorted((injected_window(kids[n]) for n in ("one", "two")), key=lambda w: w[0])
    assert second[0] >= first[1], f"the second branch waited for the first's revert: {first}, {second}"


def test_each_when_value_decides_after_a_failure(two_apps: Chaos) -> None:
    chaos = two_apps
    chaos.scenario("fails", failing("web"))
    chaos.scenario("hold-api", hold("api", "1s"))
    workflow(
        chaos,
        "conditions",
        [
            {"name": "broken", "scenarioRef": {"name": "fails"}},
            {"name": "on-pass", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["broken"]},
            {"name": "on-fail", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["broken"], "when": "Failed"},
            {"name": "always", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["on-fail"], "when": "Always"},
            {"name": "after-skip", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["on-pass"], "when": "Always"},
            {"name": "fine", "scenarioRef": {"name": "hold-api"}},
            {"name": "on-fine-fail", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["fine"], "when": "Failed"},
        ],
        failurePolicy="Continue",
    )
    parent = run_workflow(chaos, "conditions", "conditions-run")
    status = chaos.wait_phase(parent, "Failed", timeout=90)
    phases = {name: node["phase"] for name, node in nodes_of(status).items()}
    assert phases == {
        "broken": "Failed",
        "on-pass": "Skipped",  # when: Passed, and its dependency failed
        "on-fail": "Passed",  # when: Failed
        "always": "Passed",
        "after-skip": "Passed",  # Always runs after a skipped dependency too
        "fine": "Passed",
        "on-fine-fail": "Skipped",  # when: Failed, and nothing failed
    }
    assert status["reason"] == "NodeFailed"
    assert "broken" in status["message"]
    assert "when: Passed" in nodes_of(status)["on-pass"]["message"]
    assert set(children(chaos, parent)) == {"broken", "on-fail", "always", "after-skip", "fine"}, "skipped nodes ran"


def test_stop_on_failure_reverts_a_sibling_branch_mid_step(two_apps: Chaos, core: client.CoreV1Api) -> None:
    chaos = two_apps
    chaos.scenario("long-web", hold("web", "120s"))
    chaos.scenario("fails", failing("api"))
    chaos.scenario("hold-api", hold("api", "1s"))
    workflow(
        chaos,
        "stop",
        [
            {"name": "long", "scenarioRef": {"name": "long-web"}},
            {"name": "wait", "suspend": {"duration": "3s"}},
            {"name": "broken", "scenarioRef": {"name": "fails"}, "dependsOn": ["wait"]},
            {"name": "after-long", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["long"]},
            {"name": "alarm", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["broken"], "when": "Failed"},
        ],
    )
    parent = run_workflow(chaos, "stop", "stop-run")
    chaos.wait_step(f"{parent}-long", 0, "Injected", timeout=30)
    status = chaos.wait_phase(parent, "Failed", timeout=90)
    phases = {name: node["phase"] for name, node in nodes_of(status).items()}
    assert phases == {
        "long": "Cancelled",
        "wait": "Passed",
        "broken": "Failed",
        "after-long": "Skipped",
        "alarm": "Passed",  # when: Failed still runs under StopOnFailure
    }
    long = chaos.get_run(f"{parent}-long")
    assert long["status"]["reason"] == "Aborted"
    all_reverted(long)
    started, reverted = injected_window(long)
    assert (reverted - started).total_seconds() < 60, "reverted mid-step, long before its 120 s"
    assert "StopOnFailure" in nodes_of(status)["after-long"]["message"]
    no_pod_records(core, chaos.namespace)


def test_a_suspend_gate_waits_for_the_resume_annotation(two_apps: Chaos) -> None:
    chaos = two_apps
    chaos.scenario("hold-web", hold("web", "1s"))
    workflow(
        chaos,
        "gated",
        [
            {"name": "before", "scenarioRef": {"name": "hold-web"}},
            {"name": "approve", "suspend": {}, "dependsOn": ["before"]},
            {"name": "after", "scenarioRef": {"name": "hold-web"}, "dependsOn": ["approve"]},
        ],
    )
    parent = run_workflow(chaos, "gated", "gated-run")

    def gate(phase: str) -> Callable[[], dict[str, Any] | None]:
        return lambda: s if nodes_of(s := chaos.status(parent)).get("approve", {}).get("phase") == phase else None

    status = wait_for(gate("Suspended"), timeout=60, description="the gate waiting")
    assert "chaos.coordinator.dev/resume=true" in nodes_of(status)["approve"]["message"]
    assert status["phase"] == "Running"
    assert set(children(chaos, parent)) == {"before"}, "nothing after the gate started"
    chaos.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        chaos.namespace,
        "testruns",
        parent,
        {"metadata": {"annotations": {"chaos.coordinator.dev/resume": "true"}}},
    )
    status = chaos.wait_phase(parent, "Passed", timeout=60)
    assert nodes_of(status)["approve"]["reason"] == "Resumed"
    annotations = chaos.get_run(parent)["metadata"].get("annotations") or {}
    assert "chaos.coordinator.dev/resume" not in annotations, "the approval was used up"


# --- crashes, abort and deletion ------------------------------------------------------------------------------------


def test_an_operator_sigkill_mid_workflow_creates_no_node_twice_and_leaves_nothing_applied(
    two_apps: Chaos, running_operator: OperatorProcess, core: client.CoreV1Api
) -> None:
    chaos = two_apps
    chaos.scenario("hold-web", hold("web", "3s"))
    chaos.scenario("hold-api", hold("api", "3s"))
    workflow(
        chaos,
        "crash",
        [
            {"name": "a", "scenarioRef": {"name": "hold-web"}},
            {"name": "b", "scenarioRef": {"name": "hold-api"}},
            {"name": "c", "scenarioRef": {"name": "hold-web"}, "dependsOn": ["a", "b"]},
            {"name": "d", "scenarioRef": {"name": "hold-api"}, "dependsOn": ["c"]},
        ],
    )
    parent = run_workflow(chaos, "crash", "crash-run")
    chaos.wait_step(f"{parent}-a", 0, "Injected", timeout=30)
    running_operator.kill()
    running_operator.start()
    chaos.wait_step(f"{parent}-c", 0, "Injected", timeout=60)
    running_operator.kill()
    running_operator.start()
    status = chaos.wait_phase(parent, "Passed", timeout=120)
    kids = children(chaos, parent)
    assert sorted(kids) == ["a", "b", "c", "d"], "one child per node"
    uids = {child["metadata"]["uid"] for child in kids.values()}
    assert len(uids) == 4
    for node, child in kids.items():
        assert nodes_of(status)[node]["testRun"] == child["metadata"]["name"]
        assert child["status"]["phase"] == "Passed", child["status"].get("message")
        all_reverted(child)
    no_pod_records(core, chaos.namespace)


def test_aborting_the_parent_aborts_every_running_child(two_apps: Chaos, core: client.CoreV1Api) -> None:
    chaos = two_apps
    chaos.scenario("long-web", hold("web", "120s"))
    chaos.scenario("long-api", hold("api", "120s"))
    workflow(
        chaos,
        "abort",
        [
            {"name": "web", "scenarioRef": {"name": "long-web"}},
            {"name": "api", "scenarioRef": {"name": "long-api"}},
            {"name": "gate", "suspend": {}},
            {"name": "later", "scenarioRef": {"name": "long-web"}, "dependsOn": ["web"]},
        ],
    )
    parent = run_workflow(chaos, "abort", "abort-run")
    for node in ("web", "api"):
        chaos.wait_step(f"{parent}-{node}", 0, "Injected", timeout=30)
    chaos.custom.patch_namespaced_custom_object(
        GROUP, VERSION, chaos.namespace, "testruns", parent, {"spec": {"abort": True}}
    )
    status = chaos.wait_phase(parent, "Cancelled", timeout=60)
    phases = {name: node["phase"] for name, node in nodes_of(status).items()}
    assert phases == {"web": "Cancelled", "api": "Cancelled", "gate": "Cancelled", "later": "Skipped"}
    for child in children(chaos, parent).values():
        assert child["status"]["phase"] == "Cancelled"
        all_reverted(child)
    no_pod_records(core, chaos.namespace)


def test_a_timed_out_parent_stops_its_children(two_apps: Chaos) -> None:
    chaos = two_apps
    chaos.scenario("long-web", hold("web", "120s"))
    workflow(chaos, "slow", [{"name": "web", "scenarioRef": {"name": "long-web"}}])
    parent = run_workflow(chaos, "slow", "slow-run", timeout="6s")
    status = chaos.wait_phase(parent, "TimedOut", timeout=60)
    assert nodes_of(status)["web"]["phase"] == "Cancelled"
    child = chaos.get_run(f"{parent}-web")
    assert child["status"]["phase"] == "Cancelled"
    all_reverted(child)


def test_deleting_the_parent_deletes_and_reverts_every_child(
    two_apps: Chaos, kubeconfig: Path, core: client.CoreV1Api
) -> None:
    chaos = two_apps
    chaos.scenario("long-web", hold("web", "120s"))
    chaos.scenario("long-api", hold("api", "120s"))
    workflow(
        chaos,
        "doomed",
        [
            {"name": "web", "scenarioRef": {"name": "long-web"}},
            {"name": "api", "scenarioRef": {"name": "long-api"}},
        ],
    )
    parent = run_workflow(chaos, "doomed", "doomed-run")
    for node in ("web", "api"):
        chaos.wait_step(f"{parent}-{node}", 0, "Injected", timeout=30)
    chaos.custom.delete_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns", parent)
    wait_for(
        lambda: not chaos.run_exists(parent) and not children(chaos, parent),
        timeout=60,
        description="the parent and its children deleted",
    )
    no_pod_records(core, chaos.namespace)
    assert residue(kubeconfig, chaos.namespace, []) == [], "a key of ours outlived the runs"


# --- refusals -----------------------------------------------------------------------------------------------------


def test_a_workflow_with_a_cycle_is_refused_naming_it(chaos: Chaos) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosWorkflow",
        "metadata": {"name": "loop"},
        "spec": {
            "nodes": [
                {"name": "a", "suspend": {}, "dependsOn": ["b"]},
                {"name": "b", "suspend": {}, "dependsOn": ["a"]},
            ]
        },
    }
    with pytest.raises(client.ApiException) as refused:
        chaos.custom.create_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "chaosworkflows", body)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert "spec.nodes: nodes[0].dependsOn: dependency cycle: a -> b -> a" in message, message


def test_a_workflow_run_of_a_missing_workflow_ends_error(chaos: Chaos) -> None:
    parent = run_workflow(chaos, "nowhere", "orphan-run")
    status = chaos.wait_phase(parent, "Error", timeout=30)
    assert status["reason"] == "WorkflowNotFound"
    assert "ChaosWorkflow" in status["message"]
    assert "nowhere" in status["message"]


# --- the example --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", WORKFLOW_EXAMPLES, ids=[path.stem for path in WORKFLOW_EXAMPLES])
def test_the_game_day_example_runs_through_its_gate(
    example: Path, chaos: Chaos, kubeconfig: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    docs = load_docs(example)
    [run] = [doc for doc in docs if doc["kind"] == "TestRun"]
    [flow] = [doc for doc in docs if doc["kind"] == "ChaosWorkflow"]
    ns = chaos.namespace
    kubectl_apply(kubeconfig, in_namespace(load_docs(example.parent / "workload.yaml"), ns))
    wait_ready(core, ns, "web", 3)
    kubectl_apply(kubeconfig, in_namespace(docs, ns))
    parent = run["metadata"]["name"]
    gates = [node["name"] for node in flow["spec"]["nodes"] if node.get("suspend") == {}]
    for gate in gates:
        wait_for(
            lambda gate=gate: nodes_of(chaos.status(parent)).get(gate, {}).get("phase") == "Suspended",
            timeout=60,
            description=f"gate {gate} waiting",
        )
        chaos.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "testruns",
            parent,
            {"metadata": {"annotations": {"chaos.coordinator.dev/resume": "true"}}},
        )
    status = chaos.wait_phase(parent, "Passed", timeout=120)
    phases = {name: node["phase"] for name, node in nodes_of(status).items()}
    assert phases.pop("roll-back") == "Skipped", "nothing failed: the roll-back branch did not run"
    assert set(phases.values()) == {"Passed"}, phases
    assert status["assertions"]
    assert all(a["passed"] for a in status["assertions"])
    for child in children(chaos, parent).values():
        all_reverted(child)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
    assert residue(kubeconfig, ns, []) == [], "a key of ours outlived the game day"
    finished = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "TestRun"}
    assert all(chaos.status(name)["phase"] in TERMINAL for name in finished)
