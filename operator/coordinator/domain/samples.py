"""What every probe returns, and how an observed value is compared with an expected one (pure).

In ``domain/`` rather than ``probes/``: the verdict (``domain/verdict.py``) counts samples and compares values
too, and the domain imports no layer above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coordinator.api.probes import Comparison


@dataclass(frozen=True)
class Sample:
    """One observation of a probe."""

    ok: bool
    at: float  # time.time() when it was taken
    value: str | None = None
    error: str | None = None
    latency_ms: float | None = None

    @property
    def errored(self) -> bool:
        """Whether the probe could not be evaluated (it observed no value): unreachable, timed out, a bad query, a
        missing object. A failed comparison observed a value."""
        return not self.ok and self.value is None


class ProbeError(Exception):
    """The probe could not be evaluated (unreachable URL, bad query, missing object): a failed sample with a reason."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def compare(actual: Any, operator: Comparison | str, expected: Any) -> bool:
    """``actual <op> expected``: numerically when both are numbers, else as strings (== and != only)."""
    op = Comparison(operator)
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return {
            Comparison.EQ: left == right,
            Comparison.NE: left != right,
            Comparison.GT: left > right,
            Comparison.GE: left >= right,
            Comparison.LT: left < right,
            Comparison.LE: left <= right,
        }[op]
    if op == Comparison.EQ:
        return str(actual) == str(expected)
    if op == Comparison.NE:
        return str(actual) != str(expected)
    raise ProbeError(f"cannot compare {actual!r} {op.value} {expected!r}: not numbers")
