"""Prometheus metrics: RED metrics of the kopf handlers and domain metrics of TestRuns, faults and probes.

Every series carries the constant labels ``service``, ``instance`` and ``version`` (set once at start-up with
:func:`configure`). Domain metrics come from :class:`MetricsObserver`, a :class:`RunObserver` registered at
start-up, so the engine never imports this module; its probe samples reach :func:`probe_result` the same way.

The series (README "Metrics" lists them for users):

* ``coordinator_handler_invocations_total{handler}``, ``coordinator_handler_errors_total{handler,error}``,
  ``coordinator_handler_duration_seconds{handler}`` — rate, errors, duration of every kopf handler;
* ``coordinator_testruns_started_total{scenario,namespace}``, ``coordinator_testruns_total{scenario,namespace,phase}``
  (runs that ended, by terminal phase), ``coordinator_testrun_duration_seconds{scenario}``,
  ``coordinator_recovery_time_seconds{scenario}``;
* ``coordinator_faults_injected_total{type}``, ``coordinator_faults_active{type}``,
  ``coordinator_fault_overdue_seconds{type}`` (how long the most overdue active fault has outlived its step);
* ``coordinator_probe_results_total{probe,result}``;
* ``coordinator_kube_api_requests_total{method}``, ``coordinator_kube_api_throttled_seconds_total``;
* ``coordinator_history_operations_total{operation,result}``, ``coordinator_history_operation_duration_seconds{operation}``,
  ``coordinator_history_pool_connections{state}``, ``coordinator_cache_requests_total{result}`` — the history
  adapters (reported through ``history/instruments.py``);
* ``coordinator_leader`` (1 on the replica that executes runs), ``coordinator_build_info``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from coordinator import __version__
from coordinator.api.models import FaultType, Injection, TestRunStatus
from coordinator.api.notifications import NotificationRecord
from coordinator.domain.runs import RunInfo
from coordinator.domain.samples import Sample
from coordinator.domain.timestamps import parse_iso
from coordinator.history.instruments import listen

SERVICE = "test-coordinator"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Runs last seconds to hours; handlers (other than the run daemon) milliseconds to seconds.
RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
RECOVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, float("inf"))


class ConstantLabelRegistry(CollectorRegistry):
    """A registry that adds the same labels (service, instance, version) to every sample it exposes."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.constant_labels: dict[str, str] = {"service": SERVICE, "instance": SERVICE, "version": __version__}

    def collect(self) -> Iterable[Metric]:
        constant = dict(self.constant_labels)
        for metric in super().collect():
            # A copy: some collectors (the platform collector) hand out the same Metric object on every scrape.
            labelled = copy.copy(metric)
            # A sample's own label wins (python_info has its own "version": the interpreter's).
            labelled.samples = [s._replace(labels={**constant, **s.labels}) for s in metric.samples]
            yield labelled


REGISTRY = ConstantLabelRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

handler_invocations = Counter(
    "coordinator_handler_invocations_total", "kopf handler invocations.", ["handler"], registry=REGISTRY
)
handler_errors = Counter(
    "coordinator_handler_errors_total",
    "kopf handler invocations that raised, by exception class (TemporaryError is retried, PermanentError not).",
    ["handler", "error"],
    registry=REGISTRY,
)
handler_duration = Histogram(
    "coordinator_handler_duration_seconds",
    "Wall time of kopf handler invocations (the run daemon lives as long as its run).",
    ["handler"],
    buckets=HANDLER_BUCKETS,
    registry=REGISTRY,
)
testruns_started = Counter(
    "coordinator_testruns_started_total", "TestRuns that started.", ["scenario", "namespace"], registry=REGISTRY
)
testruns = Counter(
    "coordinator_testruns_total",
    "TestRuns that ended, by terminal phase (Passed, Failed, Error, Cancelled, TimedOut).",
    ["scenario", "namespace", "phase"],
    registry=REGISTRY,
)
testrun_duration = Histogram(
    "coordinator_testrun_duration_seconds",
    "Duration of ended TestRuns (status.durationSeconds).",
    ["scenario"],
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)
recovery_time = Histogram(
    "coordinator_recovery_time_seconds",
    "Measured recovery time of ended TestRuns (status.recoveryTimeSeconds: the slowest step).",
    ["scenario"],
    buckets=RECOVERY_BUCKETS,
    registry=REGISTRY,
)
notifications_sent = Counter(
    "coordinator_notifications_total",
    "Webhook deliveries of run events (spec.notifications) that ended, by result: delivered or failed.",
    ["result"],
    registry=REGISTRY,
)
faults_injected = Counter(
    "coordinator_faults_injected_total", "Faults applied to a target, by fault type.", ["type"], registry=REGISTRY
)
probe_results = Counter(
    "coordinator_probe_results_total",
    "Steady-state probe checks, by probe name and result.",
    ["probe", "result"],
    registry=REGISTRY,
)
leader = Gauge(
    "coordinator_leader", "1 on the replica that executes runs (holds the lease, or runs alone).", registry=REGISTRY
)
build_info = Gauge("coordinator_build_info", "Always 1; the labels say what is running.", registry=REGISTRY)
history_operations = Counter(
    "coordinator_history_operations_total",
    "History database operations, by operation (upsert, report, get_run, ...) and result (ok or error).",
    ["operation", "result"],
    registry=REGISTRY,
)
history_operation_duration = Histogram(
    "coordinator_history_operation_duration_seconds",
    "Duration of history database operations (a whole transaction, waiting for a pooled connection included).",
    ["operation"],
    buckets=HANDLER_BUCKETS,
    registry=REGISTRY,
)
cache_requests = Counter(
    "coordinator_cache_requests_total",
    "Report cache lookups, by result: hit, miss, or error (the cache unreachable).",
    ["result"],
    registry=REGISTRY,
)
build_info.set(1)


