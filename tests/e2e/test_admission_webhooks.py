"""The admission webhooks on the real API server: the operator serves and registers them itself, records the
requester on every TestRun and ChaosScenario so that it cannot be forged, keeps its certificate across restarts,
and fails closed while it is down."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from coordinator.api.models import REQUESTED_BY_ANNOTATION, Requester
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos, pod_kill_spec

pytestmark = pytest.mark.e2e

CONFIGURATION = "test-coordinator.chaos.coordinator.dev"
ADMIN = Requester(username="kubernetes-admin", groups=["system:masters", "system:authenticated"])


def requester_of(obj: dict[str, Any]) -> Requester:
    return Requester.from_annotation(obj["metadata"]["annotations"][REQUESTED_BY_ANNOTATION])


def forged() -> str:
    return Requester(username="mallory", groups=["system:masters"]).to_annotation()


def test_the_operator_registers_its_webhooks_with_its_own_ca(
    running_operator: OperatorProcess, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    admission = client.AdmissionregistrationV1Api(api_client)
    secret = core.read_namespaced_secret("test-coordinator-webhook-tls", "test-coordinator")
    ca = base64.b64decode(secret.data["ca.crt"])
    mutating = admission.read_mutating_webhook_configuration(CONFIGURATION)
    validating = admission.read_validating_webhook_configuration(CONFIGURATION)
    for hook in mutating.webhooks + validating.webhooks:
        assert hook.failure_policy == "Fail"
        assert hook.client_config.url.startswith(f"https://127.0.0.1:{running_operator.webhook_port}/")
        assert base64.b64decode(hook.client_config.ca_bundle).startswith(ca)


def test_the_requester_is_recorded_and_cannot_be_forged(chaos: Chaos, api_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api_client)
    group, version = "chaos.coordinator.dev", "v1alpha1"
    chaos.scenario("kill", pod_kill_spec({"app": "none"}))
    scenario = custom.get_namespaced_custom_object(group, version, chaos.namespace, "chaosscenarios", "kill")
    assert requester_of(scenario) == ADMIN

    body = {
        "apiVersion": f"{group}/{version}",
        "kind": "TestRun",
        "metadata": {"name": "forged", "annotations": {REQUESTED_BY_ANNOTATION: forged()}},
        "spec": {"scenarioRef": {"name": "kill"}, "dryRun": True},
    }
    created = custom.create_namespaced_custom_object(group, version, chaos.namespace, "testruns", body)
    assert requester_of(created) == ADMIN, "a create records the request's subject, not what it carried"

    for value in (forged(), None):  # changed, then removed: both restored
        patched = custom.patch_namespaced_custom_object(
            group,
            version,
            chaos.namespace,
            "testruns",
            "forged",
            {"metadata": {"annotations": {REQUESTED_BY_ANNOTATION: value}}},
        )
        assert requester_of(patched) == ADMIN

    done = chaos.wait_phase("forged", {"Passed", "Failed", "Error"})
    assert Requester.model_validate(done["requestedBy"]) == ADMIN


def test_restarting_keeps_the_certificate_and_the_ca_bundle(
    running_operator: OperatorProcess, chaos: Chaos, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    admission = client.AdmissionregistrationV1Api(api_client)

    def state() -> tuple[dict[str, str], str]:
        secret = core.read_namespaced_secret("test-coordinator-webhook-tls", "test-coordinator")
        bundle = admission.read_mutating_webhook_configuration(CONFIGURATION).webhooks[0].client_config.ca_bundle
        return dict(secret.data), bundle

    before = state()
    running_operator.stop()
    running_operator.start()
    assert state() == before, "the same certificate and caBundle after a restart"
    chaos.scenario("kill", pod_kill_spec({"app": "none"}))
    run = chaos.run("kill", dryRun=True)
    assert requester_of(chaos.get_run(run)) == ADMIN, "the restarted operator answers the webhook"


def test_while_the_operator_is_down_creating_is_refused_and_deleting_is_not(
    running_operator: OperatorProcess, chaos: Chaos
) -> None:
    chaos.scenario("kill", pod_kill_spec({"app": "none"}))
    kept = chaos.run("kill", dryRun=True)
    chaos.wait_phase(kept, {"Passed", "Failed", "Error"})
    running_operator.kill()
    try:
        with pytest.raises(ApiException) as refused:
            chaos.run("kill", dryRun=True)
        assert refused.value.status == 500
        assert "failed calling webhook" in json.loads(refused.value.body)["message"]
        chaos.custom.delete_namespaced_custom_object(
            "chaos.coordinator.dev", "v1alpha1", chaos.namespace, "testruns", kept
        )
        wait_for(lambda: not chaos.run_exists(kept), timeout=30, description=f"TestRun {kept} deleted")
    finally:
        running_operator.start()
