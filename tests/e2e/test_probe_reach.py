"""Probe reach (issue 18, item 3) against the real API server: what a probe may read and call, and how a refusal
ends the run: Error, reason ProbeRefused, the field named, nothing injected, no value leaked."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import make_deployment, own_operator, wait_ready
from support.chaos import GROUP, VERSION, Chaos
from support.http_target import HttpTarget

PROBE = "spec.steadyState.probes[0]"


def _scenario(probe: dict[str, Any]) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [{"name": "s", "duration": "1s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
        "steadyState": {"probes": [{"name": "reach", "type": probe.pop("type"), "mode": "before", **probe}]},
    }


def _refused(chaos: Chaos, run: str, timeout: float = 30) -> dict[str, Any]:
    status = chaos.wait_phase(run, "Error", timeout=timeout)
    assert status["reason"] == "ProbeRefused", status
    assert status.get("injections", []) == [], "nothing is injected once a probe is refused"
    return status


def test_k8s_probe_on_a_secret_is_refused_and_its_value_never_shown(chaos: Chaos) -> None:
    value = f"hunter2-{uuid.uuid4().hex}"
    chaos.core.create_namespaced_secret(
        chaos.namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"password": value}),
    )
    # A comparison that fails, so that a probe which did read the Secret would report what it saw.
    probe = {"type": "k8s", "k8s": {"apiVersion": "v1", "kind": "Secret", "name": "db", "fieldPath": "data.password"}}
    probe["k8s"] |= {"operator": "==", "value": "x"}
    chaos.scenario("s", _scenario(probe))
    run = chaos.run("s")
    status = _refused(chaos, run)
    assert f"{PROBE}.k8s.kind" in status["message"], status["message"]
    assert "Secret" in status["message"]
    whole = json.dumps(chaos.get_run(run))
    for shown in (value, base64.b64encode(value.encode()).decode()):
        assert shown not in whole, "the Secret's value is in the TestRun"


def test_k8s_probe_into_a_protected_namespace_is_refused(chaos: Chaos) -> None:
    # kube-root-ca.crt is in every namespace: a probe that read kube-system would pass its baseline.
    probe = {
        "type": "k8s",
        "k8s": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": "kube-system",
            "name": "kube-root-ca.crt",
            "fieldPath": "metadata.name",
            "operator": "==",
            "value": "kube-root-ca.crt",
        },
    }
    chaos.scenario("s", _scenario(probe))
    status = _refused(chaos, chaos.run("s"))
    assert f"{PROBE}.k8s.namespace" in status["message"], status["message"]
    assert "kube-system" in status["message"]
    assert "protected" in status["message"]


def test_http_probe_to_the_metadata_address_is_refused_at_once(chaos: Chaos) -> None:
    probe = {"type": "http", "timeout": "10s", "http": {"url": "http://169.254.169.254/latest/meta-data/"}}
    chaos.scenario("s", _scenario(probe))
    run = chaos.run("s")
    status = _refused(chaos, run)
    assert f"{PROBE}.http.url" in status["message"], status["message"]
    assert "169.254.0.0/16" in status["message"]
    assert "COORDINATOR_PROBE_DENY_CIDRS" in status["message"]
    created = chaos.get_run(run)["metadata"]["creationTimestamp"]
    ended = next(c for c in status["conditions"] if c["type"] == "Completed")["lastTransitionTime"]
    took = _seconds(ended) - _seconds(created)
    assert took < 5, f"refused after {took:.1f}s: it waited for the network instead of refusing"


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def denying_loopback(
    kubeconfig: Path, crds_installed: list[str], api_client: client.ApiClient, core: client.CoreV1Api
) -> Iterator[Chaos]:
    """An opted-in namespace served by an operator whose COORDINATOR_PROBE_DENY_CIDRS also denies loopback.

    Loopback is the one address family a test can serve a name from without touching /etc/hosts or DNS: the
    name ``localhost`` resolves to it through the ordinary resolver, as any name of a rebinding attacker would.
    """
    deny = {"COORDINATOR_PROBE_DENY_CIDRS": "127.0.0.0/8,::1/128,169.254.0.0/16"}
    with own_operator(kubeconfig, api_client, core, "reach", deny) as chaos:
        yield chaos


def test_a_name_resolving_to_a_denied_address_is_refused(denying_loopback: Chaos) -> None:
    chaos = denying_loopback
    with HttpTarget() as target:
        port = target.url.rsplit(":", 1)[1]
        probe = {"type": "http", "http": {"url": f"http://localhost:{port}/"}}
        chaos.scenario("s", _scenario(probe))
        status = _refused(chaos, chaos.run("s"))
        assert target.requests == 0, "the request was sent before the address was checked"
    assert f"{PROBE}.http.url" in status["message"], status["message"]
    assert "localhost" in status["message"]
    assert "127.0.0.1" in status["message"] or "::1" in status["message"], status["message"]


def test_a_refusal_while_faults_hold_ends_the_run_and_reverts_them(
    denying_loopback: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    """A name is only known to be denied once it is resolved: here at the first sample while the step holds."""
    chaos = denying_loopback
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    with HttpTarget() as target:
        port = target.url.rsplit(":", 1)[1]
        spec = _scenario({"type": "http", "interval": "200ms", "http": {"url": f"http://localhost:{port}/"}})
        spec["steadyState"]["probes"][0]["mode"] = "during"
        spec["steps"][0]["duration"] = "60s"
        chaos.scenario("s", spec)
        run = chaos.run("s")
        status = chaos.wait_phase(run, "Error", timeout=30)
        assert target.requests == 0
    assert status["reason"] == "ProbeRefused", status
    assert f"{PROBE}.http.url" in status["message"], status["message"]
    (injection,) = status["injections"]
    assert injection["state"] == "Reverted", injection
    assert apps.read_namespaced_deployment("web", chaos.namespace).spec.replicas == 3


def _scenario_body(name: str, probe: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosScenario", "metadata": {"name": name}, "spec": probe}


@pytest.mark.parametrize(
    ("http", "field", "fragment"),
    [
        pytest.param(
            {"url": "http://127.0.0.1/", "headers": {"X-Token": "a\r\nX-Injected: 1"}},
            f"{PROBE}.http.headers",
            "should match",
            id="crlf-in-a-header-value",
        ),
        pytest.param(
            {"url": "http://127.0.0.1/", "headers": {"X-Token": "a\x00b"}},
            f"{PROBE}.http.headers",
            "should match",
            id="nul-in-a-header-value",
        ),
        pytest.param(
            {"url": "http://127.0.0.1/", "headers": {"X-Token\r\nX-Injected": "1"}},
            f"{PROBE}.http.headers",
            "header names",
            id="crlf-in-a-header-name",
        ),
        pytest.param(
            {"url": "http://127.0.0.1/", "headers": {"X Token": "1"}},
            f"{PROBE}.http.headers",
            "header names",
            id="space-in-a-header-name",
        ),
        # ("http://[::1:bad]/" is well formed: b, a and d are hex digits.)
        pytest.param({"url": "http://[::1:zz]/"}, f"{PROBE}.http.url", "not an http(s) URL", id="bad-ipv6-literal"),
        pytest.param(
            {"url": "http://[1:2:3:4:5:6:7:8:9]/"}, f"{PROBE}.http.url", "not an http(s) URL", id="ipv6-too-long"
        ),
        pytest.param({"url": "http://exa mple.com/"}, f"{PROBE}.http.url", "not an http(s) URL", id="space-in-host"),
        pytest.param({"url": "http://host:99999/"}, f"{PROBE}.http.url", "not an http(s) URL", id="port-too-large"),
    ],
)
def test_bad_headers_and_urls_are_refused_at_admission(
    chaos: Chaos, http: dict[str, Any], field: str, fragment: str
) -> None:
    spec = _scenario({"type": "http", "http": http})
    with pytest.raises(ApiException) as caught:
        chaos.custom.create_namespaced_custom_object(
            GROUP, VERSION, chaos.namespace, "chaosscenarios", _scenario_body("bad", spec)
        )
    assert caught.value.status == 422, caught.value.body
    message = json.loads(caught.value.body)["message"]
    assert f"{field}" in message, message
    assert fragment in message, message