def configure(instance: str, service: str = SERVICE, version: str = __version__) -> None:
    """Set the constant labels of every series (call once at start-up)."""
    REGISTRY.constant_labels = {"service": service, "instance": instance, "version": version}


def render() -> bytes:
    """The exposition text of every series."""
    return generate_latest(REGISTRY)


def probe_result(probe: str, result: str) -> None:
    """Count one probe check: ``result`` is a short outcome word such as ``pass``, ``fail`` or ``error``."""
    probe_results.labels(probe=probe, result=result).inc()


def set_leader(leading: bool) -> None:
    leader.set(1 if leading else 0)


@contextmanager
def handler_timer(handler: str) -> Iterator[None]:
    """Count, time and record the failure of one handler invocation."""
    handler_invocations.labels(handler=handler).inc()
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        handler_errors.labels(handler=handler, error=type(exc).__name__).inc()
        raise
    finally:
        handler_duration.labels(handler=handler).observe(time.perf_counter() - started)


# --- faults in flight ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveFault:
    type: str
    run_uid: str
    step: int
    applied_at: float


class LiveRuns:
    """The faults this process applied and has not reverted yet, and the kopf bodies of the runs executing now.

    The bodies are kopf's live views: their ``status.steps[].endsAt`` says when each fault should be gone, which
    is what :func:`overdue` compares with the clock. After a failover, faults injected by the previous leader are
    not counted here (the new leader only reverts them); the counts are per process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults: dict[tuple[str, str], ActiveFault] = {}
        self.bodies: dict[str, Mapping[str, Any]] = {}

    def injected(self, run: RunInfo, injection: Injection) -> None:
        with self._lock:
            self.faults[(run.uid, injection.id)] = ActiveFault(
                str(injection.fault), run.uid, injection.step, time.time()
            )

    def reverted(self, run: RunInfo, injection: Injection) -> None:
        with self._lock:
            self.faults.pop((run.uid, injection.id), None)

    def finished(self, run: RunInfo) -> None:
        with self._lock:
            for key in [k for k in self.faults if k[0] == run.uid]:
                del self.faults[key]

    @contextmanager
    def executing(self, uid: str, body: Mapping[str, Any]) -> Iterator[None]:
        with self._lock:
            self.bodies[uid] = body
        try:
            yield
        finally:
            with self._lock:
                if self.bodies.get(uid) is body:
                    del self.bodies[uid]

    def step_end(self, fault: ActiveFault) -> float | None:
        body = self.bodies.get(fault.run_uid)
        if body is None:
            return None
        steps = (body.get("status") or {}).get("steps") or []
        if fault.step >= len(steps) or not steps[fault.step].get("endsAt"):
            return None
        return parse_iso(steps[fault.step]["endsAt"]).timestamp()

    def snapshot(self) -> list[ActiveFault]:
        with self._lock:
            return list(self.faults.values())


LIVE = LiveRuns()


def overdue(live: LiveRuns, now: float) -> dict[str, float]:
    """Per fault type, how many seconds the most overdue active fault has outlived its step's ``endsAt``."""
    out: dict[str, float] = {}
    for fault in live.snapshot():
        ends = live.step_end(fault)
        if ends is not None and now > ends:
            out[fault.type] = max(out.get(fault.type, 0.0), now - ends)
    return out


class FaultCollector(Collector):
    """``coordinator_faults_active`` and ``coordinator_fault_overdue_seconds``, computed at scrape time.

    Every fault type is exported (0 when idle), so dashboards and alerts never see a missing series.
    """

    def __init__(self, live: LiveRuns) -> None:
        self.live = live

    def collect(self) -> Iterable[Metric]:
        active = GaugeMetricFamily(
            "coordinator_faults_active", "Faults applied and not yet reverted by this process.", labels=["type"]
        )
        late = GaugeMetricFamily(
            "coordinator_fault_overdue_seconds",
            "Seconds the most overdue active fault of each type has outlived its step's end (0: none).",
            labels=["type"],
        )
        counts = {str(t): 0 for t in FaultType}
        for fault in self.live.snapshot():
            counts[fault.type] = counts.get(fault.type, 0) + 1
        late_by_type = overdue(self.live, time.time())
        for type_, count in sorted(counts.items()):
            active.add_metric([type_], count)
            late.add_metric([type_], round(late_by_type.get(type_, 0.0), 3))
        yield active
        yield late


