"""Hooks for what watches runs from the side (metrics, live progress): the executor reports, observers listen.

Observers must be quick and must not raise; a failing observer is logged and never affects the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from coordinator.api.models import Injection, TestRunStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    namespace: str
    name: str
    uid: str
    scenario: str  # namespace/name


class RunObserver(Protocol):
    def run_started(self, run: RunInfo) -> None: ...

    def fault_injected(self, run: RunInfo, injection: Injection) -> None: ...

    def fault_reverted(self, run: RunInfo, injection: Injection) -> None: ...

    def run_finished(self, run: RunInfo, status: TestRunStatus) -> None: ...


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
