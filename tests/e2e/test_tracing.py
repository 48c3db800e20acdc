"""Traces read back from a real OpenTelemetry Collector: a run's spans (run, step, injection, revert, probe check)
arrive over OTLP, in one trace whose ID is the run's UID, also when the operator is killed mid-run and another
process finishes it; the operator's log lines carry the same trace ID.

The collector is built from its Go modules (``hack/cluster build-otelcol``, part of ``make cluster-build``) with
an OTLP receiver and a file exporter; the test reads the file it writes. This module runs its own operator (its
own namespace prefix, with OTEL_EXPORTER_OTLP_ENDPOINT set), so no other test's runs are traced.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from conftest import SESSION_PREFIX, make_deployment, own_operator_namespace, wait_ready
from coordinator.domain.tracing import run_span_id, trace_id
from coordinator.testing.process import OperatorProcess, free_port
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos, ready_probe
from support.hackmodules import hack_module

REPO = Path(__file__).resolve().parents[2]
NAMESPACE_PREFIX = f"{SESSION_PREFIX}t"  # not matched by the session operator's "<prefix>-*"
build = hack_module("coordinator_build", "cluster/build.py")  # where the pinned collector is cached

COLLECTOR_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
      grpc:
        endpoint: 127.0.0.1:{grpc}
exporters:
  file:
    path: {path}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"""


