"""Scenario parameters through the real API server: references accepted by the CRD, filled in from the TestRun,
and unknown or ill-typed values ending the run in Error with a condition naming them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import make_deployment, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos


def shrink_spec() -> dict[str, Any]:
    return {
        "type": "resource_exhaustion",
        "target": {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "{{ params.app }}"}}},
        "mode": "fixed",
        "value": "{{ params.count }}",
        "parameters": [
            {"name": "app", "default": "web", "description": "the workload's app label"},
            {"name": "count", "type": "integer", "default": 1},
            {"name": "replicas", "type": "integer", "description": "replicas while the step holds"},
            {"name": "hold", "type": "duration", "default": "1s"},
        ],
        "steps": [
            {
                "name": "shrink",
                "duration": "{{ params.hold }}",
                "faults": [{"type": "scale", "scale": {"replicas": "{{ params.replicas }}"}}],
            }
        ],
    }


def test_parameters_fill_targets_values_and_durations(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web")
    wait_ready(core, ns, "web", 3)
    chaos.scenario("shrink", shrink_spec())
    run = chaos.run("shrink", parameters={"replicas": 1, "hold": "3s"})

    chaos.wait_step(run, 0, "Injected")
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1, "scaled to the run's value"
    status = chaos.wait_phase(run, "Passed", timeout=60)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3, "restored"

    step = status["steps"][0]
    held = _seconds(step["endsAt"]) - _seconds(step["injectedAt"])
    assert held == pytest.approx(3.0, abs=0.01), "the duration parameter set the hold"
    snapshot = json.loads(status["scenarioSnapshot"])
    assert snapshot["value"] == 1
    assert snapshot["target"]["labelSelector"]["matchLabels"] == {"app": "web"}, "the default filled in"
    assert snapshot["steps"][0]["faults"][0]["scale"]["replicas"] == 1, "typed: an integer, not a string"


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"replicas": 1, "colour": "red"}, ["spec.parameters.colour", "declares no such parameter"]),
        ({"replicas": "many"}, ["spec.parameters.replicas", 'expected an integer, got "many"']),
        ({}, ["spec.parameters.replicas", "required"]),
        ({"replicas": -1}, ["spec.steps[0].faults[0].scale.replicas: ", "the value of parameter replicas"]),
    ],
    ids=["unknown", "ill-typed", "missing", "out-of-range"],
)
def test_bad_parameters_end_the_run_in_error_naming_them(
    chaos: Chaos, parameters: dict[str, Any], named: list[str]
) -> None:
    chaos.scenario("shrink", shrink_spec())
    run = chaos.run("shrink", parameters=parameters)
    status = chaos.wait_phase(run, "Error", timeout=30)
    assert status["reason"] == "InvalidParameters"
    for text in named:
        assert text in status["message"]
    completed = {c["type"]: c for c in status["conditions"]}["Completed"]
    assert completed["reason"] == "InvalidParameters"
    assert named[0] in completed["message"]
    assert not status.get("injections"), "nothing was touched"


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("value", "{{ params.count }}", True),
        ("value", "three", False),
        ("duration", "{{ params.seconds }}s", True),
        ("duration", "soon", False),
        ("replicas", "{{params.replicas}}", True),
        ("replicas", "2", False),
    ],
)
def test_the_crd_accepts_references_only_where_templatable(
    api_client: client.ApiClient, chaos_namespace: str, field: str, value: str, accepted: bool
) -> None:
    spec = shrink_spec()
    spec["mode"] = "fixed-percent"
    if field == "value":
        spec["value"] = value
    elif field == "duration":
        spec["steps"][0]["duration"] = value
    else:
        spec["steps"][0]["faults"][0]["scale"]["replicas"] = value
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosScenario", "metadata": {"name": "t"}, "spec": spec}
    custom = client.CustomObjectsApi(api_client)
    if accepted:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, chaos_namespace, "chaosscenarios", body)
        assert created["spec"]["mode"] == "fixed-percent"
    else:
        with pytest.raises(ApiException) as caught:
            custom.create_namespaced_custom_object(GROUP, VERSION, chaos_namespace, "chaosscenarios", body)
        assert caught.value.status == 422


def test_a_scheduled_run_gets_the_run_template_parameters(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web")
    wait_ready(core, ns, "web", 3)
    chaos.scenario(
        "nightly-shrink",
        {**shrink_spec(), "schedule": "@every 2s", "runTemplate": {"parameters": {"replicas": 2}}},
    )
    runs = wait_for(
        lambda: chaos.custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, "testruns", label_selector="chaos.coordinator.dev/scenario=nightly-shrink"
        )["items"],
        timeout=20,
        description="a scheduled run",
    )
    name = runs[0]["metadata"]["name"]
    assert runs[0]["spec"]["parameters"] == {"replicas": 2}
    chaos.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "chaosscenarios", "nightly-shrink", {"spec": {"suspend": True}}
    )
    status = chaos.wait_phase(name, "Passed", timeout=30)
    assert json.loads(status["scenarioSnapshot"])["steps"][0]["faults"][0]["scale"]["replicas"] == 2
