"""A run's W3C Trace Context identifiers, pure: one run, one trace, whichever process touches it.

The trace ID is the run's UID (its correlation ID): the http and grpc probes send it in ``traceparent``, the log
lines carry it as ``trace_id``, and with tracing on every span of the run belongs to it. The run's own span has
an ID derived from the UID too, so the spans of a run resumed by another operator process still have the run's
span as their parent.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16


def trace_id(correlation_id: str) -> str:
    """The W3C trace ID of a run: its UID's 32 hex digits (Kubernetes UIDs are UUIDs); any other ID is hashed to
    32 hex digits, as is the all-zero UUID, which W3C reserves as invalid."""
    try:
        digits = uuid.UUID(correlation_id).hex
    except ValueError:
        digits = _INVALID_TRACE_ID
    if digits == _INVALID_TRACE_ID:
        digits = hashlib.sha256(correlation_id.encode()).hexdigest()[:32]
    return digits


def run_span_id(correlation_id: str) -> str:
    """The span ID (16 hex digits, never all zero) of the run's own span, the same in every process."""
    digest = hashlib.sha256(f"run-span:{correlation_id}".encode()).hexdigest()
    return format(int(digest[:16], 16) or 1, "016x")


def traceparent(correlation_id: str, span_id: str | None = None) -> str:
    """``00-<trace id>-<span id>-01`` (version 00, sampled); a fresh non-zero span ID unless one is given."""
    while span_id is None or span_id == _INVALID_SPAN_ID:
        span_id = secrets.token_hex(8)
    return f"00-{trace_id(correlation_id)}-{span_id}-01"
