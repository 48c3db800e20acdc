"""Polling with a deadline instead of sleeps: tests wait exactly as long as the system needs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time; the message carries the last observed state."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    description: str = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions raised by ``predicate`` count as "not yet" (the object may not exist yet), but the last one is
    reported, as is the last falsy value, so a failure says what the test saw rather than only that it timed out.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
            last = result
            last_error = None
        if time.monotonic() >= deadline:
            seen = f"last error: {last_error!r}" if last_error is not None else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {description}; {seen}")
        time.sleep(interval)
