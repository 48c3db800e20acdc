"""Hooks for what watches runs from the side (metrics, logs, live progress): the engine reports, observers listen.

The engine never imports its listeners (``observability/``, ``history/redis.py``): they register here at start-up.

Observers must be quick and must not raise; a failing observer is logged and never affects the run.
"""

from __future__ import annotations

import logging
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


def notify(event: str, *args: object) -> None:
    """Call ``event`` on every registered observer, isolating the run from observer failures."""
    for observer in list(_observers):
        try:
            getattr(observer, event)(*args)
        except Exception:
            log.exception("observer %r failed on %s", observer, event)
