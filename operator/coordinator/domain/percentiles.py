"""The one percentile the project computes: nearest rank, in integer arithmetic.

The verdict (p50/p95 of a probe's latencies), the history report and the history store's SQL (which skips to
:func:`percentile_rank` ``- 1`` rows of a sorted query) all use it, so a run's p95 reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable


def percentile_rank(count: int, percent: int = 95) -> int:
    """The 1-based nearest-rank position of the ``percent``-th percentile among ``count`` sorted values.

    ``ceil(percent * count / 100)`` in integers (a float product puts 7% of 100 at rank 8), at least 1.
    """
    return max(1, -(-percent * count // 100))


def percentile(values: Iterable[float], percent: int = 95) -> float | None:
    """The nearest-rank ``percent``-th percentile of ``values``; None for no values."""
    ordered = sorted(values)
    return ordered[percentile_rank(len(ordered), percent) - 1] if ordered else None
