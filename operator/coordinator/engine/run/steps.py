"""One step of a run: select and plan (the ledger), take the targets' lock, apply, hold, revert.

REVERTED(k-1) -> PLANNED(k) -> INJECTED(k) -> REVERTED(k). The ledger reaches the API server before any target
is touched, so a restarted operator resumes where the last one stopped: it never repeats an injection (every
apply is idempotent and guarded by the ledger) and never forgets one (the ledger and the target annotations
both name it).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from coordinator.adapters.kube import ApiError
from coordinator.api.models import Fault, Injection, InjectionState, Phase, RunEnding, StepOutcome
from coordinator.domain import conditions as cond
from coordinator.domain.ledger import describe_target
from coordinator.engine import observers
from coordinator.engine.events import post_event, target_object
from coordinator.engine.locks import TargetLocks
from coordinator.engine.run.errors import RunEnded, ending_of, is_transient
from coordinator.engine.run.locking import TargetGuard
from coordinator.engine.run.probes import ProbeSupervisor
from coordinator.engine.run.revert import MAX_TARGET_EVENTS, revert
from coordinator.engine.run.state import RunState
from coordinator.engine.targets import NamespacePolicy, resolve_targets
from coordinator.faults import driver_for
from coordinator.faults.base import FaultContext, FaultError, ProtectedTargetError, claim_target

MAX_LISTED_TARGETS = 100
APPLY_PARALLELISM = 32  # changes of one step in flight at once (the client's QPS limit still applies)


class StepRunner:
    """Runs one step at a time, resuming a step from whatever its ledger entries say."""

    def __init__(
        self, state: RunState, probes: ProbeSupervisor, policy: NamespacePolicy, locks: TargetLocks | None
    ) -> None:
        self.state = state
        self.probes = probes
        self.policy = policy
        self.guard = TargetGuard(state, locks)

    def context(self, index: int) -> FaultContext:
        state = self.state
        return FaultContext(
            client=state.client,
            run=state.run,
            protected=state.settings.protected,
            step_index=index,
            namespace_policy=self.policy,
            step_duration=state.need_scenario().steps[index].seconds,
            agent_image=state.settings.agent_image,
            agent_start_timeout=state.settings.agent_start_timeout,
            agent_poll_interval=min(state.settings.poll_interval, 1.0),
        )

    def fault(self, injection: Injection) -> Fault:
        return self.state.need_scenario().steps[injection.step].faults[injection.faultIndex]

    async def run(self, index: int) -> None:
        state = self.state
        scenario = state.need_scenario()
        step = scenario.steps[index]
        record = state.status.steps[index]
        if record.outcome in (StepOutcome.REVERTED, StepOutcome.DRY_RUN, StepOutcome.SKIPPED):
            return
        state.check_stop()
        ctx = self.context(index)
        fresh: list[Injection] | None = None
        if record.outcome == StepOutcome.PENDING and not any(i.step == index for i in state.status.injections):
            fresh = await self.plan(index)
            if fresh is None:
                return  # dry run
        entries = fresh if fresh is not None else [i for i in state.status.injections if i.step == index]
        # The lock covers planning too: what a change must restore is read while no other run holds the target.
        async with self.guard.hold(index, entries):
            if fresh is not None:
                # -> PLANNED(k): the ledger reaches the API server before any target is touched.
                state.status.injections += fresh
                record.message = f"{len(fresh)} change(s) planned on {record.targetCount} target(s)"
                await state.persist()
            if record.outcome == StepOutcome.PENDING:
                await self.apply(index, ctx)
            await self.hold(index)
            await revert(state, lambda i: i.step == index)
        record.outcome = StepOutcome.REVERTED
        record.revertedAt = state.clock.now()
        await self.probes.await_recovery(index)
        self.probes.record()
        state.condition(cond.FAULTS_REVERTED, True, "Reverted", f"step {step.name} reverted")
        # -> REVERTED(k). After the last step of a run without probes the final write follows at once and carries
        # this too (REVERTED -> FINISHED). A crash in between only means the (idempotent) revert runs again.
        if index < len(scenario.steps) - 1 or self.probes.active:
            await state.persist()
        # An Event only when something was put back: pod kills and restarts leave nothing to revert.
        reverted = sum(1 for i in state.status.injections if i.step == index and i.state == InjectionState.REVERTED)
        if reverted:
            await state.event("Reverted", f"step {step.name}: {reverted} change(s) reverted")

    # --- plan, apply, hold ----------------------------------------------------------------------------------

    async def plan(self, index: int) -> list[Injection] | None:
        """Select targets and plan the step's changes (written to status by the caller); None for a dry run,
        whose record is written here (-> REVERTED(k))."""
        state = self.state
        scenario = state.need_scenario()
        step = scenario.steps[index]
        record = state.status.steps[index]
        selection = await resolve_targets(
            state.client,
            self.policy,
            scenario.target,
            state.scenario_namespace,
            str(scenario.mode),
            scenario.value,
            state.spec.seed,
            reads_targets=any(driver_for(fault.type).reads_targets for fault in step.faults),
        )
        if not selection.targets:
            refused = f" ({'; '.join(selection.refused)})" if selection.refused else ""
            message = f"step {step.name}: spec.target matched no eligible {scenario.target.kind}{refused}"
            state.condition(cond.TARGETS_SELECTED, False, "NoTargets", message)
            raise RunEnded(Phase.FAILED, "NoTargets", message)
        refs = [t.ref for t in selection.targets]
        record.targets = refs[:MAX_LISTED_TARGETS]
        record.targetCount = len(refs)
        state.status.targets = (state.status.targets or 0) + len(refs)
        state.condition(
            cond.TARGETS_SELECTED, True, "Selected", f"step {step.name}: {len(refs)} of {selection.matched} matching"
        )
        planned: list[Injection] = []
        for f_index, fault in enumerate(step.faults):
            planned += driver_for(fault.type).plan(index, f_index, fault, selection.targets, state.run)
        if state.spec.dryRun:
            names = ", ".join(f"{r.namespace + '/' if r.namespace else ''}{r.name}" for r in refs[:10])
            faults = ", ".join(str(f.type) for f in step.faults)
            record.outcome = StepOutcome.DRY_RUN
            record.message = f"dry run: would apply {faults} as {len(planned)} change(s) to {names}"
            await state.persist()
            return None
        return planned

    async def apply(self, index: int, ctx: FaultContext) -> None:
        """PLANNED(k) -> INJECTED(k): apply the step's recorded changes, ``APPLY_PARALLELISM`` in flight at a time
        (each is already in the ledger and independent of the others: a step over 1,000 pods must not take 1,000
        round trips in a row).

        A sliding window, not batches: a batch waited for its slowest request before the next one started. After
        the first failure (or a stop) no further change starts; those in flight finish, what happened is written
        down, then the run reacts.
        """
        state = self.state
        step = state.need_scenario().steps[index]
        record = state.status.steps[index]
        ours = [i for i in state.status.injections if i.step == index]
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
                    state.check_stop()
                    await self.apply_one(ctx, step.name, injection, announce=injection.id in announced)
                except BaseException:
                    halted = True
                    raise

        outcomes = await asyncio.gather(*(apply(i) for i in todo), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            cancelled = next((e for e in errors if isinstance(e, asyncio.CancelledError)), None)
            if cancelled is not None:
                raise cancelled
            failure = next((e for e in errors if not isinstance(e, ApiError)), errors[0])
            # A change that failed for good ends the run, and that end is written with what did happen
            # (PLANNED -> ENDING): a resumed run must finish this end, not find nothing left to apply and pass.
            # Otherwise (a transient failure) what did happen is written down (PLANNED -> PLANNED) and retried.
            end = ending_of(failure)
            if end is not None:
                state.status.ending = RunEnding(phase=end.phase, reason=end.reason, message=end.message)
            with contextlib.suppress(ApiError):
                await state.persist()
            raise failure
        injected = state.clock.now()
        record.outcome = StepOutcome.INJECTED
        record.injectedAt = injected
        record.endsAt = injected + timedelta(seconds=step.seconds)
        notes = f"; {'; '.join(ctx.notes)}" if ctx.notes else ""
        if len(ours) > MAX_TARGET_EVENTS:
            notes += f"; Events on the first {MAX_TARGET_EVENTS} targets only"
        record.message = f"{len(step.faults)} fault(s) on {record.targetCount} target(s) for {step.duration}{notes}"
        state.condition(cond.FAULTS_INJECTED, True, "Injected", f"step {step.name}: {record.message}")
        # A step that holds for 0 s without probes is reverted at once, and the revert's write (or the run's final
        # write, after the last step) follows within milliseconds and carries this too: one status write fewer
        # per pod-kill run. A crash in between leaves the changes Recorded in the ledger, so the resumed run
        # applies them again, which every driver makes a no-op (pod kills by UID precondition), then reverts.
        if step.seconds > 0 or self.probes.active:
            await state.persist()
        await state.event("Injected", f"step {step.name}: {record.message}")

    async def apply_one(self, ctx: FaultContext, step_name: str, injection: Injection, announce: bool) -> None:
        """One change: its record on the target, then the change itself; raises FaultError for a change that
        failed for good (the injection says why), ApiError for a transient failure (retried later)."""
        with observers.activity(
            "injection",
            injection.id,
            fault=str(injection.fault),
            target=describe_target(injection.target),
            step=injection.step,
        ) as marked:
            await self._apply_one(ctx, step_name, injection, announce)
            marked.set(state=str(injection.state), message=injection.message)
            if injection.state == InjectionState.FAILED:
                marked.fail(injection.message or "failed")

    async def _apply_one(self, ctx: FaultContext, step_name: str, injection: Injection, announce: bool) -> None:
        state = self.state
        driver = driver_for(injection.fault)
        try:
            fault = self.fault(injection)
            if driver.reversible and not driver.creates_object(injection):
                exclusive = not state.need_scenario().allowConcurrentTargets
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
            if is_transient(exc):
                raise
            injection.state = InjectionState.FAILED
            injection.message = f"{exc}"
            raise FaultError(
                f"step {step_name}: {injection.fault} on {describe_target(injection.target)} failed: {exc.message}"
            ) from exc
        injection.appliedAt = state.clock.now()
        observers.notify("fault_injected", state.info, injection)
        if not announce:
            return
        await post_event(
            state.client,
            target_object(injection.target),
            "ChaosInjected",
            f"{injection.fault} by TestRun {state.run.ref} (step {step_name})",
            "Warning",
            correlation_id=state.run.uid,
        )

    async def hold(self, index: int) -> None:
        """Keep the step's faults in place until its endsAt, sampling probes and tracking recovery meanwhile."""
        state = self.state
        record = state.status.steps[index]
        until = (record.endsAt or state.clock.now()).timestamp()
        self.probes.holding()
        while True:
            state.check_stop()
            if state.clock.time() >= until:
                return
            await self.probes.sample_holding(index)
            await self.probes.publish()
            # Probes are sampled and recovery timed every recovery_interval; a run without probes only needs to
            # notice a stop, an abort or its deadline (poll_interval), so 100 runs holding faults stay cheap.
            interval = state.settings.recovery_interval if self.probes.active else state.settings.poll_interval
            await state.clock.sleep(min(max(until - state.clock.time(), 0), interval))
