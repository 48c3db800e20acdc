"""Kubernetes-style status conditions, as pure functions over the status model."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.api.models import Condition

TARGETS_SELECTED = "TargetsSelected"
FAULTS_INJECTED = "FaultsInjected"
FAULTS_REVERTED = "FaultsReverted"
COMPLETED = "Completed"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """Return the conditions with ``type_`` set; lastTransitionTime moves only when the status changes."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    stamp = now or now_iso()
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type == type_:
            found = True
            transition = cond.lastTransitionTime if cond.status == value else stamp
            cond = Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                lastTransitionTime=transition,
                observedGeneration=generation,
            )
        out.append(cond)
    if not found:
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                lastTransitionTime=stamp,
                observedGeneration=generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
