"""The TestRun state machine, persisted in the TestRun's status so any operator process can resume it.

Per step: select targets -> write the planned changes to status (the ledger) -> per change: annotate the target,
apply -> hold for the step's duration -> revert -> next step. Each transition is written to status before the
next action, so a restarted operator resumes where the last one stopped: it never repeats an injection (every
apply is idempotent and guarded by the ledger) and never forgets one (the ledger and the target annotations
both name it). Abort, timeout and deletion revert every change in the ledger, newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordinator.adapters.kube import ApiError, KubeClient, resource_path
from coordinator.api.models import (
    TERMINAL_PHASES,
    ChaosScenarioSpec,
    Fault,
    HistorySync,
    Injection,
    InjectionState,
    Parameter,
    Phase,
    RunEnding,
    StepOutcome,
    StepRecord,
    TargetRef,
    TestRunSpec,
    TestRunStatus,
)
from coordinator.api.probes import ProbeMode
from coordinator.domain import conditions as cond
from coordinator.domain.durations import format_duration, parse_duration
from coordinator.domain.fieldpaths import validation_problem
from coordinator.domain.parameters import REFERENCE, ParameterError, render, resolve_parameters
from coordinator.domain.selection import SelectionError
from coordinator.domain.timestamps import format_iso, now_iso, parse_iso
from coordinator.domain.verdict import evaluate_assertion, failed_probe, pass_rate, resilience_score, scenario_ref
from coordinator.engine import observers
from coordinator.engine.events import post_event, target_object
from coordinator.engine.probing import ProbeReach, ProbeSession, RecoveryTracker
from coordinator.engine.targets import NamespacePolicy, resolve_targets
from coordinator.faults import driver_for
from coordinator.faults.base import (
    FaultContext,
    FaultError,
    ProtectedTargetError,
    RunIdentity,
    TargetHeld,
    annotation_key,
    claim_target,
    clear_on_target,
)
from coordinator.history.redis import LockLease, LockRefused, LockStoreUnavailable, TargetLocks
from coordinator.probes.base import ProbeRefused
from coordinator.settings import Settings

log = logging.getLogger(__name__)

ABORT_ANNOTATION = "chaos.coordinator.dev/abort"
MAX_ERROR_TEXT = 300  # characters of an unexpected error's own text in status.message
# Held while a run checks the global cap and writes Running (see Executor.admit).
_ADMISSION = asyncio.Lock()
MAX_LISTED_TARGETS = 100
APPLY_PARALLELISM = 32  # changes of one step in flight at once (the client's QPS limit still applies)
# Events on the targets themselves (ChaosInjected/ChaosReverted), per step: a step over 1,000 pods would otherwise
# double its API requests with Events nobody reads one by one. The TestRun's own Events give the totals.
MAX_TARGET_EVENTS = 100
SNAPSHOT_KEY = "scenarioSnapshot"


# Writes a finished TestRun (as its final write will leave it) to the history store; returns status.history or None.
Mirror = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any] | None]]


class RunEnded(Exception):
    """Stop the state machine: revert everything and end in ``phase`` (unless ``revert`` is False)."""

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


WAITING_REASON = "WaitingForTarget"


@dataclass
class RunHandle:
    """What the executor needs from the kopf layer: the live object and a way to ask whether to stop."""

    body: Mapping[str, Any]  # kopf's live view: spec and annotations update while the run executes
    stopped: Callable[[], bool]


def abort_requested(body: Mapping[str, Any]) -> bool:
    """spec.abort, or the abort annotation, on the TestRun ``body``."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    return bool((body.get("spec") or {}).get("abort")) or annotations.get(ABORT_ANNOTATION) == "true"


def deadline_passed(deadline: str | None) -> bool:
    return bool(deadline) and parse_iso(now_iso()) >= parse_iso(str(deadline))


def describe(target: TargetRef) -> str:
    where = f"{target.namespace}/{target.name}" if target.namespace else target.name
    return f"{target.kind} {where}"


def _is_transient(exc: ApiError) -> bool:
    return exc.status in (429, 500, 502, 503, 504) or exc.status == 409


def render_scenario(run: str, scenario: str, raw: Mapping[str, Any], overrides: Mapping[str, object]) -> dict[str, Any]:
    """The scenario spec ``raw`` with the run's parameters filled in.

    Raises RunEnded (Error, reason InvalidParameters) naming every problem with its object and field: the run's
    ``spec.parameters.<name>`` or the scenario's field holding a bad reference or default. A spec whose
    declarations are themselves malformed is returned as it is, for the model validation to report.
    """
    try:
        declared = [Parameter.model_validate(item) for item in raw.get("parameters") or []]
    except (ValidationError, TypeError, AttributeError):
        return dict(raw)
    try:
        return render(raw, resolve_parameters(declared, overrides))
    except ParameterError as exc:
        owned = [f"{run if p.field.startswith('spec.parameters.') else scenario}: {p}" for p in exc.problems]
        raise RunEnded(Phase.ERROR, "InvalidParameters", "; ".join(owned)) from exc


def _reference_at(raw: Any, loc: tuple[int | str, ...]) -> str | None:
    """The parameter reference the raw spec held at ``loc`` (a pydantic error location), if any."""
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(node, str) and (match := REFERENCE.search(node)):
        return f"parameter {match.group(1)}"
    return None


CLEARED_WHEN_NONE = ("step", "resilienceScore", "ending")


