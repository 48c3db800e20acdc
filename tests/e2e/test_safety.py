"""Safety: rollback on crash, deletion, abort and timeout; protected namespaces; clear errors for bad specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import make_deployment, wait_ready
from coordinator.api.models import FINALIZER
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos, pod_kill_spec


def _scenario(target: dict[str, Any], fault: dict[str, Any], duration: str = "6s", **extra: Any) -> dict[str, Any]:
    return {"target": target, "mode": "all", "steps": [{"name": "s", "duration": duration, "faults": [fault]}], **extra}


def _replicas(apps: client.AppsV1Api, ns: str) -> int:
    return int(apps.read_namespaced_deployment("web", ns).spec.replicas)


class Case:
    """A fault whose effect a test can see and whose revert it can check."""

    def __init__(
        self,
        spec: Callable[[str], dict[str, Any]],
        injected: Callable[[client.ApiClient, str], bool],
        reverted: Callable[[client.ApiClient, str], bool],
    ) -> None:
        self.spec = spec
        self.injected = injected
        self.reverted = reverted


def _policies(api: client.ApiClient, ns: str) -> int:
    return len(client.NetworkingV1Api(api).list_namespaced_network_policy(ns).items)


def _unschedulable(api: client.ApiClient, node: str) -> bool:
    return bool(client.CoreV1Api(api).read_node(node).spec.unschedulable)


CASES = {
    "scale": Case(
        lambda ns: _scenario({"kind": "Deployment", "names": ["web"]}, {"type": "scale", "scale": {"replicas": 1}}),
        lambda api, ns: _replicas(client.AppsV1Api(api), ns) == 1,
        lambda api, ns: _replicas(client.AppsV1Api(api), ns) == 3,
    ),
    "node-cordon": Case(
        lambda ns: _scenario({"kind": "Node", "names": ["kwok-node-0"]}, {"type": "node-cordon"}),
        lambda api, ns: _unschedulable(api, "kwok-node-0"),
        lambda api, ns: not _unschedulable(api, "kwok-node-0"),
    ),
    "network-partition": Case(
        lambda ns: _scenario(
            {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}}, {"type": "network-partition"}
        ),
        lambda api, ns: _policies(api, ns) == 1,
        lambda api, ns: _policies(api, ns) == 0,
    ),
}


@pytest.mark.parametrize("fault", sorted(CASES))
def test_operator_killed_mid_run_resumes_and_reverts(
    fault: str, chaos: Chaos, workload: str, api_client: client.ApiClient, running_operator: OperatorProcess
) -> None:
    case = CASES[fault]
    chaos.scenario("s", case.spec(workload))
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    assert case.injected(api_client, workload)
    ledger_before = chaos.status(run)["injections"]

    running_operator.kill()
    assert case.injected(api_client, workload), "the fault holds while no operator runs"
    running_operator.start()

    status = chaos.wait_phase(run, {"Passed", "Error"})
    assert case.reverted(api_client, workload), f"{fault} left behind after a crash"
    ids = [i["id"] for i in status["injections"]]
    assert ids == [i["id"] for i in ledger_before], "the restarted operator planned nothing new"
    assert len(ids) == len(set(ids))
    assert all(i["state"] == "Reverted" for i in status["injections"])


@pytest.mark.parametrize("fault", sorted(CASES))
def test_deleting_a_run_mid_fault_reverts_it(
    fault: str, chaos: Chaos, workload: str, api_client: client.ApiClient
) -> None:
    case = CASES[fault]
    chaos.scenario("s", case.spec(workload))
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    assert case.injected(api_client, workload)
    chaos.custom.delete_namespaced_custom_object(GROUP, VERSION, workload, "testruns", run)
    wait_for(lambda: case.reverted(api_client, workload), timeout=20, description=f"{fault} reverted on deletion")
    wait_for(lambda: not chaos.run_exists(run), timeout=20, description="the TestRun gone (finalizer released)")


def test_run_deleted_while_operator_down_is_reverted_on_restart(
    chaos: Chaos, workload: str, api_client: client.ApiClient, running_operator: OperatorProcess
) -> None:
    case = CASES["scale"]
    chaos.scenario("s", case.spec(workload))
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    running_operator.kill()
    chaos.custom.delete_namespaced_custom_object(GROUP, VERSION, workload, "testruns", run)
    running_operator.start()
    wait_for(lambda: case.reverted(api_client, workload), timeout=30, description="scale reverted after restart")
    wait_for(lambda: not chaos.run_exists(run), timeout=20, description="the TestRun gone")


def test_a_finished_run_lets_its_finalizer_go_and_is_deleted_without_the_operator(
    chaos: Chaos, workload: str, api_client: client.ApiClient, running_operator: OperatorProcess
) -> None:
    """The finalizer guards a run while it may hold a fault, not after: a finished, mirrored run carries none, so
    deleting it needs no operator (an uninstalled or stopped one cannot strand it)."""
    case = CASES["scale"]
    chaos.scenario(
        "s", _scenario({"kind": "Deployment", "names": ["web"]}, {"type": "scale", "scale": {"replicas": 1}}, "2s")
    )
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    assert case.injected(api_client, workload)
    assert chaos.get_run(run)["metadata"].get("finalizers") == [FINALIZER], "held while the fault is in place"
    status = chaos.wait_phase(run, "Passed", timeout=30)
    assert all(i["state"] == "Reverted" for i in status["injections"])
    wait_for(
        lambda: not chaos.get_run(run)["metadata"].get("finalizers"),
        timeout=10,
        description="the finished run's finalizer let go",
    )
    assert chaos.status(run)["history"]["synced"], "mirrored before the finalizer went"
    running_operator.kill()
    try:
        chaos.custom.delete_namespaced_custom_object(GROUP, VERSION, workload, "testruns", run)
        assert not chaos.run_exists(run), "deleted at once, with no operator running"
    finally:
        running_operator.start()


def test_orphaned_fault_is_swept_when_its_run_vanished(
    chaos: Chaos, workload: str, api_client: client.ApiClient, running_operator: OperatorProcess
) -> None:
    """The last line of defence: the run is gone without its finalizer ever running; the sweep reverts."""
    case = CASES["scale"]
    chaos.scenario(
        "s",
        case.spec(
            workload,
        )
        | {"steps": [{"name": "s", "duration": "60s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}]},
    )
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    running_operator.kill()
    chaos.custom.patch_namespaced_custom_object(
        GROUP, VERSION, workload, "testruns", run, {"metadata": {"finalizers": None}}
    )
    chaos.custom.delete_namespaced_custom_object(GROUP, VERSION, workload, "testruns", run)
    wait_for(lambda: not chaos.run_exists(run), timeout=10, description="the TestRun gone without its finalizer")
    assert case.injected(api_client, workload)
    running_operator.start()
    wait_for(lambda: case.reverted(api_client, workload), timeout=20, description="the orphan swept")


@pytest.mark.parametrize("how", ["spec", "annotation"])
def test_abort_reverts_at_once_and_ends_cancelled(
    how: str, chaos: Chaos, workload: str, api_client: client.ApiClient
) -> None:
    case = CASES["scale"]
    chaos.scenario(
        "s",
        _scenario({"kind": "Deployment", "names": ["web"]}, {"type": "scale", "scale": {"replicas": 1}}, duration="5m"),
    )
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    patch = (
        {"spec": {"abort": True}}
        if how == "spec"
        else {"metadata": {"annotations": {"chaos.coordinator.dev/abort": "true"}}}
    )
    chaos.custom.patch_namespaced_custom_object(GROUP, VERSION, workload, "testruns", run, patch)
    status = chaos.wait_phase(run, "Cancelled", timeout=15)
    assert case.reverted(api_client, workload)
    assert status["reason"] == "Aborted"
    assert {c["type"]: c["status"] for c in status["conditions"]}["FaultsReverted"] == "True"


def test_timeout_reverts_and_ends_timed_out(chaos: Chaos, workload: str, api_client: client.ApiClient) -> None:
    chaos.scenario(
        "s",
        _scenario({"kind": "Deployment", "names": ["web"]}, {"type": "scale", "scale": {"replicas": 1}}, duration="5m"),
    )
    run = chaos.run("s", timeout="3s")
    status = chaos.wait_phase(run, "TimedOut", timeout=20)
    assert CASES["scale"].reverted(api_client, workload)
    assert "spec.timeout" in status["message"]


def test_dry_run_changes_nothing(chaos: Chaos, workload: str, core: client.CoreV1Api) -> None:
    before = wait_ready(core, workload, "web", 3)
    chaos.scenario("kill", pod_kill_spec({"app": "web"}, mode="all"))
    run = chaos.run("kill", dryRun=True)
    status = chaos.wait_phase(run, "Passed")
    step = status["steps"][0]
    assert step["outcome"] == "DryRun"
    assert step["targetCount"] == 3
    assert "would apply pod-kill" in step["message"]
    assert status.get("injections", []) == []
    assert set(wait_ready(core, workload, "web", 3)) == set(before)


def test_selector_matching_nothing_fails_with_reason(chaos: Chaos, workload: str) -> None:
    chaos.scenario("none", pod_kill_spec({"app": "does-not-exist"}))
    run = chaos.run("none")
    status = chaos.wait_phase(run, "Failed")
    assert status["reason"] == "NoTargets"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TargetsSelected"]["status"] == "False"
    assert "matched no eligible Pod" in conditions["TargetsSelected"]["message"]


def test_namespace_without_opt_in_is_never_touched(
    chaos: Chaos, make_namespace: Callable[[dict[str, str]], str], core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    other = make_namespace({})
    make_deployment(apps, other, "web", replicas=2)
    before = wait_ready(core, other, "web", 2)
    chaos.scenario(
        "elsewhere",
        pod_kill_spec({"app": "web"}, mode="all")
        | {"target": {"kind": "Pod", "namespaces": [other], "labelSelector": {"matchLabels": {"app": "web"}}}},
    )
    run = chaos.run("elsewhere")
    status = chaos.wait_phase(run, "Failed")
    assert "has not opted in" in status["message"]
    assert set(wait_ready(core, other, "web", 2)) == set(before)


def test_protected_namespace_is_refused_even_when_opted_in(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    core.patch_namespace("kube-system", {"metadata": {"labels": {"chaos.coordinator.dev/allow": "true"}}})
    try:
        make_deployment(apps, "kube-system", f"victim-{chaos.namespace[-6:]}", replicas=1)
        app = f"victim-{chaos.namespace[-6:]}"
        before = wait_ready(core, "kube-system", app, 1)
        chaos.scenario(
            "system",
            {
                "target": {
                    "kind": "Pod",
                    "namespaces": ["kube-system"],
                    "labelSelector": {"matchLabels": {"app": app}},
                },
                "mode": "all",
                "steps": [{"name": "kill", "duration": "1s", "faults": [{"type": "pod-kill"}]}],
            },
        )
        run = chaos.run("system")
        status = chaos.wait_phase(run, "Failed")
        assert "protected" in status["message"]
        assert set(wait_ready(core, "kube-system", app, 1)) == set(before)
    finally:
        core.patch_namespace("kube-system", {"metadata": {"labels": {"chaos.coordinator.dev/allow": None}}})
        apps.delete_namespaced_deployment(f"victim-{chaos.namespace[-6:]}", "kube-system")


@pytest.mark.parametrize(
    ("scenario", "run_spec", "field"),
    [
        (None, {}, "spec.scenarioRef.name"),
        (
            _scenario({"kind": "Pod"}, {"type": "scale", "scale": {"replicas": 1}}),
            {},
            "spec.steps[0].faults[0].type",
        ),
        (_scenario({"kind": "Deployment"}, {"type": "node-cordon"}), {}, "spec.steps[0].faults[0].type"),
        (_scenario({"kind": "Node"}, {"type": "pod-kill"}), {}, "spec.steps[0].faults[0].type"),
        (
            _scenario({"kind": "Pod", "namespaces": ["kube-system"]}, {"type": "pod-kill"}),
            {},
            "protected",
        ),
    ],
    ids=["missing-scenario", "scale-on-pod", "cordon-on-deployment", "pod-kill-on-node", "protected-namespace"],
)
def test_semantic_errors_end_with_the_field_named(
    chaos: Chaos, scenario: dict[str, Any] | None, run_spec: dict[str, Any], field: str
) -> None:
    if scenario is not None:
        chaos.scenario("bad", scenario)
    run = chaos.run("bad", **run_spec)
    status = chaos.wait_phase(run, {"Error", "Failed"})
    assert field in status["message"], status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Completed"] == "True"


def test_deleting_the_namespace_mid_run_does_not_hang(chaos: Chaos, workload: str, core: client.CoreV1Api) -> None:
    chaos.scenario(
        "s",
        _scenario({"kind": "Deployment", "names": ["web"]}, {"type": "scale", "scale": {"replicas": 1}}, duration="5m"),
    )
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    core.delete_namespace(workload)

    def gone() -> bool:
        try:
            core.read_namespace(workload)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=60, description=f"namespace {workload} deleted")
