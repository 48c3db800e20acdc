"""The one object every part of a run shares: what the run is, its status (the ledger), and how it is written."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import API_VERSION, ChaosScenarioSpec, Phase, TestRunSpec, TestRunStatus
from coordinator.domain import conditions as cond
from coordinator.domain.runs import RunInfo
from coordinator.domain.verdict import scenario_ref
from coordinator.engine.clock import SYSTEM_CLOCK, Clock
from coordinator.engine.events import post_event
from coordinator.engine.pausing import PAUSES, Pause, run_scope
from coordinator.engine.run.errors import IllegalTransition, RunEnded, RunInterrupted
from coordinator.engine.run.stages import Position, allowed, position_of
from coordinator.faults.base import RunIdentity
from coordinator.settings import Settings

log = logging.getLogger(__name__)

ABORT_ANNOTATION = "chaos.coordinator.dev/abort"
# Fields that go back to "none" (the step once the run ends, a score the end withdraws) are written as null: a
# merge patch keeps what it is not told.
CLEARED_WHEN_NONE = ("step", "resilienceScore", "ending")


@dataclass
class RunHandle:
    """What the machine needs from the kopf layer: the live object and a way to ask whether to stop."""

    body: Mapping[str, Any]  # kopf's live view: spec and annotations update while the run executes
    stopped: Callable[[], bool]


def abort_requested(body: Mapping[str, Any]) -> bool:
    """spec.abort, or the abort annotation, on the TestRun ``body``."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    return bool((body.get("spec") or {}).get("abort")) or annotations.get(ABORT_ANNOTATION) == "true"


class RunState:
    """A TestRun being executed: its identity, spec and status, the scenario it runs, and the status writes.

    ``status`` is the run's only memory. ``persist`` writes it whole, and checks that the write is a move the
    transition table (``stages.TRANSITIONS``) allows from the position of the previous write.
    """

    def __init__(
        self,
        client: KubeApi,
        settings: Settings,
        handle: RunHandle,
        stored: Mapping[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        source = stored if stored is not None else handle.body
        meta = source["metadata"]
        self.client = client
        self.settings = settings
        self.handle = handle
        self.clock = clock
        self.run = RunIdentity(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
        self.generation = int(meta.get("generation") or 1)
        self.metadata = dict(meta)
        self.spec_body = dict(source.get("spec") or {})
        self.spec = TestRunSpec.model_validate(self.spec_body)
        self.status = TestRunStatus.model_validate(source.get("status") or {})
        self.scenario: ChaosScenarioSpec | None = None  # set by admission or from the snapshot
        self.position: Position = position_of(self.status)  # as last written
        self.doing = "start"  # where the run is, for the message of an error nobody expected
        self.lease_check: Callable[[], None] = lambda: None  # raises RunEnded when a held target lock lapsed

    # --- who and what ---------------------------------------------------------------------------------------

    @property
    def scenario_ref(self) -> str:
        if self.spec.workflowRef is not None:
            return f"{self.run.namespace}/{self.spec.workflowRef.name}"
        return scenario_ref(self.spec_body, self.run.namespace)

    @property
    def scenario_namespace(self) -> str:
        return (self.status.scenario or self.run.ref).split("/")[0]

    @property
    def info(self) -> RunInfo:
        return RunInfo(self.run.namespace, self.run.name, self.run.uid, self.status.scenario or self.scenario_ref)

    @property
    def run_object(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "TestRun",
            "metadata": {"name": self.run.name, "namespace": self.run.namespace, "uid": self.run.uid},
        }

    @property
    def scope(self) -> frozenset[str]:
        """The namespaces the run touches (a pause on any of them stops it); the targets' once the scenario is read."""
        target = self.scenario.target if self.scenario is not None else None
        return run_scope(self.run.namespace, self.scenario_namespace, target)

    def paused_by(self) -> Pause | None:
        """The pause (chaos.coordinator.dev/paused) that stops this run, if any: no request, the operator's board."""
        return PAUSES.pausing(self.scope)

    def need_scenario(self) -> ChaosScenarioSpec:
        if self.scenario is None:
            raise RunEnded(Phase.ERROR, "StatusLost", "the run has no scenario loaded; cannot resume")
        return self.scenario

    # --- writing -------------------------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """The status patch ``persist`` sends."""
        self.status.observedGeneration = self.generation
        status = self.status.model_dump(mode="json", exclude_none=True)
        for name in CLEARED_WHEN_NONE:
            if getattr(self.status, name) is None:
                status[name] = None
        return {"status": status}

    async def persist(self) -> None:
        """Write the whole status (lists replace wholesale under a merge patch)."""
        after = position_of(self.status)
        if not allowed(self.position, after):
            raise IllegalTransition(f"status write from {self.position} to {after} is not in the transition table")
        try:
            await self.client.patch(resource_path("TestRun", self.run.namespace, self.run.name, "status"), self.body())
        except ApiError as exc:
            if exc.not_found:
                raise RunInterrupted("the TestRun is gone") from exc
            raise
        self.position = after

    async def record_notifications(self) -> None:
        """Write ``status.notifications`` alone: a delivery's outcome, which never moves the run (the one status
        write outside the transition table, stages.NOTIFICATION_WRITE: it holds no field ``position_of`` reads).

        A merge patch replaces the list wholesale, and a delivery can outlive the machine that started it (a retry
        builds a new one): the stored list is read and only this state's ended deliveries are put into it, so no
        other record is lost or set back to Pending."""
        path = resource_path("TestRun", self.run.namespace, self.run.name)
        try:
            stored = await self.client.get(path)
        except ApiError as exc:
            if exc.not_found:  # a deleted TestRun needs no record
                return
            raise
        if stored["metadata"].get("uid") != self.run.uid:
            return
        ended = {(r.name, str(r.event)): r for r in self.status.notifications if r.state != "Pending"}
        records: list[Any] = []
        for raw in (stored.get("status") or {}).get("notifications") or []:
            ours = ended.pop((raw.get("name"), raw.get("event")), None)
            records.append(ours.model_dump(mode="json", exclude_none=True) if ours is not None else raw)
        records += [r.model_dump(mode="json", exclude_none=True) for r in ended.values()]
        try:
            status = resource_path("TestRun", self.run.namespace, self.run.name, "status")
            await self.client.patch(status, {"status": {"notifications": records}})
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def event(self, reason: str, message: str, warning: bool = False) -> None:
        await post_event(self.client, self.run_object, reason, message, "Warning" if warning else "Normal")

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, status, reason, message, self.generation
        )

    # --- whether to go on ----------------------------------------------------------------------------------

    def deadline_passed(self) -> bool:
        return self.status.deadline is not None and self.clock.now() >= self.status.deadline

    def check_stop(self) -> None:
        """Raise if the run must stop now: operator stopping, a lapsed target lock, abort, a pause, or the deadline.

        A pause ends a started run (Cancelled, reason Paused); a run not started yet waits instead (admission).
        """
        if self.handle.stopped():
            raise RunInterrupted("operator stopping or TestRun deleted")
        self.lease_check()
        if abort_requested(self.handle.body):
            raise RunEnded(Phase.CANCELLED, "Aborted", "aborted on request; every fault was reverted")
        if self.status.phase == Phase.RUNNING and (pause := self.paused_by()) is not None:
            raise RunEnded(Phase.CANCELLED, "Paused", pause.ending_message())
        if self.deadline_passed():
            raise RunEnded(Phase.TIMED_OUT, "TimedOut", f"the run exceeded spec.timeout ({self.spec.timeout})")