class Executor:
    def __init__(
        self,
        client: KubeClient,
        settings: Settings,
        handle: RunHandle,
        stored: Mapping[str, Any] | None = None,
        locks: TargetLocks | None = None,
        mirror: Mirror | None = None,
    ) -> None:
        """``stored`` is the TestRun as last read from the API server (default: the handle's body); ``mirror``
        writes the finished run to the history store before its final status write (handlers/history.py)."""
        self.client = client
        self.settings = settings
        self.handle = handle
        source = stored if stored is not None else handle.body
        meta = source["metadata"]
        self.run = RunIdentity(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
        self.generation = int(meta.get("generation") or 1)
        self.spec = TestRunSpec.model_validate(source.get("spec") or {})
        self.status = TestRunStatus.model_validate(source.get("status") or {})
        self.policy = NamespacePolicy(client, settings)
        self.scenario: ChaosScenarioSpec | None = None
        self.probes: ProbeSession | None = None
        self.locks = locks
        self.mirror = mirror
        self.spec_body = dict(source.get("spec") or {})
        self.metadata = dict(meta)
        self._trackers: dict[int, RecoveryTracker] = {}
        self.doing = "start"  # where the run is, for the message of an error nobody expected
        self._lease: LockLease | None = None  # the step's target lock while it is held (see target_lock)

    # --- plumbing ------------------------------------------------------------------------------------------

    @property
    def info(self) -> observers.RunInfo:
        return observers.RunInfo(
            self.run.namespace, self.run.name, self.run.uid, self.status.scenario or self.scenario_ref
        )

    @property
    def scenario_ref(self) -> str:
        return scenario_ref(self.spec_body, self.run.namespace)

    @property
    def _run_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "TestRun",
            "metadata": {"name": self.run.name, "namespace": self.run.namespace, "uid": self.run.uid},
        }

    async def persist(self) -> None:
        """Write the whole status (lists replace wholesale under a merge patch)."""
        self.status.observedGeneration = self.generation
        body = {"status": self.status.model_dump(mode="json", exclude_none=True)}
        # Fields that go back to "none" (the step once the run ends, a score the end withdraws) must be written
        # as null: a merge patch keeps what it is not told.
        for name in CLEARED_WHEN_NONE:
            if getattr(self.status, name) is None:
                body["status"][name] = None
        try:
            await self.client.patch(resource_path("TestRun", self.run.namespace, self.run.name, "status"), body)
        except ApiError as exc:
            if exc.not_found:
                raise RunInterrupted("the TestRun is gone") from exc
            raise

    async def event(self, reason: str, message: str, warning: bool = False) -> None:
        await post_event(self.client, self._run_object, reason, message, "Warning" if warning else "Normal")

    def _condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, status, reason, message, self.generation
        )

    def check_stop(self) -> None:
        """Raise if the run must stop now: operator stopping, abort requested, or the deadline passed."""
        if self.handle.stopped():
            raise RunInterrupted("operator stopping or TestRun deleted")
        self.check_lease()
        if abort_requested(self.handle.body):
            raise RunEnded(Phase.CANCELLED, "Aborted", "aborted on request; every fault was reverted")
        if deadline_passed(self.status.deadline):
            raise RunEnded(Phase.TIMED_OUT, "TimedOut", f"the run exceeded spec.timeout ({self.spec.timeout})")

    # --- the state machine ---------------------------------------------------------------------------------

    def _unexpected(self, exc: Exception) -> str:
        """The message of an error no sub-step expected: where the run was, what was raised, and the line that
        raised it (logged once at ERROR: a bug to report, not a state to retry)."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        origin = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
        text = str(exc)[:MAX_ERROR_TEXT]
        message = f"{self.doing}: unexpected {type(exc).__name__}: {text}{origin}; every change was reverted"
        log.error("TestRun %s ended Error: %s", self.run.ref, message)
        log.debug("TestRun %s: the unexpected error", self.run.ref, exc_info=exc)
        return message

    async def execute(self) -> None:
        """Drive the run to a terminal phase (or until interrupted, leaving a resumable status).

        Every exception a sub-step raises ends here as a result: RunEnded as it says, a fault's or selection's
        failure as Error, a transient API failure as RetryLater (the caller retries with backoff; abort and the
        deadline are checked before anything else on every attempt), anything else as Error InternalError. Each
        way out through ``finish`` reverts every change first.
        """
        if self.status.phase in TERMINAL_PHASES:
            return
        try:
            try:
                if self.status.ending is not None:  # ended already; only its revert is left
                    with contextlib.suppress(RunEnded, ValueError):
                        self.load_snapshot()
                    ending = self.status.ending
                    raise RunEnded(Phase(ending.phase), ending.reason, ending.message)
                if self.status.phase in (None, Phase.PENDING):
                    self.doing = "start"
                    await self.start()
                self.doing = "status.scenarioSnapshot"
                self.load_snapshot()
                # On every attempt, before anything that failed last time can fail again.
                self.check_stop()
                assert self.scenario is not None
                self.doing = "spec.steadyState"
                self.open_probes()
                await self.baseline()
                for index in range(self.status.currentStep or 0, len(self.scenario.steps)):
                    self.status.currentStep = index
                    self.status.step = f"{index + 1}/{len(self.scenario.steps)} {self.scenario.steps[index].name}"
                    self.doing = f"spec.steps[{index}] ({self.scenario.steps[index].name})"
                    await self.run_step(index)
                self.status.currentStep = len(self.scenario.steps)
                self.doing = "the checks after the last step"
                await self.after_checks()
                raise self.verdict()
            except (FaultError, SelectionError, ProbeRefused) as exc:
                phase = Phase.ERROR
                raise RunEnded(phase, type(exc).__name__.removesuffix("Error") or "Error", str(exc)) from exc
            except (RunEnded, RunInterrupted, RetryLater, ApiError):
                raise
            except Exception as exc:
                # The run's boundary: whatever else a sub-step raises ends the run Error, with every change
                # reverted, instead of a retry loop that keeps the faults in place.
                raise RunEnded(Phase.ERROR, "InternalError", self._unexpected(exc)) from exc
        except RunEnded as end:
            await self.finish(end)
        except ApiError as exc:
            if _is_transient(exc):
                raise RetryLater(str(exc)) from exc
            await self.finish(RunEnded(Phase.ERROR, "ApiError", f"Kubernetes API: {exc}"))
        finally:
            if self.probes is not None:
                await self.probes.close()

    # --- probes --------------------------------------------------------------------------------------------

    def open_probes(self) -> None:
        assert self.scenario is not None
        declared = self.scenario.steadyState.probes if self.scenario.steadyState else []
        if not declared:
            return
        namespace = (self.status.scenario or self.run.ref).split("/")[0]
        self.probes = ProbeSession(
            self.client,
            declared,
            namespace,
            self.settings.prometheus_url,
            reach=ProbeReach.of(self.settings),
            owner=f"ChaosScenario {self.status.scenario or self.scenario_ref}",
        )
        for result in self.status.probes:  # counts from an earlier operator process
            if result.name in self.probes.stats:
                self.probes.stats[result.name].restore(result)

    def _probe_results(self) -> None:
        if self.probes is not None:
            self.status.probes = [s.to_result() for s in self.probes.stats.values()]
            injected = any(i.appliedAt is not None for i in self.status.injections)
            self.status.resilienceScore = resilience_score(
                self.probes.stats.values(), self.status.assertions, injected=injected
            )

    async def baseline(self) -> None:
        """before/edge probes must pass before anything is injected; a failing baseline ends the run Failed."""
        extra = self.status.model_extra or {}
        if self.probes is None or extra.get("baselineChecked"):
            return
        checks = await self.probes.point_check({ProbeMode.BEFORE, ProbeMode.EDGE})
        self.status.baselineChecked = True  # type: ignore[attr-defined]
        self._probe_results()
        failed = [c for c in checks if not c.ok]
        if failed:
            names = ", ".join(f"{c.probe.name} ({c.message})" for c in failed)
            raise RunEnded(Phase.FAILED, "BaselineFailed", f"steady state not met before any fault: {names}")
        await self.persist()

    async def after_checks(self) -> None:
        if self.probes is None:
            return
        await self.probes.point_check({ProbeMode.AFTER, ProbeMode.EDGE})
        self._probe_results()

    def verdict(self) -> RunEnded:
        """Passed, or Failed naming the first failing probe or assertion."""
        assert self.scenario is not None
        recoveries = [r.recoveryTimeSeconds for r in self.status.steps if r.recoveryTimeSeconds is not None]
        self.status.recoveryTimeSeconds = max(recoveries) if recoveries else None
        stats = self.probes.stats if self.probes is not None else {}
        self.status.assertions = [
            evaluate_assertion(a, stats, self.status.recoveryTimeSeconds) for a in self.scenario.assertions
        ]
        self._probe_results()
        bad_probe = failed_probe(stats.values())
        if bad_probe is not None:
            return RunEnded(
                Phase.FAILED, "ProbeFailed", f"probe {bad_probe.name} failed: {bad_probe.last_error or 'failed'}"
            )
        bad = next((a for a in self.status.assertions if not a.passed), None)
        if bad is not None:
            return RunEnded(
                Phase.FAILED,
                "AssertionFailed",
                f"assertion {bad.name} ({bad.type}) failed: expected {bad.expected}, got {bad.actual}"
                + (f" — {bad.message}" if bad.message else ""),
            )
        return RunEnded(Phase.PASSED, "Completed", self._summary())

    async def hold(self, index: int, until: str) -> None:
        """Keep the step's faults in place until ``until``, sampling probes and tracking recovery meanwhile."""
        record = self.status.steps[index]
        target = parse_iso(until).timestamp()
        started = parse_iso(self.status.startedAt or now_iso()).timestamp()
        tracker = self._trackers.get(index)
        if tracker is None and self.probes is not None and record.injectedAt:
            applied = [
                parse_iso(i.appliedAt).timestamp() for i in self.status.injections if i.step == index and i.appliedAt
            ]
            tracker = self._trackers[index] = RecoveryTracker(started=min(applied, default=time.time()))
        while True:
            self.check_stop()
            now = time.time()
            if now >= target:
                return
            if self.probes is not None:
                stopping = await self.probes.tick(faults_active=True, started=started)
                if stopping is not None:
                    stats = self.probes.stats[stopping.name]
                    raise RunEnded(
                        Phase.FAILED,
                        "ProbeFailed",
                        f"probe {stopping.name} failed ({stats.last_error}) with stopOnFailure: every fault reverted",
                    )
                if tracker is not None and tracker.recovered_at is None:
                    tracker.observe(await self.probes.all_pass(), time.time())
            # Probes are sampled and recovery timed every recovery_interval; a run without probes only needs to
            # notice a stop, an abort or its deadline (poll_interval), so 100 runs holding faults stay cheap.
            interval = self.settings.recovery_interval if self.probes else self.settings.poll_interval
            await asyncio.sleep(min(max(target - time.time(), 0), interval))

    async def await_recovery(self, index: int) -> None:
        """After a step's revert, watch until every probe passes again (or the run's deadline passes).

        A revert can itself disturb the system (scaling back up needs new pods to become ready), so the steady
        state is checked again here even when the faults showed no impact while they held.
        """
        tracker = self._trackers.get(index)
        if self.probes is None or tracker is None:
            return
        while True:
            self.check_stop()
            healthy = await self.probes.all_pass()
            tracker.observe(healthy, time.time())
            if healthy:
                break
            await asyncio.sleep(self.settings.recovery_interval)
        self.status.steps[index].recoveryTimeSeconds = tracker.seconds

    async def start(self) -> None:
        ref = self.spec.scenarioRef
        namespace = ref.namespace or self.run.namespace
        where = f"TestRun {self.run.ref}"
        if namespace != self.run.namespace:
            allowed, reason = await self.policy(namespace)
            if not allowed:
                raise RunEnded(Phase.ERROR, "ScenarioNotAllowed", f"{where}: spec.scenarioRef.namespace: {reason}")
        try:
            obj = await self.client.get(resource_path("ChaosScenario", namespace, ref.name))
        except ApiError as exc:
            if exc.not_found:
                raise RunEnded(
                    Phase.ERROR,
                    "ScenarioNotFound",
                    f"{where}: spec.scenarioRef.name: ChaosScenario {namespace}/{ref.name} not found",
                ) from exc
            raise
        raw = obj.get("spec") or {}
        rendered = render_scenario(where, f"ChaosScenario {namespace}/{ref.name}", raw, self.spec.parameters)
        try:
            scenario = ChaosScenarioSpec.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors()[0]
            field, problem = validation_problem(first)
            reference = _reference_at(raw, first["loc"])
            raise RunEnded(
                Phase.ERROR,
                "InvalidParameters" if reference else "InvalidScenario",
                f"ChaosScenario {namespace}/{ref.name}: {field}: {problem}"
                + (f" (the value of {reference})" if reference else ""),
            ) from exc
        for index, step in enumerate(scenario.steps):
            for f_index, fault in enumerate(step.faults):
                driver = driver_for(fault.type)
                if str(scenario.target.kind) not in driver.kinds:
                    raise RunEnded(
                        Phase.ERROR,
                        "InvalidScenario",
                        f"ChaosScenario {namespace}/{ref.name}: spec.steps[{index}].faults[{f_index}].type: "
                        f"{fault.type} acts on {'/'.join(sorted(driver.kinds))}, not spec.target.kind "
                        f"{scenario.target.kind}",
                    )
        # Admission and the Running write happen under one lock, so two runs cannot both take the last slot.
        async with _ADMISSION:
            await self.admit()
            started = now_iso()
            timeout = parse_duration(self.spec.timeout)
            self.status.phase = Phase.RUNNING
            self.status.reason = "Started"
            self.status.message = f"running scenario {namespace}/{ref.name}"
            self.status.scenario = f"{namespace}/{ref.name}"
            self.status.scenarioGeneration = int(obj["metadata"].get("generation") or 1)
            self.status.startedAt = started
            self.status.deadline = format_iso(parse_iso(started) + timedelta(seconds=timeout))
            self.status.currentStep = 0
            self.status.targets = 0
            self.status.steps = [StepRecord(name=s.name) for s in scenario.steps]
            # The run keeps the scenario it started with (parameters filled in): editing the scenario mid-run
            # does not change this run.
            self.status.scenarioSnapshot = json.dumps(scenario.model_dump(mode="json", exclude_none=True))
            self.status.conditions = cond.running_conditions(self.status.conditions, self.generation)
            # The Running write goes out at once when the concurrency cap counts it, or when probes will take a
            # while before the first plan; otherwise it rides on the step's plan write, which comes next (one
            # status write fewer per run; a crash before it leaves the run Pending, with nothing touched).
            if self.settings.max_concurrent_runs or scenario.steadyState or not scenario.steps:
                await self.persist()
        observers.notify("run_started", self.info)
        await self.event("Started", f"running scenario {namespace}/{ref.name}")

    async def admit(self) -> None:
        """Keep the run Pending (reason Queued) while COORDINATOR_MAX_CONCURRENT_RUNS runs are Running.

        Raises RetryLater while queued; the kopf layer retries, so the run starts once a slot is free. An abort
        is honoured while queued. Admission is serialised within this process (``_ADMISSION``); the count covers
        the watched namespaces (cluster-wide when they are patterns or all), read from the API server.
        """
        cap = self.settings.max_concurrent_runs
        if not cap:
            return
        self.check_stop()
        watched = self.settings.watched
        if watched and not self.settings.watches_patterns:
            # A single-namespace install may not list TestRuns cluster-wide (its Role covers only its namespaces).
            runs = [run for ns in watched for run in await self.client.list(resource_path("TestRun", ns))]
        else:
            runs = await self.client.list(resource_path("TestRun"))
        running = sum(
            1
            for run in runs
            if (run.get("status") or {}).get("phase") == Phase.RUNNING and run["metadata"].get("uid") != self.run.uid
        )
        if running < cap:
            return
        message = f"queued: {running} TestRun(s) are Running and COORDINATOR_MAX_CONCURRENT_RUNS is {cap}"
        if self.status.reason != "Queued":
            self.status.phase = Phase.PENDING
            self.status.reason = "Queued"
            self.status.message = message
            await self.persist()
            await self.event("Queued", message)
        raise Waiting(message)

    def load_snapshot(self) -> None:
        raw = self.status.scenarioSnapshot
        if raw is None:
            raise RunEnded(Phase.ERROR, "StatusLost", "status.scenarioSnapshot is missing; cannot resume")
        self.scenario = ChaosScenarioSpec.model_validate(json.loads(raw))

    def _fault(self, injection: Injection) -> Fault:
        assert self.scenario is not None
        return self.scenario.steps[injection.step].faults[injection.faultIndex]

    def _context(self, step: int) -> FaultContext:
        return FaultContext(
            client=self.client,
            run=self.run,
            protected=self.settings.protected,
            step_index=step,
            namespace_policy=self.policy,
            step_duration=parse_duration(self.scenario.steps[step].duration) if self.scenario else None,
            agent_image=self.settings.agent_image,
            agent_start_timeout=self.settings.agent_start_timeout,
            agent_poll_interval=min(self.settings.poll_interval, 1.0),
        )

    async def run_step(self, index: int) -> None:
        assert self.scenario is not None
        step = self.scenario.steps[index]
        record = self.status.steps[index]
        if record.outcome in (StepOutcome.REVERTED, StepOutcome.DRY_RUN, StepOutcome.SKIPPED):
            return
        self.check_stop()
        ctx = self._context(index)
        fresh: list[Injection] | None = None
        if record.outcome == StepOutcome.PENDING and not any(i.step == index for i in self.status.injections):
            fresh = await self.plan_step(index)
            if fresh is None:
                return  # dry run
        entries = fresh if fresh is not None else [i for i in self.status.injections if i.step == index]
        # The lock covers planning too: what a change must restore is read while no other run holds the target.
        async with self.target_lock(index, entries):
            if fresh is not None:
                # The ledger reaches the API server before any target is touched.
                self.status.injections += fresh
                record.message = f"{len(fresh)} change(s) planned on {record.targetCount} target(s)"
                await self.persist()
            if record.outcome == StepOutcome.PENDING:
                await self.apply_step(index, ctx)
            await self.hold(index, record.endsAt or now_iso())
            await self.revert(lambda i: i.step == index)
        record.outcome = StepOutcome.REVERTED
        record.revertedAt = now_iso()
        await self.await_recovery(index)
        self._probe_results()
        self._condition(cond.FAULTS_REVERTED, True, "Reverted", f"step {step.name} reverted")
        # After the last step of a run without probes the final write follows at once and carries this too. A
        # crash in between only means the (idempotent) revert runs again on resume.
        if index < len(self.scenario.steps) - 1 or self.probes is not None:
            await self.persist()
        # An Event only when something was put back: pod kills and restarts leave nothing to revert.
        reverted = sum(1 for i in self.status.injections if i.step == index and i.state == InjectionState.REVERTED)
        if reverted:
            await self.event("Reverted", f"step {step.name}: {reverted} change(s) reverted")

    @contextlib.asynccontextmanager
    async def target_lock(self, index: int, entries: list[Injection]) -> AsyncIterator[None]:
        """Hold the step's targets so no other run injects into them meanwhile (unless the scenario allows it).

        A refused lock changes nothing (the step's plan is not written), and the run retries later: a queue, not
        a failure. The lock's owner is the run, so the same run resuming after a crash gets its targets back.
        """
        assert self.scenario is not None
        keys = sorted(
            {
                f"{i.target.kind}/{i.target.namespace or ''}/{i.target.name}"
                for i in entries
                if i.target.kind != "NetworkPolicy"
            }
        )
        if self.locks is None or not keys or self.scenario.allowConcurrentTargets:
            yield
            return
        ttl = max(15.0, 3 * self.settings.poll_interval)
        step = self.scenario.steps[index].name
        try:
            async with self.locks.hold(keys, ttl, owner=self.run.uid) as lease:
                self._lease = lease
                if self.status.reason == WAITING_REASON:  # said while waiting; the plan or apply write clears it
                    self.status.reason, self.status.message = "Started", f"step {step}: target lock taken"
                try:
                    yield
                finally:
                    self._lease = None
        except (LockRefused, TargetHeld) as exc:
            if isinstance(exc, LockRefused) and exc.holder == self.run.uid:
                message = f"step {step} waits for this run's previous lock on {exc.key} to expire"
            else:
                message = f"step {step} waits: {exc}"
            await self.say_waiting(message, store_down=isinstance(exc, LockStoreUnavailable))
            raise WaitingForTarget(message) from exc

    def check_lease(self) -> None:
        """A run whose target lock lapsed stops changing its targets and reverts (RunEnded)."""
        if self._lease is not None and self._lease.lapsed:
            raise RunEnded(
                Phase.ERROR,
                "TargetLockLost",
                f"the lock on {', '.join(self._lease.keys)} lapsed: {self._lease.why_lapsed()}; "
                "stopped injecting, every fault reverted",
            )

    async def say_waiting(self, message: str, store_down: bool) -> None:
        """Say in status why the run waits (once per message: a wait retried every few seconds writes nothing)."""
        if self.status.phase != Phase.RUNNING or self.status.message == message:
            return
        self.status.reason, self.status.message = WAITING_REASON, message
        with contextlib.suppress(ApiError):
            await self.persist()
        if store_down:
            await self.event(WAITING_REASON, message, warning=True)

    async def plan_step(self, index: int) -> list[Injection] | None:
        """Select targets and plan the step's changes (written to status by the caller); None for a dry run."""
        assert self.scenario is not None
        scenario = self.scenario
        step = scenario.steps[index]
        record = self.status.steps[index]
        selection = await resolve_targets(
            self.client,
            self.policy,
            scenario.target,
            (self.status.scenario or self.run.ref).split("/")[0],
            str(scenario.mode),
            scenario.value,
            self.spec.seed,
            reads_targets=any(driver_for(fault.type).reads_targets for fault in step.faults),
        )
        if not selection.targets:
            refused = f" ({'; '.join(selection.refused)})" if selection.refused else ""
            message = f"step {step.name}: spec.target matched no eligible {scenario.target.kind}{refused}"
            self._condition(cond.TARGETS_SELECTED, False, "NoTargets", message)
            raise RunEnded(Phase.FAILED, "NoTargets", message)
        refs = [t.ref for t in selection.targets]
        record.targets = refs[:MAX_LISTED_TARGETS]
        record.targetCount = len(refs)
        self.status.targets = (self.status.targets or 0) + len(refs)
        self._condition(
            cond.TARGETS_SELECTED, True, "Selected", f"step {step.name}: {len(refs)} of {selection.matched} matching"
        )
        planned: list[Injection] = []
        for f_index, fault in enumerate(step.faults):
            planned += driver_for(fault.type).plan(index, f_index, fault, selection.targets, self.run)
        if self.spec.dryRun:
            names = ", ".join(f"{r.namespace + '/' if r.namespace else ''}{r.name}" for r in refs[:10])
            faults = ", ".join(str(f.type) for f in step.faults)
            record.outcome = StepOutcome.DRY_RUN
            record.message = f"dry run: would apply {faults} as {len(planned)} change(s) to {names}"
            await self.persist()
            return None
        return planned

    async def apply_step(self, index: int, ctx: FaultContext) -> None:
        """Apply the step's recorded changes, ``APPLY_PARALLELISM`` in flight at a time (each is already in the
        ledger and independent of the others: a step over 1,000 pods must not take 1,000 round trips in a row).

        A sliding window, not batches: a batch waited for its slowest request before the next one started. After
        the first failure (or a stop) no further change starts; those in flight finish, what happened is written
        down, then the run reacts.
        """
        assert self.scenario is not None
        step = self.scenario.steps[index]
        record = self.status.steps[index]
        ours = [i for i in self.status.injections if i.step == index]
        announced = {i.id for i in ours[:MAX_TARGET_EVENTS]}
        todo = [i for i in ours if i.state == InjectionState.RECORDED]
        window = asyncio.Semaphore(APPLY_PARALLELISM)
        halted = False

        async def apply(injection: Injection) -> None:
            nonlocal halted
            async with window:
                if halted:
                    return  # not started: stays Recorded, applied on a retry or reverted by the ending run
                try:
                    self.check_stop()
                    await self._apply_one(ctx, step.name, injection, announce=injection.id in announced)
                except BaseException:
                    halted = True
                    raise

        outcomes = await asyncio.gather(*(apply(i) for i in todo), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            cancelled = next((e for e in errors if isinstance(e, asyncio.CancelledError)), None)
            if cancelled is not None:
                raise cancelled
            # What did happen is written down before the run reacts to what did not.
            with contextlib.suppress(ApiError):
                await self.persist()
            raise next((e for e in errors if not isinstance(e, ApiError)), errors[0])
        duration = parse_duration(step.duration)
        injected = now_iso()
        record.outcome = StepOutcome.INJECTED
        record.injectedAt = injected
        record.endsAt = format_iso(parse_iso(injected) + timedelta(seconds=duration))
        notes = f"; {'; '.join(ctx.notes)}" if ctx.notes else ""
        if len(ours) > MAX_TARGET_EVENTS:
            notes += f"; Events on the first {MAX_TARGET_EVENTS} targets only"
        record.message = f"{len(step.faults)} fault(s) on {record.targetCount} target(s) for {step.duration}{notes}"
        self._condition(cond.FAULTS_INJECTED, True, "Injected", f"step {step.name}: {record.message}")
        # A step that holds for 0 s without probes is reverted at once, and the revert's write (or the run's final
        # write, after the last step) follows within milliseconds and carries this too: one status write fewer
        # per pod-kill run. A crash in between leaves the changes Recorded in the ledger, so the resumed run
        # applies them again, which every driver makes a no-op (pod kills by UID precondition), then reverts.
        if duration > 0 or self.probes is not None:
            await self.persist()
        await self.event("Injected", f"step {step.name}: {record.message}")

    async def _apply_one(self, ctx: FaultContext, step_name: str, injection: Injection, announce: bool) -> None:
        """One change: its record on the target, then the change itself; raises FaultError for a change that
        failed for good (the injection says why), ApiError for a transient failure (retried later)."""
        driver = driver_for(injection.fault)
        try:
            fault = self._fault(injection)
            if driver.reversible and not driver.creates_object(injection):
                exclusive = self.scenario is None or not self.scenario.allowConcurrentTargets
                await claim_target(ctx, injection, lambda obj: driver.original(fault, obj), exclusive)
            injection.state = await driver.apply(ctx, fault, injection)
        except (ProtectedTargetError, FaultError) as exc:
            injection.state = InjectionState.FAILED
            injection.message = str(exc)
            raise
        except ApiError as exc:
            if exc.not_found and injection.target.kind == "Pod":
                # The pod went away between selection and injection: nothing was changed.
                injection.state = InjectionState.FAILED
                injection.message = "target disappeared before injection"
                return
            if _is_transient(exc):
                raise
            injection.state = InjectionState.FAILED
            injection.message = f"{exc}"
            raise FaultError(
                f"step {step_name}: {injection.fault} on {describe(injection.target)} failed: {exc.message}"
            ) from exc
        injection.appliedAt = now_iso()
        observers.notify("fault_injected", self.info, injection)
        if not announce:
            return
        await post_event(
            self.client,
            target_object(injection.target),
            "ChaosInjected",
            f"{injection.fault} by TestRun {self.run.ref} (step {step_name})",
            "Warning",
        )

    async def revert(self, which: Callable[[Injection], bool]) -> None:
        """Undo every matching change not yet undone, newest first. Failures are kept for a retry, never dropped."""
        failures: list[str] = []
        announced: dict[int, int] = {}  # target Events posted, per step
        for injection in reversed(self.status.injections):
            if not which(injection) or injection.state in (InjectionState.REVERTED, InjectionState.IRREVERSIBLE):
                continue
            if injection.state == InjectionState.FAILED and injection.appliedAt is None and not injection.original:
                continue
            driver = driver_for(injection.fault)
            try:
                await driver.revert(self.client, injection)
                if driver.reversible:
                    await clear_on_target(self.client, injection.target, annotation_key(self.run.uid, injection.id))
            except ApiError as exc:
                failures.append(f"{injection.id}: {exc}")
                continue
            except Exception as exc:  # kept in the ledger and retried: a revert is never given up on
                log.error(
                    "TestRun %s: reverting %s failed: %s: %s", self.run.ref, injection.id, type(exc).__name__, exc
                )
                failures.append(f"{injection.id}: unexpected {type(exc).__name__}: {str(exc)[:MAX_ERROR_TEXT]}")
                continue
            injection.state = InjectionState.REVERTED
            injection.revertedAt = now_iso()
            observers.notify("fault_reverted", self.info, injection)
            announced[injection.step] = announced.get(injection.step, 0) + 1
            if announced[injection.step] > MAX_TARGET_EVENTS:
                continue
            await post_event(
                self.client,
                target_object(injection.target),
                "ChaosReverted",
                f"{injection.fault} reverted by TestRun {self.run.ref}",
            )
        if failures:
            await self.persist()
            raise RetryLater(f"could not revert {len(failures)} change(s): {'; '.join(failures[:3])}")

    async def finish(self, end: RunEnded) -> None:
        if self.status.injections:
            # Written with the revert's failure (never otherwise), so a retry finishes this end instead of
            # resuming the run: an Error must not become a pass because its revert needed a second attempt.
            self.status.ending = RunEnding(phase=end.phase, reason=end.reason, message=end.message)
            await self.revert(lambda _: True)
            self._condition(cond.FAULTS_REVERTED, True, "Reverted", "every fault was reverted")
        self.status.ending = None
        completed = now_iso()
        self.status.phase = end.phase
        self.status.reason = end.reason
        self.status.message = end.message
        self.status.completedAt = completed
        if self.status.startedAt:
            self.status.durationSeconds = round(
                (parse_iso(completed) - parse_iso(self.status.startedAt)).total_seconds(), 3
            )
            self.status.duration = format_duration(round(self.status.durationSeconds, 1))
        self.status.step = None
        if self.status.steps and self.status.currentStep is not None:
            for record in self.status.steps[self.status.currentStep :]:
                if record.outcome == StepOutcome.PENDING and end.phase != Phase.PASSED:
                    record.outcome = StepOutcome.SKIPPED
        self._probe_results()
        if end.phase not in (Phase.PASSED, Phase.FAILED):
            # Error, Cancelled, TimedOut: the experiment did not run its course; a score would claim it did.
            self.status.resilienceScore = None
        self.status.conditions = cond.terminal_conditions(
            self.status.conditions, end.phase.value, end.reason, end.message, self.generation
        )
        # Counted on the scenario right after this write. A crash between the two loses the count (a resumed
        # run that is already finished does nothing), which a summary can afford; counting twice it could not.
        counted = bool((self.status.model_extra or {}).get("scenarioCounted"))
        self.status.scenarioCounted = True  # type: ignore[attr-defined]
        await self.mirror_finished()
        await self.persist()
        observers.notify("run_finished", self.info, self.status)
        warning = end.phase != Phase.PASSED
        await self.event("Completed" if not warning else end.phase.value, end.message, warning=warning)
        if not counted:
            await self.update_scenario_summary(end.phase)

    async def mirror_finished(self) -> None:
        """Put the finished run into the history store now, so the final write can say it is there (one status
        write fewer than the timer's mark). A crash before that write only means the record is written again."""
        if self.mirror is None or (self.status.history is not None and self.status.history.synced):
            return
        self.status.observedGeneration = self.generation
        synced = await self.mirror(
            {
                "metadata": self.metadata,
                "spec": self.spec_body,
                "status": self.status.model_dump(mode="json", exclude_none=True),
            }
        )
        if synced is not None:
            self.status.history = HistorySync.model_validate(synced)

    def _summary(self) -> str:
        steps = len(self.status.steps)
        if self.spec.dryRun:
            return f"dry run: {steps} step(s) planned, nothing changed"
        reverted = sum(1 for i in self.status.injections if i.state == InjectionState.REVERTED)
        one_shot = sum(1 for i in self.status.injections if i.state == InjectionState.IRREVERSIBLE)
        parts = [f"{steps} step(s) completed"]
        if reverted:
            parts.append(f"{reverted} change(s) applied and reverted")
        if one_shot:
            parts.append(f"{one_shot} one-shot change(s) (pod kills, restarts) left to their controllers")
        return "; ".join(parts)

    async def update_scenario_summary(self, phase: Phase) -> None:
        """Count the finished run on its scenario's status (total, passed, pass rate, last run)."""
        if not self.status.scenario:
            return
        namespace, name = self.status.scenario.split("/", 1)
        try:
            await SUMMARIES.count(self.client, namespace, name, self.run.name, phase, self.status.completedAt)
        except ApiError as exc:
            # The run itself is finished and recorded; only the scenario's counters miss it.
            log.warning("TestRun %s not counted on ChaosScenario %s: %s", self.run.ref, self.status.scenario, exc)


class ScenarioSummaries:
    """The run counters on ChaosScenario status, written in batches with compare-and-swap writes.

    Runs of one scenario that finish together are counted together: the first starts a flush, the others
    join the batch that is pending meanwhile, and each batch costs one PATCH (from the last status a PATCH
    returned, so usually no GET). A stale copy (another writer, another replica, a re-created scenario) is
    refused by the API server with 409 and read again. With 500 runs in flight, counting one run at a time
    behind a lock made hundreds of finished runs queue for minutes.
    """

    ATTEMPTS = 5

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], list[tuple[str, Phase, str | None, asyncio.Future[None]]]] = {}
        self._flushers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._known: dict[tuple[str, str], dict[str, Any]] = {}

    async def count(
        self, client: KubeClient, namespace: str, name: str, run: str, phase: Phase, completed_at: str | None
    ) -> None:
        """Count one finished run; returns once a write that includes it succeeded (raises ApiError if not)."""
        key = (namespace, name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((run, phase, completed_at, done))
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flush(client, key), name=f"summary of {namespace}/{name}")
        await done

    async def _flush(self, client: KubeClient, key: tuple[str, str]) -> None:
        try:
            while self._pending.get(key):
                batch = self._pending.pop(key)
                try:
                    await self._write(client, key, batch)
                except Exception as exc:  # every waiter of the batch gets the failure
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for *_, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            # No await between the loop's last check and this: a count() arriving now starts a new flush.
            self._flushers.pop(key, None)

    async def _write(
        self, client: KubeClient, key: tuple[str, str], batch: list[tuple[str, Phase, str | None, Any]]
    ) -> None:
        namespace, name = key
        last_run, last_phase, last_completed, _ = max(batch, key=lambda item: item[2] or "")
        passed_now = sum(1 for _, phase, _, _ in batch if phase == Phase.PASSED)
        cancelled_now = sum(1 for _, phase, _, _ in batch if phase == Phase.CANCELLED)
        for _attempt in range(self.ATTEMPTS):
            scenario = self._known.get(key)
            if scenario is None:
                try:
                    scenario = await client.get(resource_path("ChaosScenario", namespace, name))
                except ApiError as exc:
                    if exc.not_found:
                        return
                    raise
            status = scenario.get("status") or {}
            total = int(status.get("totalRuns") or 0) + len(batch)
            passed = int(status.get("passedRuns") or 0) + passed_now
            cancelled = int(status.get("cancelledRuns") or 0) + cancelled_now
            summary = {
                "lastRun": {"name": last_run, "phase": str(last_phase), "completedAt": last_completed},
                "totalRuns": total,
                "passedRuns": passed,
                "cancelledRuns": cancelled,
                "passRate": pass_rate(passed, total - cancelled),
            }
            try:
                self._known[key] = await client.patch(
                    resource_path("ChaosScenario", namespace, name, "status"),
                    {"metadata": {"resourceVersion": scenario["metadata"]["resourceVersion"]}, "status": summary},
                )
                return
            except ApiError as exc:
                self._known.pop(key, None)
                if exc.not_found:
                    return
                if not exc.conflict:
                    raise
        raise ApiError(409, "Conflict", f"ChaosScenario {namespace}/{name} changed {self.ATTEMPTS} times meanwhile")


SUMMARIES = ScenarioSummaries()


async def revert_run(client: KubeClient, settings: Settings, body: Mapping[str, Any]) -> int:
    """Undo everything a TestRun's ledger still holds (its deletion): returns how many changes were reverted."""
    executor = Executor(client, settings, RunHandle(body=body, stopped=lambda: False))
    pending = [
        i for i in executor.status.injections if i.state not in (InjectionState.REVERTED, InjectionState.IRREVERSIBLE)
    ]
    if not pending:
        return 0
    with contextlib.suppress(RunEnded):
        executor.load_snapshot()
    await executor.revert(lambda _: True)
    with contextlib.suppress(RunInterrupted):
        await executor.persist()
    return len(pending)
