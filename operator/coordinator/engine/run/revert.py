"""Undoing changes: newest first, every failure kept in the ledger for a retry, never dropped."""

from __future__ import annotations

import logging
from collections.abc import Callable

from coordinator.adapters.kube import ApiError
from coordinator.api.models import Injection, InjectionState
from coordinator.domain.ledger import describe_target, made_change
from coordinator.engine import observers
from coordinator.engine.events import post_event, target_object
from coordinator.engine.run.errors import RetryLater
from coordinator.engine.run.state import RunState
from coordinator.faults import driver_for
from coordinator.faults.base import annotation_key, clear_on_target

log = logging.getLogger(__name__)

MAX_ERROR_TEXT = 300  # characters of an unexpected error's own text in a message
# Events on the targets themselves (ChaosInjected/ChaosReverted), per step: a step over 1,000 pods would otherwise
# double its API requests with Events nobody reads one by one. The TestRun's own Events give the totals.
MAX_TARGET_EVENTS = 100


def pending(injection: Injection) -> bool:
    """Whether ``injection`` may still hold a change on its target."""
    if injection.state in (InjectionState.REVERTED, InjectionState.IRREVERSIBLE):
        return False
    return made_change(injection)


async def revert(state: RunState, which: Callable[[Injection], bool]) -> None:
    """Undo every matching change not yet undone, newest first; raise RetryLater (after writing what was undone)
    when any revert failed."""
    failures: list[str] = []
    announced: dict[int, int] = {}  # target Events posted, per step
    for injection in reversed(state.status.injections):
        if not which(injection) or not pending(injection):
            continue
        driver = driver_for(injection.fault)
        with observers.activity(
            "revert",
            injection.id,
            run=state.info,
            fault=str(injection.fault),
            target=describe_target(injection.target),
            step=injection.step,
        ) as marked:
            try:
                await driver.revert(state.client, injection)
                if driver.reversible:
                    await clear_on_target(state.client, injection.target, annotation_key(state.run.uid, injection.id))
            except ApiError as exc:
                failures.append(f"{injection.id}: {exc}")
                marked.fail(str(exc))
                continue
            except Exception as exc:  # kept in the ledger and retried: a revert is never given up on
                log.error(
                    "TestRun %s: reverting %s failed: %s: %s", state.run.ref, injection.id, type(exc).__name__, exc
                )
                failures.append(f"{injection.id}: unexpected {type(exc).__name__}: {str(exc)[:MAX_ERROR_TEXT]}")
                marked.fail(f"{type(exc).__name__}: {exc}")
                continue
        injection.state = InjectionState.REVERTED
        injection.revertedAt = state.clock.now()
        observers.notify("fault_reverted", state.info, injection)
        announced[injection.step] = announced.get(injection.step, 0) + 1
        if announced[injection.step] > MAX_TARGET_EVENTS:
            continue
        await post_event(
            state.client,
            target_object(injection.target),
            "ChaosReverted",
            f"{injection.fault} reverted by TestRun {state.run.ref}",
            correlation_id=state.run.uid,
        )
    if failures:
        await state.persist()
        raise RetryLater(f"could not revert {len(failures)} change(s): {'; '.join(failures[:3])}")
