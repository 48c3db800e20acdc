"""grpc probes (issue 23, item 5) run by the operator against a real grpcio health server on 127.0.0.1: SERVING
passes with its latency, NOT_SERVING and an unreachable server fail with a clear message, TLS with a CA made by
the test, a denied address is refused and a malformed one never admitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import make_deployment, own_operator, wait_ready
from support.chaos import GROUP, VERSION, Chaos
from support.grpc_target import NOT_SERVING, SERVING, GrpcTarget

PROBE = "spec.steadyState.probes[0]"


def _scenario(probe: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [{"name": "s", "duration": "1s", "faults": [{"type": "scale", "scale": {"replicas": 2}}]}],
        "steadyState": {"probes": [{"name": "cart", "type": "grpc", **probe}]},
        **extra,
    }


@pytest.fixture
def web(chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)


@pytest.fixture
def target() -> Iterator[GrpcTarget]:
    with GrpcTarget() as server:
        yield server


@pytest.mark.usefixtures("web")
def test_a_serving_server_passes_with_its_latency(chaos: Chaos, target: GrpcTarget) -> None:
    target.set("shop.Cart", SERVING)
    probe = {"mode": "continuous", "interval": "200ms", "grpc": {"address": target.address, "service": "shop.Cart"}}
    latency = {"name": "fast", "type": "latency", "probe": "cart", "expected": 2000, "percentile": 95}
    chaos.scenario("s", _scenario(probe, assertions=[latency]))
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Passed", timeout=30)
    (result,) = status["probes"]
    assert result["type"] == "grpc"
    assert result["samples"] >= 3, result
    assert result["passed"] == result["samples"]
    assert result["lastValue"] == "SERVING"
    assert 0 < result["latencyP50Ms"] <= result["latencyP95Ms"] < 2000, result
    (assertion,) = status["assertions"]
    assert assertion["passed"] is True, assertion
    uid = chaos.get_run(run)["metadata"]["uid"]
    assert {m.get("x-correlation-id") for m in target.health.metadata} == {uid}


@pytest.mark.usefixtures("web")
def test_not_serving_fails_the_baseline_saying_so(chaos: Chaos, apps: client.AppsV1Api, target: GrpcTarget) -> None:
    target.set("", NOT_SERVING)
    chaos.scenario("s", _scenario({"mode": "before", "grpc": {"address": target.address}}))
    status = chaos.wait_phase(chaos.run("s"), "Failed", timeout=30)
    assert status["reason"] == "BaselineFailed", status
    assert "cart" in status["message"]
    assert "the server is NOT_SERVING, want SERVING" in status["message"], status["message"]
    assert status.get("injections", []) == []
    assert apps.read_namespaced_deployment("web", chaos.namespace).spec.replicas == 3


@pytest.mark.usefixtures("web")
def test_an_unreachable_server_fails_the_baseline_saying_so(chaos: Chaos) -> None:
    with GrpcTarget() as gone:
        address = gone.address
    chaos.scenario("s", _scenario({"mode": "before", "timeout": "2s", "grpc": {"address": address}}))
    status = chaos.wait_phase(chaos.run("s"), "Failed", timeout=30)
    assert status["reason"] == "BaselineFailed", status
    assert f"{address} unreachable" in status["message"], status["message"]
    assert status.get("injections", []) == []


@pytest.mark.usefixtures("web")
def test_tls_with_the_servers_ca_passes_and_without_it_fails(chaos: Chaos) -> None:
    with GrpcTarget(tls=True) as server:
        trusted = {"mode": "before", "grpc": {"address": server.address, "tls": {"caCert": server.ca_cert}}}
        chaos.scenario("trusted", _scenario(trusted))
        passed = chaos.wait_phase(chaos.run("trusted"), "Passed", timeout=30)
        assert passed["probes"][0]["lastValue"] == "SERVING"
        assert server.health.checks >= 1
        checks = server.health.checks
        # The bundled public roots do not know the test's CA: the handshake fails and no check reaches the server.
        public_roots = {"mode": "before", "timeout": "2s", "grpc": {"address": server.address, "tls": {}}}
        chaos.scenario("untrusted", _scenario(public_roots))
        failed = chaos.wait_phase(chaos.run("untrusted"), "Failed", timeout=30)
        assert failed["reason"] == "BaselineFailed", failed
        assert "handshake failed" in failed["message"].lower(), failed["message"]
        assert server.health.checks == checks


def test_a_denied_address_is_refused_at_once(chaos: Chaos) -> None:
    chaos.scenario("s", _scenario({"mode": "before", "grpc": {"address": "169.254.169.254:50051"}}))
    status = chaos.wait_phase(chaos.run("s"), "Error", timeout=30)
    assert status["reason"] == "ProbeRefused", status
    assert f"{PROBE}.grpc.address: 169.254.169.254 is in the denied range 169.254.0.0/16" in status["message"]
    assert status.get("injections", []) == []


def test_a_name_resolving_to_a_denied_address_is_refused_before_anything_is_sent(
    kubeconfig: Path, crds_installed: list[str], api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    """An operator whose COORDINATOR_PROBE_DENY_CIDRS denies loopback: ``localhost`` resolves to it through the
    ordinary resolver, as a rebinding attacker's name would resolve to the metadata address."""
    deny = {"COORDINATOR_PROBE_DENY_CIDRS": "127.0.0.0/8,::1/128,169.254.0.0/16"}
    with own_operator(kubeconfig, api_client, core, "grpc-reach", deny) as chaos, GrpcTarget() as server:
        chaos.scenario("s", _scenario({"mode": "before", "grpc": {"address": f"localhost:{server.port}"}}))
        status = chaos.wait_phase(chaos.run("s"), "Error", timeout=30)
        assert server.health.checks == 0, "the check was sent before the address was checked"
    assert status["reason"] == "ProbeRefused", status
    assert f"{PROBE}.grpc.address: localhost resolves to" in status["message"], status["message"]
    assert status.get("injections", []) == []


@pytest.mark.parametrize(
    ("grpc", "field", "fragment"),
    [
        pytest.param({"address": "cart"}, f"{PROBE}.grpc.address", "not host:port", id="no-port"),
        pytest.param({"address": "::1:50051"}, f"{PROBE}.grpc.address", "not host:port", id="bare-ipv6"),
        pytest.param(
            {"address": "cart:1", "tls": {"enabled": False, "serverName": "cart"}},
            f"{PROBE}.grpc.tls",
            "caCert and serverName need enabled: true",
            id="tls-options-without-tls",
        ),
    ],
)
def test_malformed_grpc_options_are_refused_at_admission(
    chaos: Chaos, grpc: dict[str, Any], field: str, fragment: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosScenario",
        "metadata": {"name": "bad"},
        "spec": _scenario({"mode": "before", "grpc": grpc}),
    }
    with pytest.raises(ApiException) as caught:
        chaos.custom.create_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "chaosscenarios", body)
    assert caught.value.status == 422, caught.value.body
    message = json.loads(caught.value.body)["message"]
    assert field in message, message
    assert fragment in message, message
