"""Hooks for what watches runs from the side (metrics, logs, live progress, traces): the engine reports, observers
listen.

The engine never imports its listeners (``observability/``, ``history/redis.py``): they register here at start-up.

Two kinds of hook:

- ``notify``: a ``RunObserver`` hears what happened (a run started, a fault was injected, ...).
- ``activity``: a stretch of a run's work (the run, a step, an injection, a revert, a probe check) as a context
  manager; an ``ActivityListener`` hears where it starts and ends (``observability/tracing.py`` makes an
  OpenTelemetry span of each). Activities nest through a context variable, so a probe check inside a step knows
  its step, also across ``asyncio.gather``. With no listener registered (tracing off, the default) ``activity``
  returns one shared do-nothing context: no object is made, no clock read.

Observers must be quick and must not raise; a failing observer is logged and never affects the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from coordinator.api.models import Injection, TestRunStatus
from coordinator.api.notifications import NotificationRecord
from coordinator.domain.runs import RunInfo
from coordinator.domain.samples import Sample

log = logging.getLogger(__name__)


class RunObserver(Protocol):
    def run_started(self, run: RunInfo) -> None: ...

    def fault_injected(self, run: RunInfo, injection: Injection) -> None: ...

    def fault_reverted(self, run: RunInfo, injection: Injection) -> None: ...

    def run_finished(self, run: RunInfo, status: TestRunStatus) -> None: ...

    def probe_sampled(self, probe: str, sample: Sample) -> None:
        """One sample a run's probe took (point checks and sampling, not the unrecorded recovery checks)."""
        ...

    def notification_sent(self, run: RunInfo, record: NotificationRecord) -> None:
        """A webhook delivery ended: ``record.state`` is Delivered or Failed (engine/notifications.py)."""
        ...


_observers: list[RunObserver] = []


def register(observer: RunObserver) -> None:
    _observers.append(observer)


def unregister(observer: RunObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)


AttributeValue = str | int | float | bool


@dataclass(eq=False)
class Activity:
    """A stretch of one run's work, as listeners see it.

    ``kind`` is one of ``run``, ``step``, ``injection``, ``revert`` and ``probe``; ``started`` is given when the
    activity began before this process did (a resumed run began at its ``status.startedAt``); ``error`` says why
    it failed (an exception left it, or the engine called ``fail``); ``slots`` hold each listener's own state;
    ``span_id`` is the activity's span (16 hex digits) once a tracing listener has made one.
    """

    kind: str
    name: str
    run: RunInfo
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    parent: Activity | None = None
    started: datetime | None = None
    error: str | None = None
    slots: dict[str, object] = field(default_factory=dict)
    span_id: str | None = None  # set by a tracing listener: log lines and a probe's traceparent name it

    def set(self, **attributes: AttributeValue | None) -> None:
        """Add attributes (None values are left out)."""
        self.attributes.update({k: v for k, v in attributes.items() if v is not None})

    def fail(self, message: str) -> None:
        self.error = message


class _Idle(Activity):
    """The activity handed out while no listener is registered: it keeps nothing."""

    def set(self, **attributes: AttributeValue | None) -> None:
        pass

    def fail(self, message: str) -> None:
        pass


class ActivityListener(Protocol):
    def activity_started(self, activity: Activity) -> None: ...

    def activity_ended(self, activity: Activity) -> None: ...


_IDLE = _Idle(kind="idle", name="", run=RunInfo(namespace="", name="", uid="", scenario=""))
_IDLE_CONTEXT: AbstractContextManager[Activity] = contextlib.nullcontext(_IDLE)
_current: contextvars.ContextVar[Activity | None] = contextvars.ContextVar("coordinator_activity", default=None)
_listeners: list[ActivityListener] = []


def listen(listener: ActivityListener) -> None:
    _listeners.append(listener)


def unlisten(listener: ActivityListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def current_activity() -> Activity | None:
    """The innermost activity of the running task, if any listener is registered."""
    return _current.get()


def activity(
    kind: str,
    name: str,
    run: RunInfo | None = None,
    started: datetime | None = None,
    **attributes: AttributeValue | None,
) -> AbstractContextManager[Activity]:
    """Mark a stretch of work for the listeners; ``run`` defaults to the enclosing activity's run (none: nothing
    is marked). An exception that leaves the block marks the activity failed and is raised on."""
    if not _listeners:
        return _IDLE_CONTEXT
    parent = _current.get()
    owner = run or (parent.run if parent is not None else None)
    if owner is None:
        return _IDLE_CONTEXT
    made = Activity(kind=kind, name=name, run=owner, parent=parent, started=started)
    made.set(**attributes)
    return _mark(made)


@contextlib.contextmanager
def _mark(made: Activity) -> Iterator[Activity]:
    _tell("activity_started", made)
    token = _current.set(made)
    try:
        yield made
    except BaseException as exc:
        if made.error is None:
            made.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise
    finally:
        _current.reset(token)
        _tell("activity_ended", made)


def _tell(event: str, made: Activity) -> None:
    _call_each(_listeners, event, made)


def notify(event: str, *args: object) -> None:
    """Call ``event`` on every registered observer, isolating the run from observer failures."""
    _call_each(_observers, event, *args)


def _call_each(listeners: Sequence[object], event: str, *args: object) -> None:
    for listener in list(listeners):
        try:
            getattr(listener, event)(*args)
        except Exception:
            log.exception("%r failed on %s", listener, event)
