"""The TestRun state machine: the collaborators in order, and the one boundary every failure ends at.

PENDING -> (QUEUED) -> STARTED -> (BASELINED) -> for each step k: PLANNED(k) -> INJECTED(k) -> REVERTED(k) ->
FINISHED, or ENDING -> FINISHED when a revert of the end must be retried (``stages.TRANSITIONS`` lists every
status write). Each collaborator takes the shared ``RunState``:

- ``Admission``: the scenario is read, rendered, checked and snapshotted; the concurrency cap; Running.
- ``ProbeSupervisor``: baseline, sampling while faults hold, recovery, the verdict.
- ``StepRunner``: selection and the ledger, the targets' lock, the apply window, the hold, the revert.
- ``Finisher``: revert everything, the terminal status, the history mirror, the scenario's counters.

Abort, timeout and deletion revert every change in the ledger, newest first.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi
from coordinator.api.models import TERMINAL_PHASES, Phase
from coordinator.engine import notifications, observers
from coordinator.engine.clock import SYSTEM_CLOCK, Clock
from coordinator.engine.locks import TargetLocks
from coordinator.engine.run.admission import Admission, load_snapshot
from coordinator.engine.run.errors import RetryLater, RunEnded, RunInterrupted, ending_of, is_transient
from coordinator.engine.run.finish import Finisher, Mirror
from coordinator.engine.run.probes import ProbeSupervisor
from coordinator.engine.run.revert import MAX_ERROR_TEXT, pending, revert
from coordinator.engine.run.state import RunHandle, RunState
from coordinator.engine.run.steps import StepRunner
from coordinator.engine.targets import NamespacePolicy
from coordinator.settings import Settings

log = logging.getLogger(__name__)


class RunMachine:
    """Drives one TestRun from its stored status to a terminal phase, or until the process must stop."""

    def __init__(
        self,
        client: KubeApi,
        settings: Settings,
        handle: RunHandle,
        stored: Mapping[str, Any] | None = None,
        locks: TargetLocks | None = None,
        mirror: Mirror | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``stored`` is the TestRun as last read from the API server (default: the handle's body); ``mirror``
        writes the finished run to the history store before its final status write."""
        self.state = RunState(client, settings, handle, stored, clock)
        policy = NamespacePolicy(client, settings)
        self.admission = Admission(self.state, policy)
        self.probes = ProbeSupervisor(self.state)
        self.steps = StepRunner(self.state, self.probes, policy, locks)
        self.finisher = Finisher(self.state, self.probes, mirror)

    def _unexpected(self, exc: Exception) -> str:
        return unexpected_error(self.state, exc, "; every change was reverted")

    async def execute(self) -> None:
        """Drive the run to a terminal phase (or until interrupted, leaving a resumable status).

        Every exception a sub-step raises ends here as a result: RunEnded as it says, a fault's or selection's
        failure as Error, a transient API failure as RetryLater (the caller retries with backoff; abort and the
        deadline are checked before anything else on every attempt), anything else as Error InternalError. Each
        way out through ``finish`` reverts every change first.
        """
        state = self.state
        if state.status.phase in TERMINAL_PHASES:
            await notifications.resume(state)  # deliveries a crash left Pending
            return
        # The run's activity (its span, with tracing on) began at its startedAt, also when this process resumes it.
        with observers.activity(
            "run", state.run.ref, run=state.info, started=state.status.startedAt, scenario=state.info.scenario
        ):
            await self._execute()

    async def _execute(self) -> None:
        try:
            try:
                await self._advance()
            except (RunEnded, RunInterrupted, RetryLater, ApiError):
                raise
            except Exception as exc:
                # The run's boundary: a fault's, selection's or probe's refusal ends the run as ``ending_of`` says;
                # whatever else a sub-step raises ends it Error, with every change reverted, instead of a retry
                # loop that keeps the faults in place.
                raise (ending_of(exc) or RunEnded(Phase.ERROR, "InternalError", self._unexpected(exc))) from exc
        except RunEnded as end:
            await self.finisher.finish(end)
        except ApiError as exc:
            if is_transient(exc):
                raise RetryLater(str(exc)) from exc
            await self.finisher.finish(RunEnded(Phase.ERROR, "ApiError", f"Kubernetes API: {exc}"))
        finally:
            await self.probes.close()

    async def _advance(self) -> None:
        """From wherever the status says the run is, through every remaining step; raises the run's end."""
        state = self.state
        status = state.status
        if status.ending is not None:  # ended already; only its revert is left
            with contextlib.suppress(RunEnded, ValueError):
                load_snapshot(state)
            raise RunEnded(Phase(status.ending.phase), status.ending.reason, status.ending.message)
        if status.phase in (None, Phase.PENDING):
            state.doing = "start"
            await self.admission.start()
        state.doing = "status.scenarioSnapshot"
        scenario = state.scenario or load_snapshot(state)
        # On every attempt, before anything that failed last time can fail again.
        state.check_stop()
        state.doing = "spec.steadyState"
        self.probes.open()
        await self.probes.baseline()
        for index in range(status.currentStep or 0, len(scenario.steps)):
            status.currentStep = index
            status.step = f"{index + 1}/{len(scenario.steps)} {scenario.steps[index].name}"
            state.doing = f"spec.steps[{index}] ({scenario.steps[index].name})"
            with observers.activity("step", scenario.steps[index].name, index=index):
                await self.steps.run(index)
        status.currentStep = len(scenario.steps)
        state.doing = "the checks after the last step"
        await self.probes.after_checks()
        raise self.probes.verdict()


def unexpected_error(state: RunState, exc: Exception, consequence: str = "") -> str:
    """The message of an error no sub-step expected: where the run was, what was raised, and the line that raised
    it, then ``consequence`` (logged once at ERROR: a bug to report, not a state to retry)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    origin = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    text = str(exc)[:MAX_ERROR_TEXT]
    message = f"{state.doing}: unexpected {type(exc).__name__}: {text}{origin}{consequence}"
    log.error("TestRun %s ended Error: %s", state.run.ref, message)
    log.debug("TestRun %s: the unexpected error", state.run.ref, exc_info=exc)
    return message


async def revert_run(client: KubeApi, settings: Settings, body: Mapping[str, Any]) -> int:
    """Undo everything a TestRun's ledger still holds (its deletion): returns how many changes were reverted."""
    state = RunState(client, settings, RunHandle(body=body, stopped=lambda: False))
    todo = [i for i in state.status.injections if pending(i)]
    if not todo:
        return 0
    with contextlib.suppress(RunEnded):
        load_snapshot(state)
    await revert(state, lambda _: True)
    with contextlib.suppress(RunInterrupted):
        await state.persist()
    return len(todo)
