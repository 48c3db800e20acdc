"""structlog for everything the process logs: our modules, kopf and any library using stdlib ``logging``.

One ``ProcessorFormatter`` on the root logger renders every record, so kopf's own messages come out in the same
format as ours: JSON lines (``--log-format json``, the default: one object per line with ``instance``,
``timestamp``, ``level``, ``logger``, ``event`` and the context) or coloured console lines for humans (``--log-format
console``).

Context: the kopf handler wrapper binds ``namespace``, ``run``, ``scenario`` and, for a TestRun, its
``correlation_id`` (the run's UID) with structlog's contextvars while a TestRun is handled (each kopf handler runs
in its own task, so contexts never mix); kopf's per-object records carry the same fields from their ``k8s_ref``.
:class:`RunLogger` logs the executor's run events. The correlation ID is the one the run's Events carry (annotation
``chaos.coordinator.dev/correlation-id``), the history keys its rows by and its http probes send (``traceparent``,
``X-Correlation-ID``): one value finds a run everywhere. Every line with a correlation ID also has ``trace_id``,
the same ID as a W3C trace ID (the trace of the run's spans with tracing on, ``observability/tracing.py``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from coordinator.api.models import Injection, TestRunStatus
from coordinator.api.notifications import NotificationRecord
from coordinator.domain.ledger import describe_target
from coordinator.domain.runs import RunInfo
from coordinator.domain.samples import Sample
from coordinator.domain.tracing import trace_id
from coordinator.engine import observers

LogFormat = Literal["json", "console"]

# alembic announces its migration context ("Context impl SQLiteImpl.") at INFO on every start.
_QUIET_LOGGERS = ("asyncio", "aiohttp.access", "kubernetes_asyncio", "alembic")


def kopf_object_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Lift kopf's object reference (``record.k8s_ref``) into flat fields; TestRuns become ``run``."""
    record = event_dict.get("_record")
    ref = getattr(record, "k8s_ref", None) if record is not None else None
    if isinstance(ref, Mapping):
        if ref.get("namespace"):
            event_dict.setdefault("namespace", ref["namespace"])
        if ref.get("kind") == "TestRun":
            event_dict.setdefault("run", ref.get("name"))
            if ref.get("uid"):
                event_dict.setdefault("correlation_id", ref["uid"])
        elif ref.get("name"):
            event_dict.setdefault("object", f"{ref.get('kind') or '?'}/{ref['name']}")
    return event_dict


def trace_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A run's line names its trace: ``trace_id`` (the run's UID as a W3C trace ID, ``domain/tracing.py``) and,
    with tracing on, ``span_id`` of the activity (step, injection, ...) that logged it."""
    correlation = event_dict.get("correlation_id")
    if isinstance(correlation, str) and correlation and "trace_id" not in event_dict:
        event_dict["trace_id"] = trace_id(correlation)
        current = observers.current_activity()
        if current is not None and current.span_id and current.run.uid == correlation:
            event_dict.setdefault("span_id", current.span_id)
    return event_dict


def _instance(name: str) -> Processor:
    """Name the operator instance in every line, so the logs of several instances (sharding, one per team) can be
    told apart once collected together."""

    def add(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("instance", name)
        return event_dict

    return add


def _shared_processors(instance: str | None) -> list[Processor]:
    return [
        *([_instance(instance)] if instance else []),
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        kopf_object_fields,
        trace_fields,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def admission_chatter(record: logging.LogRecord) -> bool:
    """Drop kopf's "Webhook '<id>' succeeded." (one per admitted create or change, below DEBUG): a new object has
    no UID yet to correlate it with, and refusals are logged by the API server's caller. Failures still pass."""
    if record.name == "kopf.objects" and record.levelno < logging.WARNING and logging.getLogger().level > logging.DEBUG:
        message = record.getMessage()
        return not (message.startswith("Webhook '") and message.endswith("' succeeded."))
    return True


def configure_logging(
    log_format: LogFormat = "json", level: int | str = logging.INFO, instance: str | None = None
) -> logging.Handler:
    """Route structlog and stdlib logging to one handler on stderr, rendered as ``log_format``; return it. With
    ``instance``, every line carries ``instance`` (COORDINATOR_INSTANCE_NAME)."""
    shared = _shared_processors(instance)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format == "json":
        final += [structlog.processors.format_exc_info]
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[*final, renderer])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler.addFilter(admission_chatter)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become log records too: nothing bypasses the format
    # Library chatter (asyncio debug, HTTP access lines) only when asked for with --verbose.
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    return handler


def run_context(body: Mapping[str, Any] | None) -> dict[str, str]:
    """The log context of a kopf body: ``namespace`` and, for TestRuns, ``run``, ``scenario`` and
    ``correlation_id`` (the run's UID)."""
    if not body:
        return {}
    meta = body.get("metadata") or {}
    context: dict[str, str] = {}
    if meta.get("namespace"):
        context["namespace"] = str(meta["namespace"])
    if body.get("kind") == "TestRun" or "scenarioRef" in (body.get("spec") or {}):
        context["run"] = str(meta.get("name"))
        if meta.get("uid"):
            context["correlation_id"] = str(meta["uid"])
        scenario = (body.get("status") or {}).get("scenario")
        if not scenario:
            ref = (body.get("spec") or {}).get("scenarioRef") or {}
            if ref.get("name"):
                scenario = f"{ref.get('namespace') or meta.get('namespace')}/{ref['name']}"
        if scenario:
            context["scenario"] = str(scenario)
    elif body.get("kind") == "ChaosScenario" and meta.get("name"):
        context["scenario"] = f"{meta.get('namespace')}/{meta['name']}"
    return context


class RunLogger:
    """A RunObserver that logs what a run does, with the run's context as fields."""

    def __init__(self) -> None:
        self.log = structlog.get_logger("coordinator.runs")

    def _context(self, run: RunInfo) -> MutableMapping[str, Any]:
        return {"namespace": run.namespace, "run": run.name, "scenario": run.scenario, "correlation_id": run.uid}

    def run_started(self, run: RunInfo) -> None:
        self.log.info("run started", **self._context(run))

    def fault_injected(self, run: RunInfo, injection: Injection) -> None:
        self.log.info(
            "fault injected",
            **self._context(run),
            fault=str(injection.fault),
            target=describe_target(injection.target),
            step=injection.step,
            injection=injection.id,
        )

    def fault_reverted(self, run: RunInfo, injection: Injection) -> None:
        self.log.info(
            "fault reverted",
            **self._context(run),
            fault=str(injection.fault),
            target=describe_target(injection.target),
            step=injection.step,
            injection=injection.id,
        )

    def run_finished(self, run: RunInfo, status: TestRunStatus) -> None:
        level = logging.INFO if str(status.phase) == "Passed" else logging.WARNING
        self.log.log(
            level,
            "run finished",
            **self._context(run),
            phase=str(status.phase),
            reason=status.reason,
            duration_seconds=status.durationSeconds,
            recovery_seconds=getattr(status, "recoveryTimeSeconds", None),
        )

    def probe_sampled(self, probe: str, sample: Sample) -> None:
        pass  # samples are counted in the metrics and summed up in the status, not logged one by one

    def notification_sent(self, run: RunInfo, record: NotificationRecord) -> None:
        delivered = str(record.state) == "Delivered"
        self.log.log(
            logging.INFO if delivered else logging.WARNING,
            "notification delivered" if delivered else "notification failed",
            **self._context(run),
            notification=record.name,
            event=str(record.event),
            attempts=record.attempts,
            error=record.lastError,
        )
