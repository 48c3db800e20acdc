"""Leader election over a ``coordination.k8s.io/v1`` Lease: the pure part (who may take the lease, and when).

The rules are client-go's (``k8s.io/client-go/tools/leaderelection``): a candidate takes the lease when nobody
holds it or when the holder has not renewed it for ``leaseDurationSeconds``. Expiry is judged on the candidate's
own monotonic clock, from the moment it *observed* the record change, never from the ``renewTime`` written by
another machine: clock skew between nodes can then neither steal a live lease nor keep a dead one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Decision(StrEnum):
    ACQUIRE = "acquire"  # take the lease (free, expired, or never created)
    RENEW = "renew"  # we hold it: renew it
    WAIT = "wait"  # someone else holds a live lease


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease's spec says, reduced to what the election looks at."""

    holder: str | None
    duration_seconds: float
    renew_time: str | None
    transitions: int = 0
    acquire_time: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"),
        )


def decide(record: LeaseRecord | None, identity: str, observed_at: float, now: float) -> Decision:
    """What a candidate named ``identity`` does with ``record``, first seen unchanged at ``observed_at``.

    ``observed_at`` and ``now`` come from the candidate's monotonic clock.
    """
    if record is None or record.holder is None:
        return Decision.ACQUIRE
    if record.holder == identity:
        return Decision.RENEW
    if observed_at + record.duration_seconds <= now:
        return Decision.ACQUIRE
    return Decision.WAIT


def next_spec(record: LeaseRecord | None, identity: str, duration_seconds: float, now_iso: str) -> dict[str, Any]:
    """The Lease spec to write when ``identity`` acquires or renews the lease at ``now_iso``.

    A renewal keeps ``acquireTime`` and the transition count; a change of holder counts one more transition.
    """
    renewing = record is not None and record.holder == identity
    transitions = record.transitions if record is not None else 0
    if record is not None and not renewing:
        transitions += 1
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(duration_seconds)),
        "acquireTime": record.acquire_time if renewing and record is not None else now_iso,
        "renewTime": now_iso,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord, now_iso: str) -> dict[str, Any]:
    """The spec that hands the lease back on a clean shutdown, so a standby takes over at once."""
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": record.acquire_time,
        "renewTime": now_iso,
        "leaseTransitions": record.transitions,
    }
