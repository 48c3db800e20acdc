"""Steady-state probes against real components: the API server, an HTTP server and Prometheus on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from conftest import make_deployment, wait_ready
from support.chaos import Chaos, ready_probe
from support.http_target import HttpTarget
from support.prometheus import PrometheusServer

READY_DELAY = 2.0  # seconds kwok waits before a new pod is Ready (pod annotation, see hack/cluster/boot.py)


@pytest.fixture
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as server:
        yield server


def _scenario(
    probes: list[dict[str, Any]], fault: dict[str, Any] | None = None, duration: str = "3s", **extra: Any
) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [
            {"name": "s", "duration": duration, "faults": [fault or {"type": "scale", "scale": {"replicas": 2}}]}
        ],
        "steadyState": {"probes": probes},
        **extra,
    }


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_failing_baseline_never_injects(chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    missing = {
        "name": "db-ready",
        "type": "k8s",
        "mode": "before",
        "k8s": {"kind": "Deployment", "name": "db", "condition": "Available"},
    }
    chaos.scenario("s", _scenario([missing]))
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Failed")
    assert status["reason"] == "BaselineFailed"
    assert "db-ready" in status["message"]
    assert "not found" in status["message"], "a missing resource is a clear per-probe error"
    assert status.get("injections", []) == []
    assert apps.read_namespaced_deployment("web", chaos.namespace).spec.replicas == 3


def test_stop_on_failure_aborts_within_one_interval(
    chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api, target: HttpTarget
) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    probe = {
        "name": "api",
        "type": "http",
        "mode": "during",
        "interval": "500ms",
        "stopOnFailure": True,
        "http": {"url": f"{target.url}/health"},
    }
    chaos.scenario("s", _scenario([probe], duration="60s"))
    run = chaos.run("s")
    chaos.wait_step(run, 0, "Injected")
    assert apps.read_namespaced_deployment("web", chaos.namespace).spec.replicas == 2
    time.sleep(1.2)  # let the probe pass a couple of times first (the test asserts on its counts below)
    target.set_mode("fail")
    status = chaos.wait_phase(run, "Failed", timeout=20)
    assert target.failing_since is not None
    reverted = min(_ts(i["revertedAt"]) for i in status["injections"])
    # One probe interval (0.5 s) plus the revert's own API calls.
    assert reverted - target.failing_since <= 0.5 + 0.5, reverted - target.failing_since
    assert status["reason"] == "ProbeFailed"
    assert "api" in status["message"]
    assert apps.read_namespaced_deployment("web", chaos.namespace).spec.replicas == 3
    (result,) = status["probes"]
    assert result["passed"] >= 1
    assert result["failed"] >= 1
    assert "500" in result["lastError"]


def test_recovery_time_matches_the_ready_delay(chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    ns = chaos.namespace
    delay = {"pod-ready.stage.kwok.x-k8s.io/delay": f"{READY_DELAY}s"}
    make_deployment(apps, ns, "web", replicas=3, pod_annotations=delay)
    wait_ready(core, ns, "web", 3)
    chaos.scenario(
        "s",
        {
            "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
            "mode": "one",
            "steps": [{"name": "kill", "duration": "1s", "faults": [{"type": "pod-kill"}]}],
            "steadyState": {"probes": [ready_probe()]},
            "assertions": [{"name": "fast", "type": "recovery_time", "expected": 10}],
        },
    )
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Passed", timeout=60)
    measured = status["steps"][0]["recoveryTimeSeconds"]
    pods = [
        (
            p.metadata.name,
            p.metadata.creation_timestamp,
            [(c.type, c.last_transition_time) for c in p.status.conditions or []],
        )
        for p in core.list_namespaced_pod(ns).items
    ]
    assert abs(measured - READY_DELAY) <= 0.5, (
        f"measured {measured}s for a {READY_DELAY}s ready delay; {status['injections']} {pods}"
    )
    assert status["recoveryTimeSeconds"] == measured
    (assertion,) = status["assertions"]
    assert assertion["passed"] is True
    assert assertion["actual"] == f"{measured:g}s"
    assert status["resilienceScore"] == 100


def test_assertions_and_score_match_a_hand_calculation(
    chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api, target: HttpTarget
) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    target.set_mode("flap")
    flapping = {
        "name": "api",
        "type": "http",
        "mode": "continuous",
        "interval": "200ms",
        "weight": 2,
        "http": {"url": f"{target.url}/"},
        "failureThreshold": 3,
    }
    chaos.scenario(
        "s",
        _scenario(
            [flapping, ready_probe(weight=1)],
            duration="3s",
            assertions=[
                {"name": "mostly-up", "type": "availability", "probe": "api", "expected": 30},
                {"name": "healthy", "type": "service_health", "probe": "web-ready"},
                {"name": "few-errors", "type": "error_rate", "probe": "api", "expected": 10},
            ],
        ),
    )
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Failed", timeout=30)
    results = {a["name"]: a for a in status["assertions"]}
    assert results["mostly-up"]["passed"] is True
    assert results["healthy"]["passed"] is True
    assert results["few-errors"]["passed"] is False
    assert status["reason"] == "AssertionFailed"
    assert "few-errors" in status["message"]
    probes = {p["name"]: p for p in status["probes"]}
    api, ready = probes["api"], probes["web-ready"]
    assert 30 <= api["successPercent"] <= 70, "the flapping endpoint fails every other request"
    assert api["samples"] >= 10
    assert ready["successPercent"] == 100
    # The probes' weighted success, times the share of assertions that held (2 of 3): Failed never scores 100.
    probe_part = (2 * api["successPercent"] + 1 * ready["successPercent"]) / 3
    assert status["resilienceScore"] == pytest.approx(probe_part * 2 / 3, abs=1)
    assert float(results["few-errors"]["actual"].rstrip("%")) == pytest.approx(
        100 * api["failed"] / api["samples"], abs=0.01
    )


def test_latency_assertion_reads_http_percentiles(
    chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api, target: HttpTarget
) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    target.set_mode("slow")
    target.delay = 0.25
    slow = {
        "name": "api",
        "type": "http",
        "mode": "during",
        "interval": "300ms",
        "http": {"url": f"{target.url}/", "jsonPath": "items.0.name", "value": "a"},
    }
    chaos.scenario(
        "s",
        _scenario(
            [slow],
            duration="2s",
            assertions=[{"name": "snappy", "type": "latency", "probe": "api", "expected": 100, "percentile": 95}],
        ),
    )
    run = chaos.run("s")
    status = chaos.wait_phase(run, "Failed", timeout=30)
    (probe,) = status["probes"]
    assert probe["latencyP95Ms"] >= 250
    assert probe["passed"] == probe["samples"], "the JSON value matched on every sample"
    (assertion,) = status["assertions"]
    assert assertion["passed"] is False
    assert assertion["expected"] == "<= 100"


def test_prometheus_probe_against_real_prometheus(
    chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api, target: HttpTarget, tmp_path: Path
) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    host = target.url.removeprefix("http://")
    with PrometheusServer(tmp_path, host) as prom:
        good = {
            "name": "target-up",
            "type": "prometheus",
            "mode": "edge",
            "prometheus": {"endpoint": prom.url, "query": 'up{job="test"}', "operator": "==", "threshold": 1},
        }
        chaos.scenario(
            "s",
            _scenario(
                [good],
                duration="1s",
                assertions=[{"name": "tp", "type": "throughput", "probe": "target-up", "expected": 1}],
            ),
        )
        run = chaos.run("s")
        status = chaos.wait_phase(run, "Passed", timeout=30)
        assert status["probes"][0]["lastValue"] == "1"
        assert status["assertions"][0]["passed"] is True

        bad = {
            "name": "broken",
            "type": "prometheus",
            "mode": "before",
            "prometheus": {"endpoint": prom.url, "query": "sum(rate(", "threshold": 1},
        }
        chaos.scenario("bad", _scenario([bad]))
        run = chaos.run("bad")
        status = chaos.wait_phase(run, "Failed", timeout=30)
        assert "broken" in status["message"]
        assert "query failed" in status["message"]
        assert "bad_data" in status["message"] or "parse error" in status["message"]


def test_unreachable_url_is_a_clear_probe_error(chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    with HttpTarget() as closed:
        url = closed.url
    probe = {"name": "gone", "type": "http", "mode": "before", "timeout": "1s", "http": {"url": f"{url}/"}}
    chaos.scenario("s", _scenario([probe]))
    status = chaos.wait_phase(chaos.run("s"), "Failed")
    assert "gone" in status["message"]
    assert "unreachable" in status["message"]
