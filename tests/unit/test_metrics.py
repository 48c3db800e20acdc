"""The Prometheus series: constant labels, handler RED metrics, domain metrics from run events, overdue faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator import __version__
from coordinator.api.models import FaultType, Injection, InjectionState, Phase, TargetRef, TestRunStatus
from coordinator.api.notifications import NotificationEvent, NotificationRecord, NotificationState
from coordinator.domain.runs import RunInfo
from coordinator.domain.timestamps import format_iso, now_iso
from coordinator.engine import observers
from coordinator.observability import metrics

RUN = RunInfo(namespace="shop", name="run-1", uid="uid-1", scenario="shop/kill-web")


@pytest.fixture(autouse=True)
def instance_labels() -> Iterator[None]:
    metrics.configure(instance="unit-tests")
    yield
    metrics.configure(instance=metrics.SERVICE)


def value(name: str, **labels: str) -> float:
    constant = {"service": "test-coordinator", "instance": "unit-tests", "version": __version__}
    found = metrics.REGISTRY.get_sample_value(name, {**constant, **labels})
    return found or 0.0


def injection(fault: FaultType = FaultType.SCALE, step: int = 0, name: str = "web") -> Injection:
    target = TargetRef(kind="Deployment", namespace="shop", name=name, uid=f"u-{name}")
    return Injection(
        id=f"{step}.0/{fault}/Deployment/shop/{name}",
        step=step,
        fault=fault,
        target=target,
        state=InjectionState.APPLIED,
    )


def test_every_sample_carries_service_instance_and_version() -> None:
    families = list(text_string_to_metric_families(metrics.render().decode()))
    assert families
    for family in families:
        for sample in family.samples:
            assert sample.labels["service"] == "test-coordinator", sample
            assert sample.labels["instance"] == "unit-tests", sample
            assert "version" in sample.labels, sample
    build = metrics.REGISTRY.get_sample_value(
        "coordinator_build_info", {"service": "test-coordinator", "instance": "unit-tests", "version": __version__}
    )
    assert build == 1


def test_a_samples_own_label_wins_over_a_constant_one() -> None:
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    (python_info,) = families["python_info"].samples
    assert python_info.labels["version"] != __version__, "python_info keeps the interpreter's version"


def test_documented_series_are_declared() -> None:
    text = metrics.render().decode()
    for name in (
        "coordinator_handler_invocations_total",
        "coordinator_handler_errors_total",
        "coordinator_handler_duration_seconds",
        "coordinator_testruns_started_total",
        "coordinator_testruns_total",
        "coordinator_testrun_duration_seconds",
        "coordinator_recovery_time_seconds",
        "coordinator_faults_injected_total",
        "coordinator_faults_active",
        "coordinator_fault_overdue_seconds",
        "coordinator_probe_results_total",
        "coordinator_notifications_total",
        "coordinator_leader",
        "coordinator_build_info",
    ):
        assert f"# TYPE {name} " in text, name


def test_handler_timer_counts_times_and_classifies_errors() -> None:
    before = value("coordinator_handler_invocations_total", handler="unit")
    before_count = value("coordinator_handler_duration_seconds_count", handler="unit")
    with metrics.handler_timer("unit"):
        pass
    with pytest.raises(KeyError), metrics.handler_timer("unit"):
        raise KeyError("boom")
    assert value("coordinator_handler_invocations_total", handler="unit") == before + 2
    assert value("coordinator_handler_duration_seconds_count", handler="unit") == before_count + 2
    assert value("coordinator_handler_errors_total", handler="unit", error="KeyError") >= 1
    assert value("coordinator_handler_errors_total", handler="unit", error="ValueError") == 0


def test_probe_result_counts_by_probe_and_result() -> None:
    before = value("coordinator_probe_results_total", probe="web-ready", result="pass")
    metrics.probe_result("web-ready", "pass")
    metrics.probe_result("web-ready", "pass")
    metrics.probe_result("web-ready", "fail")
    assert value("coordinator_probe_results_total", probe="web-ready", result="pass") == before + 2
    assert value("coordinator_probe_results_total", probe="web-ready", result="fail") >= 1


def test_leader_gauge() -> None:
    metrics.set_leader(False)
    assert value("coordinator_leader") == 0
    metrics.set_leader(True)
    assert value("coordinator_leader") == 1


def test_a_run_through_the_observer_hook() -> None:
    """The executor notifies observers; the metrics follow without the executor knowing about them."""
    live = metrics.LiveRuns()
    observer = metrics.MetricsObserver(live)
    collector = metrics.FaultCollector(live)
    observers.register(observer)
    try:
        started = value("coordinator_testruns_started_total", scenario="shop/kill-web", namespace="shop")
        injected = value("coordinator_faults_injected_total", type="scale")
        passed = value("coordinator_testruns_total", scenario="shop/kill-web", namespace="shop", phase="Passed")
        durations = value("coordinator_testrun_duration_seconds_count", scenario="shop/kill-web")
        recoveries = value("coordinator_recovery_time_seconds_count", scenario="shop/kill-web")
        recovery_sum = value("coordinator_recovery_time_seconds_sum", scenario="shop/kill-web")

        observers.notify("run_started", RUN)
        observers.notify("fault_injected", RUN, injection(name="web"))
        observers.notify("fault_injected", RUN, injection(name="api"))
        active = {m.name: m for m in collector.collect()}["coordinator_faults_active"]
        assert {s.labels["type"]: s.value for s in active.samples}["scale"] == 2
        observers.notify("fault_reverted", RUN, injection(name="web"))
        observers.notify("fault_reverted", RUN, injection(name="web"))  # twice: still never negative
        active = {m.name: m for m in collector.collect()}["coordinator_faults_active"]
        assert {s.labels["type"]: s.value for s in active.samples}["scale"] == 1
        status = TestRunStatus(phase=Phase.PASSED, scenario="shop/kill-web", durationSeconds=12.5)
        status.recoveryTimeSeconds = 1.5
        observers.notify("run_finished", RUN, status)
    finally:
        observers.unregister(observer)

    assert value("coordinator_testruns_started_total", scenario="shop/kill-web", namespace="shop") == started + 1
    assert value("coordinator_faults_injected_total", type="scale") == injected + 2
    assert value("coordinator_testruns_total", scenario="shop/kill-web", namespace="shop", phase="Passed") == passed + 1
    assert value("coordinator_testrun_duration_seconds_count", scenario="shop/kill-web") == durations + 1
    assert value("coordinator_recovery_time_seconds_count", scenario="shop/kill-web") == recoveries + 1
    assert value("coordinator_recovery_time_seconds_sum", scenario="shop/kill-web") == recovery_sum + 1.5
    assert not live.faults, "a finished run leaves no active fault behind"


def test_recovery_time_is_read_defensively() -> None:
    assert metrics._recovery_seconds(TestRunStatus()) is None
    extra = TestRunStatus.model_validate({"phase": "Passed"})
    assert metrics._recovery_seconds(extra) is None
    assert metrics._recovery_seconds(TestRunStatus.model_validate({"recoveryTimeSeconds": 2})) == 2.0


def test_every_fault_type_is_exported_even_when_idle() -> None:
    families = {m.name: m for m in metrics.FaultCollector(metrics.LiveRuns()).collect()}
    for name in ("coordinator_faults_active", "coordinator_fault_overdue_seconds"):
        assert {s.labels["type"] for s in families[name].samples} == {str(t) for t in FaultType}
        assert all(s.value == 0 for s in families[name].samples)


def _body(ends_at: str | None) -> dict[str, object]:
    steps = [{"name": "s", "outcome": "Injected", **({"endsAt": ends_at} if ends_at else {})}]
    return {"kind": "TestRun", "metadata": {"uid": "uid-1"}, "status": {"steps": steps}}


def test_overdue_measures_active_faults_past_their_steps_end() -> None:
    live = metrics.LiveRuns()
    live.injected(RUN, injection(FaultType.NODE_CORDON))
    ended = time.time() - 90
    ended_iso = format_iso(datetime.fromtimestamp(int(ended), UTC))
    assert metrics.overdue(live, time.time()) == {}, "no body known: nothing to compare with"
    with live.executing("uid-1", _body(None)):
        assert metrics.overdue(live, time.time()) == {}, "step end not written yet"
    with live.executing("uid-1", _body(now_iso())):
        assert metrics.overdue(live, time.time() - 5) == {}, "still within its step"
    with live.executing("uid-1", _body(ended_iso)):
        late = metrics.overdue(live, time.time())
        assert 89 <= late["node-cordon"] <= 92
        samples = {m.name: m for m in metrics.FaultCollector(live).collect()}["coordinator_fault_overdue_seconds"]
        assert {s.labels["type"]: s.value for s in samples.samples}["node-cordon"] >= 89
    assert not live.bodies, "the body is forgotten when the handler returns"
    live.reverted(RUN, injection(FaultType.NODE_CORDON))
    with live.executing("uid-1", _body(ended_iso)):
        assert metrics.overdue(live, time.time()) == {}, "reverted faults are never overdue"


class _CountingStub:
    """The two counters KubeApiCollector reads (a KubeClient needs credentials and a server)."""

    def __init__(self) -> None:
        self.requests_by_method = {"GET": 7, "PATCH": 3}
        self.throttled_seconds = 1.25


def test_kube_api_requests_and_throttling_are_exported() -> None:
    stub = _CountingStub()
    metrics.watch_kube_client(stub)
    assert value("coordinator_kube_api_requests_total", method="GET") == 7
    assert value("coordinator_kube_api_requests_total", method="PATCH") == 3
    assert value("coordinator_kube_api_throttled_seconds_total") == 1.25
    stub.requests_by_method["DELETE"] = 2
    metrics.watch_kube_client(stub)  # registering again replaces, never duplicates, the collector
    assert value("coordinator_kube_api_requests_total", method="DELETE") == 2


def test_notification_deliveries_are_counted_by_result() -> None:
    run = RunInfo("shop", "run-1", "uid-1", "shop/checkout")
    before = {r: value("coordinator_notifications_total", result=r) for r in ("delivered", "failed")}
    observer = metrics.MetricsObserver()
    for state in (NotificationState.DELIVERED, NotificationState.DELIVERED, NotificationState.FAILED):
        observer.notification_sent(run, NotificationRecord(name="hook", event=NotificationEvent.FAILED, state=state))
    assert value("coordinator_notifications_total", result="delivered") == before["delivered"] + 2
    assert value("coordinator_notifications_total", result="failed") == before["failed"] + 1
