"""What a GitOps pipeline relies on: conditions `kubectl wait` reads, an immutable spec, and re-runs from Git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import make_deployment, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos, pod_kill_spec


def _wait(kubeconfig: Path, ns: str, run: str, condition: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "wait", f"--for=condition={condition}", "--timeout=60s",
         "-n", ns, f"testrun/{run}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_kubectl_wait_for_succeeded_or_failed(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("kill", pod_kill_spec({"app": "web"}))
    passed = chaos.run("kill")
    waited = _wait(kubeconfig, ns, passed, "Succeeded")
    assert waited.returncode == 0, waited.stderr
    conditions = {c["type"]: c for c in chaos.status(passed)["conditions"]}
    assert conditions["Failed"]["status"] == "False"
    assert conditions["Ready"]["status"] == "True"
    # A run of a scenario that does not exist ends Error: Failed=True, so a pipeline stops waiting at once.
    errored = chaos.run("no-such-scenario")
    waited = _wait(kubeconfig, ns, errored, "Failed")
    assert waited.returncode == 0, waited.stderr
    failed = {c["type"]: c for c in chaos.status(errored)["conditions"]}["Failed"]
    assert failed["status"] == "True"
    assert "Error" in failed["message"]


def test_spec_is_immutable_but_abort(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("slow", pod_kill_spec({"app": "web"}, duration="60s"))
    chaos.scenario("other", pod_kill_spec({"app": "web"}))
    run = chaos.run("slow")
    assert chaos.wait_step(run, 0, "Injected")["step"] == "1/1 kill", "the STEP column while the run is active"
    with pytest.raises(ApiException) as refused:
        chaos.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "testruns", run, {"spec": {"scenarioRef": {"name": "other"}}}
        )
    assert refused.value.status == 422
    assert "except spec.abort" in refused.value.body
    chaos.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "testruns", run, {"spec": {"abort": True}})
    ended = chaos.wait_phase(run, "Cancelled")
    assert ended["scenario"].endswith("/slow")
    assert "step" not in ended, "no step once the run is over"
    assert ended["duration"].endswith("s"), "DURATION reads as a duration"


def test_a_new_run_now_token_starts_one_run(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("kill", pod_kill_spec({"app": "web"}))

    def runs() -> list[str]:
        items = chaos.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "testruns")["items"]
        return sorted(item["metadata"]["name"] for item in items)

    def annotate(token: str) -> None:
        chaos.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "chaosscenarios", "kill",
            {"metadata": {"annotations": {"chaos.coordinator.dev/run-now": token}}},
        )  # fmt: skip

    annotate("commit-a1")
    (first,) = wait_for(lambda: runs() or None, timeout=20, description="the run for commit-a1")
    assert first.startswith("kill-now-")
    chaos.wait_phase(first, "Passed")
    scenario = chaos.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", "kill")
    assert scenario["status"]["lastRunNowToken"] == "commit-a1"
    annotate("commit-a1")  # the same token again (a re-sync of the same commit): nothing new
    annotate("commit-b2")
    both = wait_for(lambda: r if len(r := runs()) == 2 else None, timeout=20, description="the run for commit-b2")
    assert first in both


def test_kubectl_apply_warns_of_a_fault_that_misses_the_scenario_type(chaos: Chaos, kubeconfig: Path) -> None:
    """The validating webhook's warnings reach the pipeline's log; the scenario is still created."""
    ns = chaos.namespace
    manifest = f"""\
apiVersion: {GROUP}/{VERSION}
kind: ChaosScenario
metadata: {{name: mislabelled, namespace: {ns}}}
spec:
  type: data_corruption
  target: {{kind: Pod, labelSelector: {{matchLabels: {{app: web}}}}}}
  steps: [{{name: kill, faults: [{{type: pod-kill}}]}}]
"""
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input=manifest, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "Warning: spec.steps[0].faults[0].type: pod-kill does not test data_corruption" in applied.stderr
    assert "chaosscenario.chaos.coordinator.dev/mislabelled created" in applied.stdout
    fitting = manifest.replace("name: mislabelled", "name: fitting").replace("data_corruption", "service_restart")
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input=fitting, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "Warning" not in applied.stderr
