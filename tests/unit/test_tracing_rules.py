"""Tracing's pure parts: when it is on, the engine's activities and their nesting, the IDs a run's spans get, the
trace fields of log lines, and that off costs nothing. The spans themselves are read back from a real collector in
tests/e2e/test_tracing.py; the SDK's in-memory exporter is used here only to check which spans the listener ends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from coordinator.api.models import Phase, TestRunStatus
from coordinator.domain.runs import RunInfo
from coordinator.domain.tracing import run_span_id, trace_id, traceparent
from coordinator.engine import observers
from coordinator.engine.observers import Activity
from coordinator.observability.logs import trace_fields
from coordinator.observability.tracing import Tracing, TracingConfig, tracing_config
from coordinator.settings import ConfigurationError

pytestmark = pytest.mark.unit

UID = "0b6f1f8e-5c1a-4d1e-9a53-2f3c7f1b9e10"
RUN = RunInfo(namespace="shop", name="run-1", uid=UID, scenario="shop/kill")


# --- when tracing is on ----------------------------------------------------------------------------------------


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    assert tracing_config({}) is None
    assert tracing_config({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None
    assert tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None


def test_the_endpoint_and_protocol_come_from_opentelemetrys_own_variables() -> None:
    assert tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == TracingConfig(
        endpoint="http://collector:4318", variable="OTEL_EXPORTER_OTLP_ENDPOINT", protocol="http/protobuf"
    )
    both = tracing_config(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "GRPC",
        }
    )
    assert both == TracingConfig(
        endpoint="https://traces:4317", variable="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", protocol="grpc"
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_opentelemetrys_switches_turn_it_off_again(environ: dict[str, str]) -> None:
    assert tracing_config(environ) is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='ftp://c'"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://"}, "OTEL_EXPORTER_OTLP_ENDPOINT='http://'"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported",
        ),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace("/", ".").replace("(", r"\(")):
        tracing_config(environ)


def test_off_imports_nothing_of_opentelemetry_and_hands_out_one_shared_activity() -> None:
    """Unset, the operator's modules load and its activities run without OpenTelemetry's trace SDK: nothing is
    made per call."""
    code = """
import sys
import coordinator.cli.supervision, coordinator.engine.run.machine, coordinator.observability.logs
from coordinator.domain.runs import RunInfo
from coordinator.engine import observers
run = RunInfo(namespace="n", name="r", uid="u", scenario="n/s")
first, second = observers.activity("run", "r", run=run), observers.activity("step", "s", run=run)
assert first is second, "one shared context"
with first as made:
    made.set(ok=True)
    made.fail("ignored")
    assert observers.current_activity() is None
    assert made.attributes == {} and made.error is None
# redis-py imports OpenTelemetry's metrics API for its own (inactive) instruments once OpenTelemetry is installed;
# the trace SDK and the exporters are ours, loaded only with tracing on.
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter")))
assert not loaded, loaded
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- activities --------------------------------------------------------------------------------------------------


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, str | None]] = []

    def activity_started(self, activity: Activity) -> None:
        parent = activity.parent.name if activity.parent else None
        self.events.append(("start", activity.name, parent, None))

    def activity_ended(self, activity: Activity) -> None:
        self.events.append(("end", activity.name, None, activity.error))


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    observers.listen(found)
    yield found
    observers.unlisten(found)


def test_activities_nest_and_inherit_their_run(listener: Listener) -> None:
    with observers.activity("run", "shop/run-1", run=RUN) as run, observers.activity("step", "kill", index=0) as step:
        assert step.run == RUN, "inherited from the enclosing run"
        assert step.attributes == {"index": 0}
        with observers.activity("probe", "ready", ok=None) as probe:
            probe.set(ok=False, value=None)
            probe.fail("0 of 2 ready")
            assert observers.current_activity() is probe
        assert observers.current_activity() is step
    assert observers.current_activity() is None
    assert run.error is None
    assert probe.attributes == {"ok": False}
    assert listener.events == [
        ("start", "shop/run-1", None, None),
        ("start", "kill", "shop/run-1", None),
        ("start", "ready", "kill", None),
        ("end", "ready", None, "0 of 2 ready"),
        ("end", "kill", None, None),
        ("end", "shop/run-1", None, None),
    ]


def test_an_exception_marks_the_activity_failed_and_is_raised_on(listener: Listener) -> None:
    with pytest.raises(RuntimeError), observers.activity("revert", "0/0/pod", run=RUN):
        raise RuntimeError("gone")
    assert listener.events[-1] == ("end", "0/0/pod", None, "RuntimeError: gone")


