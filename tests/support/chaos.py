"""Creating and observing ChaosScenarios and TestRuns in tests."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from coordinator.testing.waiting import wait_for

GROUP = "chaos.coordinator.dev"
VERSION = "v1alpha1"
TERMINAL = {"Passed", "Failed", "Error", "Cancelled", "TimedOut"}


class Chaos:
    """Thin helpers over the custom objects API for one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def scenario(self, name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosScenario", "metadata": {"name": name}, "spec": spec}
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace or self.namespace, "chaosscenarios", body
        )
        return result

    def run(self, scenario: str, name: str | None = None, **spec: Any) -> str:
        name = name or f"run-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TestRun",
            "metadata": {"name": name},
            "spec": {"scenarioRef": {"name": scenario}, **spec},
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "testruns", body)
        return name

    def get_run(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "testruns", name
        )
        return result

    def run_exists(self, name: str) -> bool:
        """Whether the TestRun is still stored (False once it is gone); other API errors are raised."""
        try:
            self.get_run(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get_run(name).get("status") or {})

    def wait_phase(self, name: str, phases: set[str] | str, timeout: float = 60) -> dict[str, Any]:
        wanted = {phases} if isinstance(phases, str) else phases

        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            if status.get("phase") in TERMINAL and status.get("phase") not in wanted:
                raise AssertionError(f"TestRun {name} ended {status.get('phase')}: {status.get('message')}")
            return status if status.get("phase") in wanted else None

        return wait_for(reached, timeout=timeout, description=f"TestRun {name} phase in {sorted(wanted)}")

    def wait_step(self, name: str, index: int, outcome: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            steps = status.get("steps") or []
            if status.get("phase") in TERMINAL and not (len(steps) > index and steps[index].get("outcome") == outcome):
                raise AssertionError(f"TestRun {name} ended {status.get('phase')}: {status.get('message')}")
            return status if len(steps) > index and steps[index].get("outcome") == outcome else None

        return wait_for(reached, timeout=timeout, description=f"step {index} of {name} {outcome}")

    def events(self, name: str, namespace: str | None = None) -> list[str]:
        events = self.core.list_namespaced_event(
            namespace or self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [e.reason for e in events]

    def event_correlations(self, name: str, namespace: str | None = None) -> dict[str, set[str | None]]:
        """The correlation IDs (annotation chaos.coordinator.dev/correlation-id) of the operator's Events on ``name``
        (not the scheduler's or the kubelet's), by reason."""
        events = self.core.list_namespaced_event(
            namespace or self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        found: dict[str, set[str | None]] = {}
        for event in events:
            if event.reporting_component != "test-coordinator":
                continue
            annotations = event.metadata.annotations or {}
            found.setdefault(event.reason, set()).add(annotations.get("chaos.coordinator.dev/correlation-id"))
        return found


def pod_kill_spec(
    labels: dict[str, str], mode: str = "one", value: int | None = None, duration: str = "1s"
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "service_restart",
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": labels}},
        "mode": mode,
        "steps": [{"name": "kill", "duration": duration, "faults": [{"type": "pod-kill"}]}],
    }
    if value is not None:
        spec["value"] = value
    return spec


def ready_probe(name: str = "web-ready", mode: str = "edge", **extra: Any) -> dict[str, Any]:
    """The steady state most tests use: every replica of Deployment ``web`` Ready."""
    return {
        "name": name,
        "type": "k8s",
        "mode": mode,
        "k8s": {
            "kind": "Deployment",
            "name": "web",
            "fieldPath": "status.readyReplicas",
            "valueFromPath": "spec.replicas",
        },
        **extra,
    }
