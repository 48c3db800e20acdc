"""Kubernetes-style status conditions, as pure functions over the status model."""

from __future__ import annotations

from coordinator.api.models import Condition
from coordinator.domain.timestamps import now_iso

TARGETS_SELECTED = "TargetsSelected"
FAULTS_INJECTED = "FaultsInjected"
FAULTS_REVERTED = "FaultsReverted"
COMPLETED = "Completed"
# Terminal verdict conditions, for `kubectl wait --for=condition=...` and GitOps health checks (docs/gitops.md).
SUCCEEDED = "Succeeded"
FAILED = "Failed"
READY = "Ready"
# kstatus (Flux, kpt) reads Ready=False as still in progress; Stalled=True is how it learns a resource failed.
STALLED = "Stalled"
PASSED_PHASE = "Passed"


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


def running_conditions(conditions: list[Condition], generation: int | None = None) -> list[Condition]:
    """A run in progress: not Completed, not Ready."""
    conditions = set_condition(conditions, COMPLETED, False, "Running", generation=generation)
    return set_condition(conditions, READY, False, "Running", "the run is in progress", generation=generation)


def terminal_conditions(
    conditions: list[Condition], phase: str, reason: str, message: str, generation: int | None = None
) -> list[Condition]:
    """A finished run: Completed=True always; Succeeded=True and Ready=True only for Passed; Failed=True with the
    reason for Failed, Error, TimedOut and Cancelled. Both verdict conditions are set, so a `kubectl wait` on
    either ends as soon as the run does."""
    passed = phase == PASSED_PHASE
    why = reason if passed else f"{phase}: {message}" if message else phase
    conditions = set_condition(conditions, COMPLETED, True, reason, message, generation)
    conditions = set_condition(conditions, SUCCEEDED, passed, reason if passed else phase, why, generation)
    conditions = set_condition(conditions, FAILED, not passed, phase if passed else reason, why, generation)
    conditions = set_condition(conditions, READY, passed, reason if passed else phase, why, generation)
    if passed:
        return [c for c in conditions if c.type != STALLED]
    return set_condition(conditions, STALLED, True, reason, why, generation)