class Collector:
    """An OpenTelemetry Collector process writing every span it receives to a JSON-lines file."""

    def __init__(self, workdir: Path) -> None:
        binary = build.binary_dirs(build.read_versions())["otelcol"] / "otelcol"
        if not binary.is_file():
            pytest.fail(f"{binary} is missing: `make cluster-build` (hack/cluster build-otelcol) builds it")
        self.binary = binary
        self.workdir = workdir
        self.http_port, self.grpc_port = free_port(), free_port()
        self.spans_path = workdir / "spans.jsonl"
        self.log_path = workdir / "collector.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.workdir / "collector.yaml"
        config.write_text(COLLECTOR_CONFIG.format(http=self.http_port, grpc=self.grpc_port, path=self.spans_path))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([str(self.binary), f"--config={config}"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, description="the collector to be ready")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the collector exited: {self.log_path.read_text(errors='replace')[-2000:]}")
        return "Everything is ready" in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, each with its resource's attributes under ``resource``."""
        if not self.spans_path.exists():
            return []
        found = []
        for line in self.spans_path.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = _attributes(resource_spans.get("resource", {}))
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        found.append({**span, "resource": resource, "attrs": _attributes(span)})
        return found


def _attributes(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in item.get("attributes", []):
        value = attribute.get("value", {})
        out[attribute["key"]] = next(iter(value.values()), None) if value else None
    return out


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    found = Collector(tmp_path_factory.mktemp("otelcol"))
    found.start()
    yield found
    found.stop()


@pytest.fixture(scope="module", params=["http/protobuf", "grpc"])
def traced_operator(
    request: pytest.FixtureRequest, kubeconfig: Path, crds_installed: list[str], collector: Collector
) -> Iterator[OperatorProcess]:
    """An operator exporting over OTLP/HTTP, then one exporting over OTLP/gRPC."""
    protocol: str = request.param
    port = collector.grpc_port if protocol == "grpc" else collector.http_port
    log_dir = REPO / ".test-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-tracing-{protocol.replace('/', '-')}"
    operator = OperatorProcess(
        kubeconfig,
        log_dir,
        namespaces=[f"{NAMESPACE_PREFIX}-*"],
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "COORDINATOR_INSTANCE_NAME": f"tracing-{uuid.uuid4().hex[:6]}",
            "COORDINATOR_HISTORY_PATH": str(log_dir / "history.db"),
        },
        name="traced-operator",
    )
    operator.start()
    yield operator
    operator.stop()


@pytest.fixture
def trace_namespace(core: client.CoreV1Api, traced_operator: OperatorProcess) -> Iterator[str]:
    with own_operator_namespace(core, f"{NAMESPACE_PREFIX}-trace-{uuid.uuid4().hex[:6]}") as name:
        yield name


def _of_trace(collector: Collector, trace: str) -> list[dict[str, Any]]:
    return [s for s in collector.spans() if s["traceId"] == trace]


def _failed(span: dict[str, Any]) -> bool:
    """Status ERROR (OTLP JSON writes the enum as its number, 2)."""
    return span.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR")


def _named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_a_run_killed_mid_hold_is_one_trace_of_run_step_injection_revert_and_probe_spans(
    trace_namespace: str,
    traced_operator: OperatorProcess,
    collector: Collector,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    ns = trace_namespace
    chaos = Chaos(api_client, ns)
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario(
        "halve",
        {
            "target": {"kind": "Deployment", "names": ["web"]},
            "mode": "all",
            "steps": [{"name": "halve", "duration": "8s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
            "steadyState": {"probes": [ready_probe()]},
        },
    )
    run = chaos.run("halve")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    uid = chaos.get_run(run)["metadata"]["uid"]
    trace = trace_id(uid)
    assert trace == uid.replace("-", ""), "the trace ID is the run's UID"

    # The injection's span is exported by the first process (batched every 200 ms); then that process dies.
    wait_for(
        lambda: _named(_of_trace(collector, trace), "coordinator.injection"),
        timeout=30,
        description="the injection's span at the collector",
    )
    first_pid = traced_operator.pid
    traced_operator.restart_after_crash()
    assert traced_operator.pid != first_pid
    status = chaos.wait_phase(run, "Passed", timeout=120)

    def complete() -> list[dict[str, Any]] | None:
        spans = _of_trace(collector, trace)
        return spans if _named(spans, "coordinator.run") and _named(spans, "coordinator.revert") else None

    spans = wait_for(complete, timeout=30, description="the run's and the revert's spans at the collector")
    by_id = {s["spanId"]: s for s in spans}

    # One run span, made by the process that finished the run, with the ID every process derives from the UID.
    runs = _named(spans, "coordinator.run")
    assert len(runs) == 1, runs
    root = runs[0]
    assert root["spanId"] == run_span_id(uid)
    assert not root.get("parentSpanId")
    assert root["attrs"]["coordinator.correlation_id"] == uid
    assert root["attrs"]["coordinator.run.phase"] == "Passed"
    assert root["attrs"]["k8s.namespace.name"] == ns
    assert root["attrs"]["coordinator.scenario"] == f"{ns}/halve"
    assert root["resource"]["service.name"] == "test-coordinator"
    # It starts at the run's startedAt (before the first process died), not when the second process took over.
    started_ns = int(datetime.fromisoformat(status["startedAt"].replace("Z", "+00:00")).timestamp()) * 1_000_000_000
    assert abs(int(root["startTimeUnixNano"]) - started_ns) < 1_500_000_000, (root["startTimeUnixNano"], status)
    assert int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"]) >= 8_000_000_000

    # Both processes made a step span (the first one's never ended: it died holding), under the run span.
    steps = _named(spans, "coordinator.step")
    assert steps, "the second process's step span"
    for step in steps:
        assert step["parentSpanId"] == root["spanId"]
        assert step["attrs"]["coordinator.step.name"] == "halve"

    injections = _named(spans, "coordinator.injection")
    assert len(injections) == 1, "applied once: the second process found it in the ledger"
    injection = injections[0]
    assert injection["attrs"]["coordinator.injection.fault"] == "scale"
    assert injection["attrs"]["coordinator.injection.target"] == f"Deployment {ns}/web"
    assert injection["attrs"]["coordinator.injection.state"] == "Applied"
    # Its parent is the first process's step span, which was never exported: the process died before it ended.
    assert injection["parentSpanId"] not in by_id
    assert injection["resource"]["service.instance.id"] == root["resource"]["service.instance.id"]

    reverts = _named(spans, "coordinator.revert")
    assert len(reverts) == 1, reverts
    assert by_id[reverts[0]["parentSpanId"]]["name"] == "coordinator.step"
    assert reverts[0]["attrs"]["coordinator.revert.fault"] == "scale"
    assert int(reverts[0]["startTimeUnixNano"]) > int(injection["endTimeUnixNano"])

    checks = _named(spans, "coordinator.probe_check")
    assert checks, "the edge probe's checks"
    for check in checks:
        assert check["attrs"]["coordinator.probe.name"] == "web-ready"
        assert check["attrs"]["coordinator.probe.type"] == "k8s"
        assert check["attrs"]["coordinator.correlation_id"] == uid
        # Under the run (baseline, after checks) or a step (recovery checks; the first process's step was lost).
        parent = by_id.get(check["parentSpanId"], {}).get("name")
        assert check["parentSpanId"] == root["spanId"] or parent in ("coordinator.step", None), check
        assert _failed(check) == (check["attrs"]["coordinator.probe.ok"] is False), check
    baseline = [c for c in checks if c["parentSpanId"] == root["spanId"]]
    assert baseline, "the baseline check, under the run"
    assert baseline[0]["attrs"]["coordinator.probe.ok"] is True
    errors = [s["name"] for s in spans if _failed(s)]
    assert set(errors) <= {"coordinator.probe_check"}, errors

    # Log lines: the run's lines carry its trace ID, and those logged inside a span its span ID.
    records = [
        json.loads(line)
        for path in sorted(traced_operator.log_dir.glob("traced-operator*.log"))
        for line in path.read_text().splitlines()
        if line.startswith("{")
    ]
    protocol = traced_operator.env["OTEL_EXPORTER_OTLP_PROTOCOL"]
    assert any(r["event"].startswith(f"tracing on: OTLP {protocol} to ") for r in records), protocol
    mine = [r for r in records if r.get("correlation_id") == uid]
    assert mine
    assert all(r.get("trace_id") == trace for r in mine), [r for r in mine if r.get("trace_id") != trace][:3]
    injected = [r for r in mine if r["event"] == "fault injected"]
    assert injected
    assert injected[0]["span_id"] == injection["spanId"]
