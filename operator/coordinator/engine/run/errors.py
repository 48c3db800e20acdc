"""How a sub-step tells the run machine what happened: the run ended, the process stops, or try again later."""

from __future__ import annotations

from coordinator.adapters.kube import ApiError
from coordinator.api.models import Phase
from coordinator.domain.selection import SelectionError
from coordinator.faults.base import FaultError
from coordinator.probes.base import ProbeRefused

WAITING_REASON = "WaitingForTarget"


class RunEnded(Exception):
    """Stop the state machine: revert everything and end in ``phase``."""

    def __init__(self, phase: Phase, reason: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase
        self.reason = reason
        self.message = message


class RunInterrupted(Exception):
    """The operator is stopping (shutdown or the TestRun's deletion): leave state as it is for whoever resumes."""


class RetryLater(Exception):
    """A transient problem (API server unavailable, a revert that failed); the handler retries with a delay."""


class Waiting(RetryLater):
    """The run waits its turn (the concurrency cap, a target another run holds): a queue, not a failure; retried
    at a steady pace and logged at INFO."""


class WaitingForTarget(Waiting):
    """The step's targets are held by another run, or the lock store cannot be asked: a queue, not a fault."""


class IllegalTransition(Exception):
    """A status write that the transition table does not allow: a bug in the machine, never a user's error."""


def ending_of(exc: BaseException) -> RunEnded | None:
    """The end a sub-step's failure means for the run: a fault's, a selection's or a probe's refusal ends it
    Error (reason: the exception's name without "Error"); None for anything else."""
    if isinstance(exc, RunEnded):
        return exc
    if isinstance(exc, FaultError | SelectionError | ProbeRefused):
        return RunEnded(Phase.ERROR, type(exc).__name__.removesuffix("Error") or "Error", str(exc))
    return None


def is_transient(exc: ApiError) -> bool:
    """An API failure worth retrying: throttled, the server unavailable, or a conflicting write."""
    return exc.status in (409, 429, 500, 502, 503, 504)
