"""OpenTelemetry traces of runs, exported by OTLP; off unless an OTLP endpoint is configured.

Configured with OpenTelemetry's own environment variables, as every OTLP exporter is:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on: an ``http://`` or
  ``https://`` URL of a collector. Unset (the default), nothing of OpenTelemetry is imported and the engine's
  activity hooks return a shared do-nothing context: tracing costs nothing.
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``): ``http/protobuf`` (the default, port 4318) or
  ``grpc`` (port 4317). ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn tracing off again.
- The exporter's and SDK's other variables apply as documented by OpenTelemetry (``OTEL_EXPORTER_OTLP_HEADERS``,
  ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_SCHEDULE_DELAY``, ...).

One run is one trace: the trace ID is the run's UID (its correlation ID, ``domain/tracing.py``), which the log
lines carry as ``trace_id`` and the http and grpc probes send in ``traceparent``. Spans:

- ``coordinator.run``: from the run's ``status.startedAt`` to its terminal phase; its span ID is derived from the
  UID, so a run resumed by another process keeps one run span, which the process that finishes it exports.
- ``coordinator.step``: one step (selection, the apply window, the hold, the revert, recovery).
- ``coordinator.injection``: one change applied to one target, with its fault type and target.
- ``coordinator.revert``: one change undone.
- ``coordinator.probe_check``: one probe sample, with its result and latency; an http probe's request names
  this span as its parent in ``traceparent``.

A failed step, injection, revert or probe check, and a run that did not pass, have status ERROR with the reason.
Spans are batched and exported by the SDK's own thread: nothing waits on the collector in the event loop, and an
unreachable collector costs the run nothing but the spans.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from coordinator import __version__
from coordinator.api.models import Injection, Phase, TestRunStatus
from coordinator.api.notifications import NotificationRecord
from coordinator.domain.runs import RunInfo
from coordinator.domain.samples import Sample
from coordinator.domain.tracing import run_span_id, trace_id
from coordinator.engine import observers
from coordinator.engine.observers import Activity
from coordinator.settings import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

SERVICE = "test-coordinator"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("http/protobuf", "grpc")
SPAN_NAMES = {
    "run": "coordinator.run",
    "step": "coordinator.step",
    "injection": "coordinator.injection",
    "revert": "coordinator.revert",
    "probe": "coordinator.probe_check",
}
_SPAN = "otel.span"  # the Activity slot that holds its span
_FINISHED = "otel.finished"  # set on a run's activity when the run reached its terminal phase


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str
    variable: str  # the variable that gave the endpoint, for messages
    protocol: str


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def tracing_config(environ: Mapping[str, str]) -> TracingConfig | None:
    """Pure: whether tracing is on, read from OpenTelemetry's variables; ConfigurationError names a bad value."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    found = _first(environ, ENDPOINT_VARIABLES)
    if found is None:
        return None
    variable, endpoint = found
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{variable}={endpoint!r} is not an http:// or https:// URL of an OTLP collector "
            "(e.g. http://otel-collector.monitoring:4318)"
        )
    protocol_found = _first(environ, PROTOCOL_VARIABLES)
    protocol = protocol_found[1].lower() if protocol_found else "http/protobuf"
    if protocol not in PROTOCOLS:
        name = protocol_found[0] if protocol_found else PROTOCOL_VARIABLES[-1]
        raise ConfigurationError(f"{name}={protocol!r} is not supported: use one of {', '.join(PROTOCOLS)}")
    return TracingConfig(endpoint=endpoint, variable=variable, protocol=protocol)


def _run_ids(uid: str) -> tuple[int, int]:
    """The trace ID and the run span's ID of the run ``uid`` (domain/tracing.py), as the SDK takes them."""
    return int(trace_id(uid), 16), int(run_span_id(uid), 16)


def _nanos(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1e9) if when is not None else None


