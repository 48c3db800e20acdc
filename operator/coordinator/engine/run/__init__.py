"""The TestRun engine: a resumable state machine whose only memory is the TestRun's status.

``machine.RunMachine`` drives a run; ``stages`` names where a run can be and which status writes may follow which;
``state.RunState`` is what every collaborator shares. See docs/architecture.md.
"""

from coordinator.engine.run.admission import render_scenario
from coordinator.engine.run.errors import RetryLater, RunEnded, RunInterrupted, Waiting, WaitingForTarget
from coordinator.engine.run.finish import Mirror
from coordinator.engine.run.machine import RunMachine, revert_run
from coordinator.engine.run.state import RunHandle, RunState, abort_requested
from coordinator.engine.run.summaries import SUMMARIES, ScenarioSummaries

__all__ = [
    "SUMMARIES",
    "Mirror",
    "RetryLater",
    "RunEnded",
    "RunHandle",
    "RunInterrupted",
    "RunMachine",
    "RunState",
    "ScenarioSummaries",
    "Waiting",
    "WaitingForTarget",
    "abort_requested",
    "render_scenario",
    "revert_run",
]
