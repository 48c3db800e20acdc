"""Which run an event is about, as every observer of runs names it (pure data).

In ``domain/`` so that the listeners (metrics and logs in ``observability/``, live progress in ``history/``)
name a run without importing the engine that reports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunInfo:
    namespace: str
    name: str
    uid: str
    scenario: str  # namespace/name
