"""A ChaosScenario's spec.lifecycle against the real API server and operator: draft runs only dry, archived takes
no new runs and stops its schedule, deprecated runs with a Warning Event, and `kubectl get` shows it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from test_scheduling import patch_scenario, runs_of, scenario_status, scheduled, stays

from conftest import make_deployment, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos, pod_kill_spec


@pytest.fixture
def web(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> Chaos:
    make_deployment(apps, chaos.namespace, "web")
    wait_ready(core, chaos.namespace, "web", 3)
    return chaos


def _warnings(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return {e.reason: e.message for e in events if e.type == "Warning"}


def test_a_draft_runs_only_dry(web: Chaos) -> None:
    web.scenario("sketch", {**pod_kill_spec({"app": "web"}), "lifecycle": "draft"})
    real = web.run("sketch")
    status = web.wait_phase(real, "Error")
    assert status["reason"] == "ScenarioDraft"
    assert status["message"] == (
        f"ChaosScenario {web.namespace}/sketch is a draft (spec.lifecycle: draft): it runs only with spec.dryRun: true"
    )
    assert status.get("injectedAt") is None
    dry = web.run("sketch", dryRun=True)
    assert web.wait_phase(dry, "Passed")["targets"] >= 1


def test_an_archived_scenario_refuses_runs_and_stops_its_schedule(web: Chaos) -> None:
    web.scenario("retired", scheduled("@every 2s"))
    wait_for(lambda: runs_of(web, "retired"), timeout=20, description="a scheduled run before archiving")
    patch_scenario(web, "retired", {"lifecycle": "archived"})
    wait_for(
        lambda: "nextScheduleTime" not in scenario_status(web, "retired"),
        timeout=10,
        description="the schedule stopped (no next schedule time)",
    )
    before = set(runs_of(web, "retired"))
    stays(lambda: set(runs_of(web, "retired")) == before, 5, "no scheduled run of an archived scenario")
    with pytest.raises(client.ApiException) as refused:
        web.run("retired")
    assert refused.value.status == 403
    assert f"ChaosScenario {web.namespace}/retired is archived (spec.lifecycle: archived)" in str(refused.value.body)


def test_a_deprecated_scenario_runs_with_a_warning(web: Chaos, kubeconfig: Path) -> None:
    manifest = f"""\
apiVersion: {GROUP}/{VERSION}
kind: ChaosScenario
metadata: {{name: old-way, namespace: {web.namespace}}}
spec:
  lifecycle: deprecated
  type: service_restart
  target: {{kind: Pod, labelSelector: {{matchLabels: {{app: web}}}}}}
  steps: [{{name: kill, duration: 1s, faults: [{{type: pod-kill}}]}}]
"""
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input=manifest, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert f"Warning: spec.lifecycle: ChaosScenario {web.namespace}/old-way is deprecated" in applied.stderr
    run = web.run("old-way")
    web.wait_phase(run, "Passed")
    warned = wait_for(
        lambda: _warnings(web.core, web.namespace, run).get("ScenarioDeprecated"),
        timeout=10,
        description="the run's ScenarioDeprecated Warning Event",
    )
    assert "plan to replace it" in warned
    shown = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "chaosscenarios", "-n", web.namespace, "old-way"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    header, row = shown.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "TYPE", "LIFECYCLE"]
    assert row.split()[:3] == ["old-way", "service_restart", "deprecated"]