REGISTRY.register(FaultCollector(LIVE))


class CountingClient(Protocol):
    """What :class:`KubeApiCollector` reads from the Kubernetes client (``adapters.kube.KubeClient``)."""

    @property
    def requests_by_method(self) -> Mapping[str, int]: ...

    @property
    def throttled_seconds(self) -> float: ...


class KubeApiCollector(Collector):
    """``coordinator_kube_api_requests_total{method}`` and ``coordinator_kube_api_throttled_seconds_total``.

    The requests of the operator's own Kubernetes client (kopf's watches and its finalizer/progress patches go
    through kopf's client and are not counted), and the time they waited for the client-side rate limiter
    (COORDINATOR_API_QPS / COORDINATOR_API_BURST): a growing throttle total means the limits are too low.
    """

    def __init__(self, client: CountingClient) -> None:
        self.client = client

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "coordinator_kube_api_requests", "Kubernetes API requests sent by the operator's client.", labels=["method"]
        )
        for method, count in sorted(self.client.requests_by_method.items()):
            requests.add_metric([method], count)
        yield requests
        yield CounterMetricFamily(
            "coordinator_kube_api_throttled_seconds",
            "Seconds requests waited for the client-side rate limiter.",
            value=round(self.client.throttled_seconds, 3),
        )


_kube_collector: KubeApiCollector | None = None


def watch_kube_client(client: CountingClient) -> None:
    """Export ``client``'s request counters (the operator calls this once with its client)."""
    global _kube_collector  # one client per process; registering again replaces the old one
    if _kube_collector is not None:
        REGISTRY.unregister(_kube_collector)
    _kube_collector = KubeApiCollector(client)
    REGISTRY.register(_kube_collector)


class PooledEngine(Protocol):
    """What the pool collector reads of a history store: its SQLAlchemy engine."""

    @property
    def engine(self) -> Any: ...


class HistoryPoolCollector(Collector):
    """``coordinator_history_pool_connections{state}``: the history database pool's connections in use and idle,
    read at each scrape (no store yet, or a pool without counts, reports no sample)."""

    def __init__(self) -> None:
        self.store: PooledEngine | None = None

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "coordinator_history_pool_connections",
            "History database connections, by state: in_use (checked out) or idle (open in the pool).",
            labels=["state"],
        )
        pool: Any = self.store.engine.pool if self.store is not None else None
        if pool is not None and hasattr(pool, "checkedout") and hasattr(pool, "checkedin"):
            family.add_metric(["in_use"], pool.checkedout())
            family.add_metric(["idle"], pool.checkedin())
        yield family


class HistoryMetrics:
    """Counts what the history adapters report (``history/instruments.py``)."""

    def operation(self, operation: str, result: str, seconds: float) -> None:
        history_operations.labels(operation=operation, result=result).inc()
        history_operation_duration.labels(operation=operation).observe(seconds)

    def cache_request(self, result: str) -> None:
        cache_requests.labels(result=result).inc()


HISTORY_POOL = HistoryPoolCollector()
REGISTRY.register(HISTORY_POOL)


def instrument_history(store: PooledEngine) -> None:
    """Export the history adapters' metrics, with ``store``'s pool (the operator calls this once; again replaces)."""
    listen(HistoryMetrics())
    HISTORY_POOL.store = store


# --- the observer ----------------------------------------------------------------------------------------------


class MetricsObserver:
    """Turns the executor's run events into the domain metrics. Quick and never raising, as observers must be."""

    def __init__(self, live: LiveRuns = LIVE) -> None:
        self.live = live

    def run_started(self, run: RunInfo) -> None:
        testruns_started.labels(scenario=run.scenario, namespace=run.namespace).inc()

    def fault_injected(self, run: RunInfo, injection: Injection) -> None:
        faults_injected.labels(type=str(injection.fault)).inc()
        self.live.injected(run, injection)

    def fault_reverted(self, run: RunInfo, injection: Injection) -> None:
        self.live.reverted(run, injection)

    def run_finished(self, run: RunInfo, status: TestRunStatus) -> None:
        self.live.finished(run)
        scenario = status.scenario or run.scenario
        testruns.labels(scenario=scenario, namespace=run.namespace, phase=str(status.phase)).inc()
        if status.durationSeconds is not None:
            testrun_duration.labels(scenario=scenario).observe(status.durationSeconds)
        recovery = _recovery_seconds(status)
        if recovery is not None:
            recovery_time.labels(scenario=scenario).observe(recovery)

    def probe_sampled(self, probe: str, sample: Sample) -> None:
        probe_result(probe, "pass" if sample.ok else "fail")

    def notification_sent(self, run: RunInfo, record: NotificationRecord) -> None:
        notifications_sent.labels(result=str(record.state).lower()).inc()


def _recovery_seconds(status: TestRunStatus) -> float | None:
    """``status.recoveryTimeSeconds``, read defensively (a field, or an extra key of an older model)."""
    value = getattr(status, "recoveryTimeSeconds", None)
    if value is None:
        value = (status.model_extra or {}).get("recoveryTimeSeconds")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
