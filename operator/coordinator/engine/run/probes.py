"""The steady state around the faults: baseline, sampling while faults hold, recovery, and the verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from coordinator.api.models import InjectionState, Phase
from coordinator.api.probes import Assertion, AssertionResult, AssertionType, ProbeMode, SteadyState
from coordinator.domain.verdict import evaluate_assertion, evaluate_audit_trail, failed_probe, resilience_score
from coordinator.engine.probing import ProbeReach, ProbeSession, RecoveryTracker
from coordinator.engine.run.errors import RunEnded
from coordinator.engine.run.state import RunState
from coordinator.engine.targets import NamespacePolicy
from coordinator.probes.cmd import RunOwner

# While faults hold, new probe samples are written into status at most this often (seconds): whoever watches the
# run (the dashboard's timeline) sees them during a long hold, at one status write per run per interval.
SAMPLES_WRITE_INTERVAL = 10.0


class SteadyStateSource(Protocol):
    """What declares a run's probes and assertions: its ChaosScenario's spec, or a workflow run's ChaosWorkflow's."""

    @property
    def steadyState(self) -> SteadyState | None: ...

    @property
    def assertions(self) -> list[Assertion]: ...


class ProbeSupervisor:
    """The run's probes (none when the scenario declares none), their counts in status, and the verdict.

    Counts survive a restart: they are read back from ``status.probes`` when the session opens. Recovery is timed
    per step from the first applied change to the first moment every probe passes again.
    """

    def __init__(
        self,
        state: RunState,
        source: Callable[[], SteadyStateSource] | None = None,
        owner: Callable[[], str] | None = None,
    ) -> None:
        """``source`` gives the declarations (default: the run's scenario), ``owner`` names them in messages."""
        self.state = state
        self.session: ProbeSession | None = None
        self.trackers: dict[int, RecoveryTracker] = {}
        self.source: Callable[[], SteadyStateSource] = source or state.need_scenario
        self.owner = owner or (lambda: f"ChaosScenario {state.status.scenario or state.scenario_ref}")
        self._published: tuple[int, float] | None = None  # (samples written, when) for ``publish``

    @property
    def active(self) -> bool:
        return self.session is not None

    def open(self) -> None:
        state = self.state
        source = self.source()
        declared = source.steadyState.probes if source.steadyState else []
        if not declared:
            return
        self.session = ProbeSession(
            state.client,
            declared,
            state.scenario_namespace,
            state.settings.prometheus_url,
            reach=ProbeReach.of(state.settings),
            owner=self.owner(),
            clock=state.clock,
            correlation_id=state.run.uid,
            namespaces=NamespacePolicy(state.client, state.settings),
            run=RunOwner(state.run.namespace, state.run.name, state.run.uid),
        )
        for result in state.status.probes:  # counts from an earlier operator process
            if result.name in self.session.stats:
                self.session.stats[result.name].restore(result)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def record(self) -> None:
        """Write the probes' counts and the resilience score into status (in memory)."""
        status = self.state.status
        if self.session is not None:
            status.probes = [s.to_result() for s in self.session.stats.values()]
            injected = any(i.appliedAt is not None for i in status.injections)
            status.resilienceScore = resilience_score(self.session.stats.values(), status.assertions, injected=injected)

    async def baseline(self) -> None:
        """STARTED -> BASELINED: before/edge probes must pass before anything is injected (else Failed)."""
        state = self.state
        if self.session is None or state.status.baselineChecked:
            return
        checks = await self.session.point_check({ProbeMode.BEFORE, ProbeMode.EDGE})
        state.status.baselineChecked = True
        self.record()
        failed = [c for c in checks if not c.ok]
        if failed:
            names = ", ".join(f"{c.probe.name} ({c.message})" for c in failed)
            raise RunEnded(Phase.FAILED, "BaselineFailed", f"steady state not met before any fault: {names}")
        await state.persist()

    def tracker(self, index: int) -> RecoveryTracker | None:
        """Step ``index``'s recovery timer, started at its first applied change (None without probes)."""
        tracker = self.trackers.get(index)
        record = self.state.status.steps[index]
        if tracker is None and self.session is not None and record.injectedAt:
            applied = [i.appliedAt.timestamp() for i in self.state.status.injections if i.step == index and i.appliedAt]
            tracker = self.trackers[index] = RecoveryTracker(started=min(applied, default=self.state.clock.time()))
        return tracker

    async def sample_holding(self, index: int) -> None:
        """While step ``index``'s faults hold: take the samples that are due, and watch for recovery."""
        if self.session is None:
            return
        state = self.state
        started = state.status.startedAt.timestamp() if state.status.startedAt else state.clock.time()
        stopping = await self.session.tick(faults_active=True, started=started)
        if stopping is not None:
            stats = self.session.stats[stopping.name]
            raise RunEnded(
                Phase.FAILED,
                "ProbeFailed",
                f"probe {stopping.name} failed ({stats.last_error}) with stopOnFailure: every fault reverted",
            )
        tracker = self.tracker(index)
        if tracker is not None and tracker.recovered_at is None:
            tracker.observe(await self.session.all_pass(), state.clock.time())

    def holding(self) -> None:
        """A step's faults hold from now, right after a status write: ``publish`` counts from here."""
        if self.session is not None:
            self._published = (sum(s.samples for s in self.session.stats.values()), self.state.clock.time())

    async def publish(self) -> None:
        """While a step's faults hold: write the samples taken since the last write into status (INJECTED ->
        INJECTED), at most every SAMPLES_WRITE_INTERVAL seconds and only when there are new ones."""
        if self.session is None or self._published is None:
            return
        state = self.state
        taken = sum(s.samples for s in self.session.stats.values())
        now = state.clock.time()
        written, at = self._published
        if taken == written or now - at < SAMPLES_WRITE_INTERVAL:
            return
        self.record()
        await state.persist()
        self._published = (taken, now)

    async def await_recovery(self, index: int) -> None:
        """After step ``index``'s revert, watch until every probe passes again (or the run must stop).

        A revert can itself disturb the system (scaling back up needs new pods to become ready), so the steady
        state is checked again here even when the faults showed no impact while they held.
        """
        tracker = self.tracker(index)
        if self.session is None or tracker is None:
            return
        state = self.state
        while True:
            state.check_stop()
            healthy = await self.session.all_pass()
            tracker.observe(healthy, state.clock.time())
            if healthy:
                break
            await state.clock.sleep(state.settings.recovery_interval)
        state.status.steps[index].recoveryTimeSeconds = tracker.seconds

    async def after_checks(self) -> None:
        if self.session is None:
            return
        await self.session.point_check({ProbeMode.AFTER, ProbeMode.EDGE})
        self.record()

    def verdict(self) -> RunEnded:
        """Passed, or Failed naming the first failing probe or assertion."""
        state = self.state
        status = state.status
        scenario = state.need_scenario()
        recoveries = [r.recoveryTimeSeconds for r in status.steps if r.recoveryTimeSeconds is not None]
        status.recoveryTimeSeconds = max(recoveries) if recoveries else None
        stats = self.session.stats if self.session is not None else {}
        status.assertions = [
            evaluate_assertion(a, stats, status.recoveryTimeSeconds)
            for a in scenario.assertions
            if a.type != AssertionType.AUDIT_TRAIL  # judged once everything is reverted: ``audit``
        ]
        self.record()
        bad_probe = failed_probe(stats.values())
        if bad_probe is not None:
            return RunEnded(
                Phase.FAILED, "ProbeFailed", f"probe {bad_probe.name} failed: {bad_probe.last_error or 'failed'}"
            )
        bad = next((a for a in status.assertions if not a.passed), None)
        if bad is not None:
            return assertion_failed(bad)
        return RunEnded(Phase.PASSED, "Completed", summary(state))

    def audit(self, end: RunEnded) -> RunEnded:
        """Judge the ``audit_trail`` assertions on the ledger as the final revert left it (what the history
        keeps), for every way a run ends; a run that would pass ends Failed when one does not hold."""
        state = self.state
        status = state.status
        declared = state.scenario.assertions if state.scenario is not None else []
        audits = {
            a.name: evaluate_audit_trail(a, status.injections, status.requestedBy)
            for a in declared
            if a.type == AssertionType.AUDIT_TRAIL
        }
        if not audits:
            return end
        results = {r.name: r for r in status.assertions} | audits
        status.assertions = [results[a.name] for a in declared if a.name in results]
        bad = next((a for a in audits.values() if not a.passed), None)
        if bad is not None and end.phase == Phase.PASSED:
            return assertion_failed(bad)
        return end


def assertion_failed(bad: AssertionResult) -> RunEnded:
    return RunEnded(
        Phase.FAILED,
        "AssertionFailed",
        f"assertion {bad.name} ({bad.type}) failed: expected {bad.expected}, got {bad.actual}"
        + (f" — {bad.message}" if bad.message else ""),
    )


def summary(state: RunState) -> str:
    """What a passed run did, in one line."""
    status = state.status
    steps = len(status.steps)
    if state.spec.dryRun:
        return f"dry run: {steps} step(s) planned, nothing changed"
    reverted = sum(1 for i in status.injections if i.state == InjectionState.REVERTED)
    one_shot = sum(1 for i in status.injections if i.state == InjectionState.IRREVERSIBLE)
    parts = [f"{steps} step(s) completed"]
    if reverted:
        parts.append(f"{reverted} change(s) applied and reverted")
    if one_shot:
        parts.append(f"{one_shot} one-shot change(s) (pod kills, restarts) left to their controllers")
    return "; ".join(parts)
