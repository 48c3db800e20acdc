"""After a real run: /metrics shows the documented series, /healthz and /readyz answer, and the log is JSON lines
with the run's context. Uses the session operator (its metrics server listens on a free loopback port)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from conftest import make_deployment, wait_ready
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos, ready_probe

CONSTANT = {"service": "test-coordinator", "instance": "test-coordinator", "version": "0.1.0"}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a loopback URL the test built
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [v for found, v in samples.get(name, []) if labels.items() <= found.items()]
    assert len(matching) == 1, f"{len(matching)} samples of {name}{labels}: {samples.get(name)}"
    return matching[0]


def _scenario() -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [{"name": "halve", "duration": "2s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
        "steadyState": {"probes": [ready_probe()]},
    }


def test_metrics_health_and_logs_after_a_run(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, running_operator: OperatorProcess
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("halve-web", _scenario())
    run = chaos.run("halve-web")
    status = chaos.wait_phase(run, "Passed")
    assert status["recoveryTimeSeconds"] is not None
    scenario = f"{ns}/halve-web"
    url = running_operator.metrics_url

    code, text = _get(f"{url}/metrics")
    assert code == 200
    samples = _samples(text)
    for name, found in samples.items():
        for labels, _ in found:
            assert CONSTANT.items() <= labels.items() or name == "python_info", f"{name}{labels}"
    assert _value(samples, "coordinator_testruns_started_total", scenario=scenario, namespace=ns) == 1
    assert _value(samples, "coordinator_testruns_total", scenario=scenario, namespace=ns, phase="Passed") == 1
    assert _value(samples, "coordinator_testrun_duration_seconds_count", scenario=scenario) == 1
    assert 2 <= _value(samples, "coordinator_testrun_duration_seconds_sum", scenario=scenario) < 60
    assert _value(samples, "coordinator_recovery_time_seconds_count", scenario=scenario) == 1
    assert _value(samples, "coordinator_recovery_time_seconds_sum", scenario=scenario) == status["recoveryTimeSeconds"]
    assert _value(samples, "coordinator_faults_injected_total", type="scale") >= 1
    assert _value(samples, "coordinator_faults_active", type="scale") >= 0
    assert _value(samples, "coordinator_fault_overdue_seconds", type="scale") == 0
    assert _value(samples, "coordinator_handler_invocations_total", handler="testrun_daemon") >= 1
    assert _value(samples, "coordinator_handler_duration_seconds_count", handler="testrun_daemon") >= 1
    assert _value(samples, "coordinator_leader") == 1
    assert _value(samples, "coordinator_build_info") == 1
    probe_checks = [v for labels, v in samples["coordinator_probe_results_total"] if labels["probe"] == "web-ready"]
    assert sum(probe_checks) >= 2, "the edge probe was checked before and after the fault"
    assert "# TYPE coordinator_handler_errors_total counter" in text
    # The run read its scenario and targets and patched its status through the counted client.
    assert _value(samples, "coordinator_kube_api_requests_total", method="GET") >= 2
    assert _value(samples, "coordinator_kube_api_requests_total", method="PATCH") >= 2
    assert "# TYPE coordinator_kube_api_throttled_seconds_total counter" in text

    code, body = _get(f"{url}/healthz")
    assert code == 200
    health = json.loads(body)
    assert {k: health[k] for k in ("status", "service", "instance", "version", "environment")} == {
        "status": "ok",
        "service": "test-coordinator",
        "instance": "test-coordinator",
        "version": "0.1.0",
        "environment": "development",
    }
    assert health["timestamp"].endswith("Z")
    code, body = _get(f"{url}/readyz")
    assert code == 200, body
    ready = json.loads(body)
    assert ready["checks"]["kubernetes"]["status"] == "ok"
    assert set(ready["checks"]) == {"kubernetes", "database", "redis"}
    # The session operator's history is an SQLite file and its Redis services are in-process: both answer.
    assert ready["checks"]["database"]["status"] == "ok"
    assert ready["checks"]["redis"]["status"] == "ok"

    # The log: every line a JSON object (kopf's lines included), the run's lines with its context.
    def run_records() -> list[dict[str, Any]] | None:
        lines = [line for line in running_operator.log_path.read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        assert all(isinstance(r, dict) and "event" in r and "level" in r and "timestamp" in r for r in records)
        mine = [r for r in records if r.get("run") == run and r.get("namespace") == ns]
        return mine if any(r["event"] == "run finished" for r in mine) else None

    mine = wait_for(run_records, timeout=10, description=f"the log lines of {run}")
    events = [r["event"] for r in mine]
    for expected in ("run started", "fault injected", "fault reverted", "run finished"):
        assert expected in events, events
    ours = [r for r in mine if r["logger"] == "coordinator.runs"]
    assert all(r["scenario"] == scenario for r in ours)
    finished = next(r for r in ours if r["event"] == "run finished")
    assert finished["phase"] == "Passed"
    injected = next(r for r in ours if r["event"] == "fault injected")
    assert injected["target"] == f"Deployment {ns}/web"
    assert any(r["logger"].startswith("kopf") for r in mine), "kopf's own lines about the run carry its context"
    uid = chaos.get_run(run)["metadata"]["uid"]
    without = [r["event"] for r in mine if r.get("correlation_id") != uid]
    assert not without, f"lines about the run without its correlation ID (its UID): {without}"
