"""What the history adapters report about themselves, for metrics (the observability layer listens).

The history layer sits below observability, so it cannot call the metrics itself: it reports to ``INSTRUMENTS``,
which does nothing until the operator registers its metrics there (``observability/metrics.py``
``instrument_history``). Each report is a plain call with no I/O.
"""

from __future__ import annotations

from typing import Protocol


class HistoryInstruments(Protocol):
    def operation(self, operation: str, result: str, seconds: float) -> None:
        """One history database operation ended: ``result`` is ``ok`` or ``error`` (database unavailable, or a
        statement refused)."""

    def cache_request(self, result: str) -> None:
        """One report-cache lookup: ``hit``, ``miss`` or ``error`` (the cache unreachable)."""


class _Silent:
    def operation(self, operation: str, result: str, seconds: float) -> None:
        return None

    def cache_request(self, result: str) -> None:
        return None


class _Instruments:
    """The registered listener (one per process)."""

    def __init__(self) -> None:
        self.listener: HistoryInstruments = _Silent()

    def operation(self, operation: str, result: str, seconds: float) -> None:
        self.listener.operation(operation, result, seconds)

    def cache_request(self, result: str) -> None:
        self.listener.cache_request(result)


INSTRUMENTS = _Instruments()


def listen(listener: HistoryInstruments | None) -> None:
    """Send what the history adapters report to ``listener`` (None: to nobody)."""
    INSTRUMENTS.listener = listener if listener is not None else _Silent()
