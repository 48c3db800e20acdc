"""Hostile specs that admission cannot refuse (the bad value comes from a parameter, or only the API server's list
can judge it) end the run Error at its start, naming the field in bracket notation, with nothing applied and no
traceback in the operator's log. The values the CRDs can refuse are in test_crd_schema.py."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.residue import residue

WEB = {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "web"}}}


def _spec(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"target": WEB, "mode": "all", "steps": steps, "parameters": parameters or [], **extra}


def _scale(**scale: Any) -> list[dict[str, Any]]:
    return [{"name": "shrink", "duration": "2s", "faults": [{"type": "scale", "scale": scale}]}]


CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    # name: (scenario spec, run parameters, reason, message fragment)
    "reference-left-in-a-duration": (
        {
            **_spec(
                [
                    {
                        "name": "hold",
                        "duration": "{{ params.d }}",
                        "faults": [{"type": "scale", "scale": {"replicas": 1}}],
                    }
                ]
            ),
            "parameters": [{"name": "d", "type": "string", "default": "5s"}],
        },
        {"d": "{{ params.d }}"},
        "InvalidParameters",
        "spec.parameters.d: a value cannot hold a {{ }} reference",
    ),
    "step-duration-from-a-parameter-over-the-limit": (
        {
            **_spec(
                [
                    {
                        "name": "hold",
                        "duration": "{{ params.d }}",
                        "faults": [{"type": "scale", "scale": {"replicas": 1}}],
                    }
                ]
            ),
            "parameters": [{"name": "d", "type": "duration", "default": "5s"}],
        },
        {"d": "99999999999h"},
        "InvalidParameters",
        "spec.steps[0].duration: 99999999999h is out of range: must be at most 24h",
    ),
    "templated-percent-out-of-range": (
        _spec(_scale(percent="{{ params.p }}"), [{"name": "p", "type": "integer", "default": 50}]),
        {"p": 5000},
        "InvalidParameters",
        "spec.steps[0].faults[0].scale.percent: ",
    ),
    "selector-value-from-a-parameter": (
        {
            **_spec(_scale(replicas=1), [{"name": "app", "type": "string", "default": "web"}]),
            "target": {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "{{ params.app }}"}}},
        },
        {"app": "not a label value!"},
        "Selection",
        "spec.target.labelSelector: invalid label value 'not a label value!'",
    ),
    "field-selector-the-api-server-refuses": (
        {**_spec(_scale(replicas=1)), "target": {**WEB, "fieldSelector": "spec.replicas=3"}},
        {},
        "Selection",
        "spec.target.fieldSelector: the API server refused it",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_spec_ends_error_at_start_naming_the_field(
    case: str,
    chaos: Chaos,
    workload: str,
    apps: client.AppsV1Api,
    kubeconfig: Any,
    running_operator: OperatorProcess,
) -> None:
    spec, parameters, reason, fragment = CASES[case]
    logged_before = running_operator.log_path.stat().st_size
    chaos.scenario("hostile", spec)
    run = chaos.run("hostile", parameters=parameters) if parameters else chaos.run("hostile")
    status = chaos.wait_phase(run, "Error", timeout=30)
    assert status["reason"] == reason, status
    assert fragment in status["message"], status["message"]
    assert not status.get("injections"), "nothing was planned, so nothing was applied"
    assert apps.read_namespaced_deployment("web", workload).spec.replicas == 3
    assert residue(kubeconfig, workload) == []
    logged = wait_for(
        lambda: running_operator.log_path.read_bytes()[logged_before:] or None, timeout=10, description="log lines"
    )
    assert b"Traceback" not in logged, logged.decode(errors="replace")[-3000:]