class RunTracer:
    """The ActivityListener and RunObserver that turn a run's activities into spans."""

    def __init__(self, tracer: Tracer, forced: contextvars.ContextVar[tuple[int, int] | None]) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._forced = forced  # the IDs the next span is given (the run span's), read by the ID generator
        self._runs: dict[str, Activity] = {}  # uid -> the open run activity of this process

    # --- ActivityListener -------------------------------------------------------------------------------------

    def _common(self, run: RunInfo) -> dict[str, Any]:
        return {
            "coordinator.correlation_id": run.uid,
            "coordinator.testrun": run.name,
            "k8s.namespace.name": run.namespace,
            "coordinator.scenario": run.scenario,
        }

    def _parent_context(self, made: Activity) -> Any:
        trace = self._trace
        enclosing = made.parent
        while enclosing is not None and enclosing.run.uid == made.run.uid:
            span = enclosing.slots.get(_SPAN)
            if span is not None:
                return trace.set_span_in_context(span)
            enclosing = enclosing.parent
        # The run's span, maybe made (and exported) by another process: its IDs are known from the UID.
        run_trace, run_span = _run_ids(made.run.uid)
        context = trace.SpanContext(
            trace_id=run_trace,
            span_id=run_span,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(context))

    def _start(self, made: Activity) -> Span:
        """The activity's span, with the run's attributes (its own are set as it ends, when all are known)."""
        attributes = self._common(made.run)
        attributes[f"coordinator.{made.kind}.name"] = made.name
        kind = self._trace.SpanKind.CLIENT if made.kind == "probe" else self._trace.SpanKind.INTERNAL
        name = SPAN_NAMES.get(made.kind, f"coordinator.{made.kind}")
        if made.kind == "run":
            token = self._forced.set(_run_ids(made.run.uid))
            try:
                return self._tracer.start_span(
                    name, context=None, kind=kind, attributes=attributes, start_time=_nanos(made.started)
                )
            finally:
                self._forced.reset(token)
        return self._tracer.start_span(
            name, context=self._parent_context(made), kind=kind, attributes=attributes, start_time=_nanos(made.started)
        )

    def activity_started(self, activity: Activity) -> None:
        span = self._start(activity)
        activity.slots[_SPAN] = span
        activity.span_id = format(span.get_span_context().span_id, "016x")
        if activity.kind == "run":
            self._runs[activity.run.uid] = activity

    def activity_ended(self, activity: Activity) -> None:
        span = activity.slots.pop(_SPAN, None)
        if span is None:
            return
        assert isinstance(span, self._trace.Span)
        if activity.kind == "run":
            self._runs.pop(activity.run.uid, None)
            if not activity.slots.get(_FINISHED):
                # The run stopped here unfinished (the process stops, a transient error is retried): whichever
                # process finishes it exports its one run span, so this one is dropped, never ended.
                return
        elif activity.error is not None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, activity.error))
        span.set_attributes({f"coordinator.{activity.kind}.{key}": value for key, value in activity.attributes.items()})
        span.end()

    # --- RunObserver ------------------------------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        pass

    def fault_injected(self, run: RunInfo, injection: Injection) -> None:
        pass

    def fault_reverted(self, run: RunInfo, injection: Injection) -> None:
        pass

    def probe_sampled(self, probe: str, sample: Sample) -> None:
        pass

    def notification_sent(self, run: RunInfo, record: NotificationRecord) -> None:
        activity = self._runs.get(run.uid)
        span = activity.slots.get(_SPAN) if activity is not None else None
        if isinstance(span, self._trace.Span):
            span.add_event(
                "notification",
                {
                    "name": record.name,
                    "event": str(record.event),
                    "state": str(record.state),
                    "attempts": record.attempts,
                },
            )

    def run_finished(self, run: RunInfo, status: TestRunStatus) -> None:
        activity = self._runs.get(run.uid)
        found = activity.slots.get(_SPAN) if activity is not None else None
        if activity is not None and isinstance(found, self._trace.Span):
            span, end_here = found, False  # ended as the run's activity ends
            activity.slots[_FINISHED] = True
        else:
            # Finished outside the run machine: its span, from the times the status gives, ended here.
            outside = Activity(kind="run", name=f"{run.namespace}/{run.name}", run=run, started=status.startedAt)
            span, end_here = self._start(outside), True
        span.set_attributes(
            {
                "coordinator.run.phase": str(status.phase),
                "coordinator.run.reason": status.reason or "",
                "coordinator.run.targets": status.targets or 0,
            }
        )
        if status.phase != Phase.PASSED:
            description = f"{status.phase}: {status.reason or ''} {status.message or ''}".strip()
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))
        if end_here:
            span.end()


class Tracing:
    """The process's tracer provider and listener: ``start`` registers them with the engine, ``stop`` flushes."""

    def __init__(self, config: TracingConfig, instance: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("run_span_ids", default=None)

        class RunSpanIds(RandomIdGenerator):
            """Random IDs, except the run span's own: trace ID and span ID derived from the run's UID."""

            def generate_span_id(self) -> int:
                ids = forced.get()
                return ids[1] if ids is not None else super().generate_span_id()

            def generate_trace_id(self) -> int:
                ids = forced.get()
                return ids[0] if ids is not None else super().generate_trace_id()

        self.config = config
        resource = Resource.create(
            {"service.name": SERVICE, "service.version": __version__, "service.instance.id": instance}
        )
        self.provider: TracerProvider = TracerProvider(
            resource=resource, id_generator=RunSpanIds(), shutdown_on_exit=False
        )
        self.provider.add_span_processor(BatchSpanProcessor(_exporter(config)))
        self.listener = RunTracer(self.provider.get_tracer("coordinator", __version__), forced)

    def start(self) -> None:
        observers.listen(self.listener)
        observers.register(self.listener)
        log.info("tracing on: OTLP %s to %s (%s)", self.config.protocol, self.config.endpoint, self.config.variable)

    async def stop(self) -> None:
        """Unregister, then export what is left (in a thread: the exporter blocks)."""
        observers.unlisten(self.listener)
        observers.unregister(self.listener)
        await asyncio.to_thread(self.provider.shutdown)


def _exporter(config: TracingConfig) -> Any:
    # The exporters read their endpoint, headers, timeout and certificates from the same variables.
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def start_tracing(environ: Mapping[str, str], instance: str) -> Tracing | None:
    """Tracing as the environment asks: None when off (nothing of OpenTelemetry imported)."""
    config = tracing_config(environ)
    if config is None:
        return None
    tracing = Tracing(config, instance)
    tracing.start()
    return tracing
