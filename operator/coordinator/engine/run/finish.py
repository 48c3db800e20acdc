"""Ending a run: revert everything it still holds, write its terminal status, mirror it, and count it.

-> ENDING (only while a revert fails and is retried) -> FINISHED. The history mirror runs before the final write,
so that write can say the record is there; the scenario's counters are updated after it, once per run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from coordinator.adapters.kube import ApiError
from coordinator.api.base import format_timestamp
from coordinator.api.durations import format_duration
from coordinator.api.models import HistorySync, Phase, RunEnding, StepOutcome
from coordinator.domain import conditions as cond
from coordinator.engine import notifications, observers
from coordinator.engine.run.errors import RunEnded
from coordinator.engine.run.probes import ProbeSupervisor
from coordinator.engine.run.revert import revert
from coordinator.engine.run.state import RunState
from coordinator.engine.run.summaries import SUMMARIES

log = logging.getLogger(__name__)

# Writes a finished TestRun (as its final write will leave it) to the history store; returns status.history or None.
Mirror = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any] | None]]


class Finisher:
    def __init__(self, state: RunState, probes: ProbeSupervisor, mirror: Mirror | None) -> None:
        self.state = state
        self.probes = probes
        self.mirror = mirror

    async def finish(self, end: RunEnded) -> None:
        state = self.state
        status = state.status
        if status.injections:
            # Written with the revert's failure (never otherwise), so a retry finishes this end instead of
            # resuming the run: an Error must not become a pass because its revert needed a second attempt.
            status.ending = RunEnding(phase=end.phase, reason=end.reason, message=end.message)
            await revert(state, lambda _: True)
            state.condition(cond.FAULTS_REVERTED, True, "Reverted", "every fault was reverted")
        end = self.probes.audit(end)  # the audit trail is the ledger after the final revert
        status.ending = None
        completed = state.clock.now()
        status.phase = end.phase
        status.reason = end.reason
        status.message = end.message
        status.completedAt = completed
        if status.startedAt:
            status.durationSeconds = round((completed - status.startedAt).total_seconds(), 3)
            status.duration = format_duration(round(status.durationSeconds, 1))
        status.step = None
        if status.steps and status.currentStep is not None:
            for record in status.steps[status.currentStep :]:
                if record.outcome == StepOutcome.PENDING and end.phase != Phase.PASSED:
                    record.outcome = StepOutcome.SKIPPED
        self.probes.record()
        if end.phase not in (Phase.PASSED, Phase.FAILED):
            # Error, Cancelled, TimedOut: the experiment did not run its course; a score would claim it did.
            status.resilienceScore = None
        status.conditions = cond.terminal_conditions(
            status.conditions, end.phase.value, end.reason, end.message, state.generation
        )
        # Counted on the scenario right after this write. A crash between the two loses the count (a resumed
        # run that is already finished does nothing), which a summary can afford; counting twice it could not.
        counted = bool(status.scenarioCounted)
        status.scenarioCounted = True
        # Each webhook that wants this end is recorded Pending with the final write, then called in the background:
        # the verdict is written first, whatever the receivers do.
        event = notifications.queue(state)
        await self.mirror_finished()
        await state.persist()  # -> FINISHED
        notifications.send(state, event)
        observers.notify("run_finished", state.info, status)
        warning = end.phase != Phase.PASSED
        await state.event("Completed" if not warning else end.phase.value, end.message, warning=warning)
        if not counted:
            await self.count(end.phase)

    async def mirror_finished(self) -> None:
        """Put the finished run into the history store now, so the final write can say it is there (one status
        write fewer than the timer's mark). A crash before that write only means the record is written again."""
        state = self.state
        if self.mirror is None or (state.status.history is not None and state.status.history.synced):
            return
        state.status.observedGeneration = state.generation
        synced = await self.mirror(
            {
                "metadata": state.metadata,
                "spec": state.spec_body,
                "status": state.status.model_dump(mode="json", exclude_none=True),
            }
        )
        if synced is not None:
            state.status.history = HistorySync.model_validate(synced)

    async def count(self, phase: Phase) -> None:
        """Count the finished run on its scenario's (or workflow's) status (total, passed, pass rate, last run)."""
        state = self.state
        kind, ref = (
            ("ChaosWorkflow", state.status.workflow)
            if state.status.workflow
            else ("ChaosScenario", state.status.scenario)
        )
        if not ref:
            return
        namespace, name = ref.split("/", 1)
        completed = format_timestamp(state.status.completedAt) if state.status.completedAt else None
        try:
            await SUMMARIES.count(state.client, namespace, name, state.run.name, phase, completed, kind=kind)
        except ApiError as exc:
            # The run itself is finished and recorded; only the scenario's counters miss it.
            log.warning("TestRun %s not counted on %s %s: %s", state.run.ref, kind, ref, exc)
