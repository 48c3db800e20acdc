"""Where a run is, read from its stored status, and which status writes may follow which.

A run's progress lives only in ``TestRun.status`` (any operator process may resume it), so its position is a
function of that status (``position_of``). Every status write moves the run from one position to the next; the
table ``TRANSITIONS`` lists every move the machine makes, with the reason for each move that skips a position
(a write left out because the next one follows at once and carries it). ``RunState.persist`` checks each write
against the table, and the resume-after-crash unit tests start from every position the table names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from coordinator.api.models import TERMINAL_PHASES, Phase, StepOutcome, TestRunStatus


class Stage(StrEnum):
    PENDING = "Pending"  # created; nothing read or changed yet
    QUEUED = "Queued"  # waits (a slot under COORDINATOR_MAX_CONCURRENT_RUNS, or a pause to end); nothing changed
    STARTED = "Started"  # Running: scenario snapshot, deadline and step records written
    BASELINED = "Baselined"  # the before/edge probes passed; still nothing changed
    PLANNED = "Planned"  # step k's changes are in the ledger (some may be applied: an apply is idempotent)
    INJECTED = "Injected"  # step k's changes are applied and hold until the step's endsAt
    REVERTED = "Reverted"  # step k is done: its changes reverted (or a dry run recorded), recovery timed
    ENDING = "Ending"  # the run has its end (status.ending), but reverting failed and is retried
    FINISHED = "Finished"  # a terminal phase is written


# The reasons of a Pending run that waits to start: the concurrency cap, or a pause (engine/pausing.py).
WAITING_REASONS = frozenset({"Queued", "Paused"})
STEP_STAGES = frozenset({Stage.PLANNED, Stage.INJECTED, Stage.REVERTED})


@dataclass(frozen=True)
class Position:
    stage: Stage
    step: int = -1  # the step index for PLANNED, INJECTED and REVERTED; -1 before the first step

    def __str__(self) -> str:
        return f"{self.stage}({self.step})" if self.stage in STEP_STAGES else str(self.stage)


def position_of(status: TestRunStatus) -> Position:
    """The run's position as ``status`` records it."""
    if status.phase in TERMINAL_PHASES:
        return Position(Stage.FINISHED)
    if status.ending is not None:
        return Position(Stage.ENDING)
    if status.phase in (None, Phase.PENDING):
        return Position(Stage.QUEUED if status.reason in WAITING_REASONS else Stage.PENDING)
    index = status.currentStep or 0
    if index >= len(status.steps):
        return Position(Stage.REVERTED, index - 1) if status.steps else Position(Stage.STARTED)
    outcome = status.steps[index].outcome
    if outcome == StepOutcome.INJECTED:
        return Position(Stage.INJECTED, index)
    if outcome in (StepOutcome.REVERTED, StepOutcome.DRY_RUN, StepOutcome.SKIPPED):
        return Position(Stage.REVERTED, index)
    if any(i.step == index for i in status.injections):
        return Position(Stage.PLANNED, index)
    if index > 0:
        return Position(Stage.REVERTED, index - 1)  # the next step is not planned yet
    return Position(Stage.BASELINED if status.baselineChecked else Stage.STARTED)


class Step(Enum):
    """How the step index of a transition's target relates to its source's."""

    NONE = "none"  # neither side is a step stage
    FIRST = "first"  # the target is step 0
    SAME = "same"
    NEXT = "next"
    SAME_OR_NEXT = "same or next"
    ANY = "any"  # ENDING and FINISHED carry no step


