"""The rollback ledger's rules (``status.injections``), pure: which entries changed something, and which of those
are accounted for. The revert (``engine/run/revert.py``) and the ``audit_trail`` assertion (``domain/verdict.py``)
both read them here, so they never disagree about what a change is."""

from __future__ import annotations

from coordinator.api.models import Injection, InjectionState, TargetRef


def describe_target(target: TargetRef) -> str:
    """``Kind namespace/name`` (``Kind name`` for a cluster-scoped target), as messages, logs and spans name it."""
    where = f"{target.namespace}/{target.name}" if target.namespace else target.name
    return f"{target.kind} {where}"


def made_change(injection: Injection) -> bool:
    """Whether the entry may have changed its target: everything but a failure known to have changed nothing
    (never applied, nothing recorded to restore)."""
    return not (injection.state == InjectionState.FAILED and injection.appliedAt is None and not injection.original)


def accounted_for(injection: Injection) -> bool:
    """A change with its matching revert (Reverted, with revertedAt), or a one-shot change (Irreversible: a deleted
    pod, a restart), which leaves nothing to undo."""
    if injection.state == InjectionState.IRREVERSIBLE:
        return True
    return injection.state == InjectionState.REVERTED and injection.revertedAt is not None
