"""Notifications (issue 24, item 4) from the real operator to a real receiver (an aiohttp server on 127.0.0.1): the
documented JSON, the Slack shape, retries with backoff, a receiver that is down, a URL from a Secret (and a
requester who may not read it, refused at admission), and a denied address."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from conftest import OPT_IN
from coordinator.api.models import REQUESTED_BY_ANNOTATION, Requester
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos
from support.identities import user_kubeconfig
from support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

# A baseline that cannot pass (the Deployment does not exist): the run ends Failed at once, nothing injected.
MISSING = {
    "name": "db-ready",
    "type": "k8s",
    "mode": "before",
    "k8s": {"kind": "Deployment", "name": "db", "condition": "Available"},
}


def failing(*notifications: dict[str, Any]) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "steps": [{"name": "s", "duration": "1s", "faults": [{"type": "scale", "scale": {"replicas": 0}}]}],
        "steadyState": {"probes": [MISSING]},
        "notifications": list(notifications),
    }


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def records(chaos: Chaos, run: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["name"], r["event"]): r for r in chaos.status(run).get("notifications") or []}


def wait_record(chaos: Chaos, run: str, name: str, event: str, state: str, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        record = records(chaos, run).get((name, event))
        return record if record is not None and record["state"] == state else None

    return wait_for(reached, timeout=timeout, description=f"notification {name} {event} {state} of {run}")


def test_a_failing_run_posts_started_and_failed_with_the_documented_json(
    chaos: Chaos, receiver: WebhookReceiver, running_operator: OperatorProcess
) -> None:
    chaos.scenario("s", failing({"name": "team", "url": receiver.url("team")}))
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Failed")
    wait_record(chaos, run, "team", "failed", "Delivered")
    uid = chaos.get_run(run)["metadata"]["uid"]
    bodies = {r.body["event"]: r for r in receiver.on("team")}
    assert set(bodies) == {"started", "failed"}
    failed = bodies["failed"]
    assert failed.headers["X-Correlation-ID"] == uid
    assert failed.headers["X-Coordinator-Event"] == "failed"
    body = failed.body
    assert body["version"] == "v1"
    assert body["run"] == {"namespace": chaos.namespace, "name": run, "uid": uid}
    assert body["correlationId"] == uid
    assert (body["scenario"], body["workflow"]) == (f"{chaos.namespace}/s", None)
    assert (body["phase"], body["reason"], body["message"]) == ("Failed", status["reason"], status["message"])
    assert body["startedAt"] == status["startedAt"]
    assert body["completedAt"] == status["completedAt"]
    assert body["verdict"]["assertions"] == {"total": 0, "passed": 0, "failed": []}
    assert bodies["started"].body["phase"] == "Running"
    record = records(chaos, run)[("team", "failed")]
    assert (record["attempts"], record.get("lastError")) == (1, None)
    metrics = wait_for(
        lambda: _metrics(running_operator), description="coordinator_notifications_total on /metrics", timeout=10
    )
    assert "coordinator_notifications_total{" in metrics


def _metrics(operator: OperatorProcess) -> str | None:
    with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=5) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("coordinator_notifications_total{")]
    return "\n".join(lines) if any('result="delivered"' in line for line in lines) else None


def test_the_slack_format_is_an_incoming_webhook_message(chaos: Chaos, receiver: WebhookReceiver) -> None:
    chaos.scenario("s", failing({"name": "chat", "url": receiver.url("chat"), "format": "slack", "events": ["failed"]}))
    run = chaos.run("s")
    chaos.wait_phase(run, "Failed")
    wait_record(chaos, run, "chat", "failed", "Delivered")
    (message,) = receiver.on("chat")
    assert set(message.body) == {"text", "blocks"}
    assert run in message.body["text"]
    assert [b["type"] for b in message.body["blocks"]] == ["section", "section", "context"]
    assert ("chat", "started") not in records(chaos, run), "only the events asked for"


def test_two_server_errors_then_success_are_three_tries_and_delivered(chaos: Chaos, receiver: WebhookReceiver) -> None:
    receiver.answers["flaky"] = [500, 500, 200]
    chaos.scenario("s", failing({"name": "flaky", "url": receiver.url("flaky"), "events": ["failed"]}))
    run = chaos.run("s")
    chaos.wait_phase(run, "Failed")
    record = wait_record(chaos, run, "flaky", "failed", "Delivered", timeout=40)
    assert record["attempts"] == 3
    assert len(receiver.on("flaky")) == 3


def test_a_receiver_that_is_down_never_changes_the_run(chaos: Chaos, receiver: WebhookReceiver) -> None:
    down = f"http://127.0.0.1:{_closed_port()}/hook"
    chaos.scenario("s", failing({"name": "down", "url": down, "events": ["started", "failed"], "timeout": 2}))
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Failed")
    assert status["reason"] == "BaselineFailed", "the verdict is the run's, whatever the receiver does"
    record = wait_record(chaos, run, "down", "failed", "Failed", timeout=90)
    assert record["attempts"] == 5
    assert "Connect" in record["lastError"]
    final = chaos.status(run)
    assert (final["phase"], final["reason"], final["completedAt"]) == (
        "Failed",
        "BaselineFailed",
        status["completedAt"],
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_denied_address_is_never_called(chaos: Chaos) -> None:
    chaos.scenario("s", failing({"name": "meta", "url": "http://169.254.169.254/latest/meta-data/"}))
    run = chaos.run("s")
    chaos.wait_phase(run, "Failed")
    record = wait_record(chaos, run, "meta", "failed", "Failed")
    assert record["attempts"] == 0
    assert "169.254.0.0/16" in record["lastError"]
    assert "COORDINATOR_PROBE_DENY_CIDRS" in record["lastError"]


def _secret(core: client.CoreV1Api, namespace: str, url: str) -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="hooks"),
            data={"team": base64.b64encode(url.encode()).decode()},
        ),
    )


def test_a_url_from_a_secret_is_read_and_called(
    chaos: Chaos, core: client.CoreV1Api, receiver: WebhookReceiver
) -> None:
    _secret(core, chaos.namespace, receiver.url("secret"))
    hook = {"name": "team", "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "team"}}, "events": ["failed"]}
    chaos.scenario("s", failing(hook))
    run = chaos.run("s")
    chaos.wait_phase(run, "Failed")
    wait_record(chaos, run, "team", "failed", "Delivered")
    (message,) = receiver.on("secret")
    assert message.body["event"] == "failed"
    assert receiver.url("secret") not in json.dumps(chaos.get_run(run)), "the secret URL never shows in the run"


@pytest.fixture
def carol_namespace(make_namespace: Callable[[dict[str, str]], str], api_client: client.ApiClient) -> str:
    """carol may create scenarios and runs (and edit deployments) here, but may not read Secrets."""
    namespace = make_namespace(OPT_IN)
    rbac = client.RbacAuthorizationV1Api(api_client)
    edit = ["get", "list", "watch", "create", "update", "patch", "delete"]
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="carol"),
            rules=[
                client.V1PolicyRule(api_groups=["apps"], resources=["deployments", "deployments/scale"], verbs=edit),
                client.V1PolicyRule(api_groups=[GROUP], resources=["chaosscenarios", "testruns"], verbs=edit),
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="carol"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="carol"),
            subjects=[client.RbacV1Subject(kind="User", name="carol", api_group="rbac.authorization.k8s.io")],
        ),
    )
    return namespace


def test_a_requester_who_may_not_get_the_secret_is_refused_at_admission(
    carol_namespace: str,
    core: client.CoreV1Api,
    kubeconfig: Path,
    tmp_path: Path,
    receiver: WebhookReceiver,
    running_operator: OperatorProcess,
) -> None:
    _secret(core, carol_namespace, receiver.url("carol"))
    hook = {"name": "team", "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "team"}}}
    carol = Requester(username="carol", groups=["system:authenticated"])
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosScenario",
        "metadata": {
            "name": f"scn-{uuid.uuid4().hex[:6]}",
            "annotations": {REQUESTED_BY_ANNOTATION: carol.to_annotation()},
        },
        "spec": failing(hook),
    }
    carol_config = str(user_kubeconfig(kubeconfig, "carol", tmp_path))
    with config.new_client_from_config(config_file=carol_config) as api, pytest.raises(ApiException) as raised:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, carol_namespace, "chaosscenarios", body
        )
    assert raised.value.status == 403, raised.value.body
    message = str(json.loads(raised.value.body)["message"])
    assert 'carol cannot get resource "secrets" named "hooks"' in message, message
    assert "spec.notifications[0].urlFrom" in message, message
    assert receiver.received == []


def test_a_workflow_run_notifies_the_workflows_webhooks(chaos: Chaos, receiver: WebhookReceiver) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosWorkflow",
        "metadata": {"name": "flow"},
        "spec": {
            "nodes": [{"name": "wait", "suspend": {"duration": "1s"}}],
            "notifications": [{"name": "flow", "url": receiver.url("flow"), "events": ["started", "passed"]}],
        },
    }
    chaos.custom.create_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "chaosworkflows", body)
    run = f"flow-{uuid.uuid4().hex[:6]}"
    chaos.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        chaos.namespace,
        "testruns",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TestRun",
            "metadata": {"name": run},
            "spec": {"workflowRef": {"name": "flow"}},
        },
    )
    chaos.wait_phase(run, "Passed")
    wait_record(chaos, run, "flow", "passed", "Delivered")
    wait_record(chaos, run, "flow", "started", "Delivered")
    events = {r.body["event"]: r.body for r in receiver.on("flow")}
    assert set(events) == {"started", "passed"}
    assert (events["passed"]["workflow"], events["passed"]["scenario"]) == (f"{chaos.namespace}/flow", None)
    assert events["passed"]["phase"] == "Passed"