# (from, to) -> (step relation, why). A "why" names a write left out: the position the move skips.
TRANSITIONS: dict[tuple[Stage, Stage], tuple[Step, str]] = {
    (Stage.PENDING, Stage.QUEUED): (
        Step.NONE,
        "the concurrency cap is reached (the requester may run it), or the run is paused",
    ),
    (Stage.PENDING, Stage.STARTED): (Step.NONE, "the run starts"),
    (Stage.PENDING, Stage.PLANNED): (
        Step.FIRST,
        "the Running write rides on the first plan write (no probes, no concurrency cap)",
    ),
    (Stage.PENDING, Stage.REVERTED): (Step.FIRST, "the Running write rides on a dry run's first step record"),
    (Stage.PENDING, Stage.FINISHED): (
        Step.NONE,
        "the run cannot start (scenario missing or invalid, aborted, or Forbidden: its requester lacks a right); "
        "the write records status.requestedBy",
    ),
    (Stage.QUEUED, Stage.QUEUED): (Step.NONE, "the reason the run waits changed: queued, then paused, or back"),
    (Stage.QUEUED, Stage.STARTED): (Step.NONE, "a slot is free, or the pause is over"),
    (Stage.QUEUED, Stage.FINISHED): (
        Step.NONE,
        "aborted or timed out while queued or paused, or Forbidden: each attempt checks the requester's rights again",
    ),
    (Stage.STARTED, Stage.STARTED): (
        Step.NONE,
        "waiting for a target lock: the message changed; or a workflow run's nodes changed",
    ),
    (Stage.STARTED, Stage.BASELINED): (Step.NONE, "the baseline probes passed"),
    (Stage.STARTED, Stage.PLANNED): (Step.FIRST, "no probes: no baseline to record"),
    (Stage.STARTED, Stage.REVERTED): (Step.FIRST, "no probes, and the first step is a dry run"),
    (Stage.STARTED, Stage.FINISHED): (Step.NONE, "the baseline failed, no targets, or a stop"),
    (Stage.STARTED, Stage.ENDING): (
        Step.NONE,
        "a workflow run ended while nodes were active: it waits for their children to revert and end",
    ),
    (Stage.BASELINED, Stage.BASELINED): (Step.NONE, "waiting for a target lock: the message changed"),
    (Stage.BASELINED, Stage.PLANNED): (Step.FIRST, "the first step's changes are recorded"),
    (Stage.BASELINED, Stage.REVERTED): (Step.FIRST, "the first step is a dry run"),
    (Stage.BASELINED, Stage.FINISHED): (Step.NONE, "no targets, or a stop"),
    (Stage.PLANNED, Stage.PLANNED): (
        Step.SAME,
        "an apply failed for now (the API server away): what did happen is written, the rest retried",
    ),
    (Stage.PLANNED, Stage.INJECTED): (Step.SAME, "every change of the step is applied"),
    (Stage.PLANNED, Stage.REVERTED): (
        Step.SAME,
        "a 0 s step without probes is reverted at once; the revert's write carries the injection",
    ),
    (Stage.PLANNED, Stage.ENDING): (
        Step.ANY,
        "a change failed for good (written with what did happen), or the run ended and a revert failed",
    ),
    (Stage.PLANNED, Stage.FINISHED): (Step.ANY, "the run ended; everything is reverted"),
    (Stage.INJECTED, Stage.INJECTED): (
        Step.SAME,
        "a revert failed: the ledger keeps what is undone; or probes took samples while the faults hold",
    ),
    (Stage.INJECTED, Stage.REVERTED): (Step.SAME, "the step's changes are reverted"),
    (Stage.INJECTED, Stage.ENDING): (Step.ANY, "the run ended and a revert failed"),
    (Stage.INJECTED, Stage.FINISHED): (Step.ANY, "the run ended; everything is reverted"),
    (Stage.REVERTED, Stage.REVERTED): (
        Step.SAME_OR_NEXT,
        "the next step is a dry run; or the same step, waiting for the next step's target lock",
    ),
    (Stage.REVERTED, Stage.PLANNED): (Step.NEXT, "the next step's changes are recorded"),
    (Stage.REVERTED, Stage.FINISHED): (
        Step.ANY,
        "the last step's Reverted write rides on the final write when there are no probes",
    ),
    (Stage.ENDING, Stage.ENDING): (Step.ANY, "a revert failed again"),
    (Stage.ENDING, Stage.FINISHED): (Step.ANY, "every change is reverted: the run ends"),
}


# The one status write that is not a move: ``RunState.record_notifications`` writes status.notifications alone (a
# webhook delivery's outcome, engine/notifications.py), at any position: it holds no field ``position_of`` reads,
# so it cannot move the run. The Pending records themselves ride on the moves above (Running, the terminal write).
NOTIFICATION_WRITE = "status.notifications alone: a delivery's outcome; the position stays"

# Moves only a workflow run makes (engine/workflow/): tests/unit/test_workflow_resume.py crashes after them. A
# workflow run has no steps, so its status always reads STARTED while it runs (baseline checked or not).
WORKFLOW_ONLY = frozenset({(Stage.STARTED, Stage.ENDING)})


def allowed(before: Position, after: Position) -> bool:
    """Whether a status write may move the run from ``before`` to ``after``."""
    key = (before.stage, after.stage)
    if key not in TRANSITIONS:
        return False
    relation, _ = TRANSITIONS[key]
    if relation is Step.SAME_OR_NEXT:
        return after.step in (before.step, before.step + 1)
    if relation is Step.FIRST:
        return after.step == 0
    if relation is Step.SAME:
        return after.step == before.step
    if relation is Step.NEXT:
        return after.step == before.step + 1
    return True