def test_without_a_run_nothing_is_marked(listener: Listener) -> None:
    with observers.activity("probe", "ready") as made:
        assert observers.current_activity() is None
        made.set(ok=True)
    assert listener.events == []


def test_a_failing_listener_never_affects_the_work() -> None:
    class Broken:
        def activity_started(self, activity: Activity) -> None:
            raise ValueError("bug")

        def activity_ended(self, activity: Activity) -> None:
            raise ValueError("bug")

    broken = Broken()
    observers.listen(broken)
    try:
        with observers.activity("step", "s", run=RUN) as made:
            made.set(index=1)
        assert made.attributes == {"index": 1}
    finally:
        observers.unlisten(broken)


# --- IDs and log fields ------------------------------------------------------------------------------------------


def test_the_run_span_id_is_the_same_everywhere_and_valid() -> None:
    assert run_span_id(UID) == run_span_id(UID)
    assert run_span_id(UID) != run_span_id("another-uid")
    assert len(run_span_id(UID)) == 16
    assert int(run_span_id(UID), 16) != 0
    assert traceparent(UID, run_span_id(UID)) == f"00-{trace_id(UID)}-{run_span_id(UID)}-01"


def test_a_run_log_line_names_its_trace_and_the_span_it_was_logged_in(listener: Listener) -> None:
    assert trace_fields(None, "info", {"event": "x"}) == {"event": "x"}
    line = trace_fields(None, "info", {"event": "x", "correlation_id": UID})
    assert line == {"event": "x", "correlation_id": UID, "trace_id": "0b6f1f8e5c1a4d1e9a532f3c7f1b9e10"}
    with observers.activity("step", "s", run=RUN) as made:
        made.span_id = "00f067aa0ba902b7"
        inside = trace_fields(None, "info", {"event": "x", "correlation_id": UID})
        other = trace_fields(None, "info", {"event": "x", "correlation_id": "another-run"})
    assert inside["span_id"] == "00f067aa0ba902b7"
    assert "span_id" not in other, "another run's line never gets this run's span"


# --- the listener's spans (in memory, for the logic only) ---------------------------------------------------------


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    tracing = Tracing(TracingConfig("http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_ENDPOINT", "http/protobuf"), "test")
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.start()
    yield memory
    observers.unlisten(tracing.listener)
    observers.unregister(tracing.listener)
    tracing.provider.shutdown()


def _status(phase: Phase, started: datetime) -> TestRunStatus:
    return TestRunStatus(phase=phase, reason="Done", startedAt=started)


def test_an_unfinished_run_exports_its_children_but_not_its_run_span(exported: InMemorySpanExporter) -> None:
    with (
        observers.activity("run", "shop/run-1", run=RUN),
        observers.activity("step", "kill", index=0),
        observers.activity("injection", "0/0/pod", fault="pod-kill"),
    ):
        pass
    names = [s.name for s in exported.get_finished_spans()]
    assert names == ["coordinator.injection", "coordinator.step"], "the run span waits for the finishing process"


def test_a_finished_run_span_has_the_derived_ids_and_its_start(exported: InMemorySpanExporter) -> None:
    started = datetime.now(UTC) - timedelta(minutes=5)
    with observers.activity("run", "shop/run-1", run=RUN, started=started):
        with observers.activity("step", "kill", index=0):
            pass
        observers.notify("run_finished", RUN, _status(Phase.FAILED, started))
    spans = {s.name: s for s in exported.get_finished_spans()}
    run, step = spans["coordinator.run"], spans["coordinator.step"]
    assert format(run.context.trace_id, "032x") == trace_id(UID)
    assert format(run.context.span_id, "016x") == run_span_id(UID)
    assert run.parent is None
    assert step.parent is not None
    assert step.parent.span_id == run.context.span_id
    assert run.start_time == int(started.timestamp() * 1e9)
    assert run.status.status_code.name == "ERROR"
    assert run.attributes is not None
    assert run.attributes["coordinator.run.phase"] == "Failed"


def test_a_resumed_runs_spans_point_at_the_run_span_another_process_exports(exported: InMemorySpanExporter) -> None:
    with observers.activity("revert", "0/0/pod", run=RUN):
        pass
    (revert,) = exported.get_finished_spans()
    assert revert.parent is not None
    assert format(revert.parent.span_id, "016x") == run_span_id(UID)
    assert format(revert.context.trace_id, "032x") == trace_id(UID)
    assert format(revert.context.span_id, "016x") != run_span_id(UID)
