"""Timestamps as the operator writes and reads them: RFC 3339 in UTC with a trailing ``Z``.

Two precisions: :func:`format_iso` keeps microseconds (status fields such as ``startedAt`` sort and subtract
exactly), :func:`format_iso_seconds` stops at the second, as Kubernetes writes its own times (``metav1.Time``:
Event times, ``lastScheduleTime``, the ``restartedAt`` annotation). :func:`parse_iso` reads both, and any other
ISO 8601 time, into an aware datetime. Naive datetimes are refused when formatting: a time without a zone is a
bug waiting for a machine whose local zone is not UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.api.base import TIMESTAMP_FORMAT

# The status models serialise their times with TIMESTAMP_FORMAT (api/ is below domain/, so it lives there).
_SECONDS = TIMESTAMP_FORMAT.removesuffix(".%fZ")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: give it a time zone (datetime.now(UTC))")
    return moment.astimezone(UTC)


def format_iso(moment: datetime) -> str:
    """``moment`` in UTC to the microsecond: ``2026-12-06T10:44:26.123456Z``."""
    return _utc(moment).strftime(TIMESTAMP_FORMAT)


def format_iso_seconds(moment: datetime) -> str:
    """``moment`` in UTC to the second, as Kubernetes writes times: ``2026-12-06T10:44:26Z``."""
    return _utc(moment).strftime(f"{_SECONDS}Z")


def now_iso() -> str:
    """The current time, as :func:`format_iso` writes it."""
    return format_iso(datetime.now(UTC))


def now_iso_seconds() -> str:
    """The current time, as :func:`format_iso_seconds` writes it."""
    return format_iso_seconds(datetime.now(UTC))


def parse_iso(value: str) -> datetime:
    """An ISO 8601 / RFC 3339 time (``Z`` or an offset) as an aware datetime in UTC; one without a zone is UTC.

    Raises:
        ValueError: ``value`` is not an ISO 8601 time.
    """
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
