"""Probe statistics, assertions, the resilience score and the run's verdict (pure)."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coordinator.api.models import Injection, InjectionState, Requester
from coordinator.api.probes import (
    RECENT_SAMPLES,
    Assertion,
    AssertionResult,
    AssertionState,
    AssertionType,
    Comparison,
    Probe,
    ProbeMode,
    ProbeResult,
    ProbeSampleMark,
)
from coordinator.domain.ledger import accounted_for, made_change
from coordinator.domain.percentiles import percentile
from coordinator.domain.samples import Sample, compare

KEEP = 1000  # latencies and values kept per probe for percentiles: bounded memory, bounded status


@dataclass
class ProbeStats:
    """Everything the verdict needs about one probe, accumulated sample by sample."""

    name: str
    type: str
    mode: str
    weight: int = 1
    failure_threshold: int = 1
    samples: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0  # failed samples that observed nothing (Sample.errored)
    consecutive_failures: int = 0
    tripped: bool = False  # failureThreshold consecutive failures happened at some point
    checked: bool | None = None  # outcome of a before/after point check
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))
    values: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))
    last_value: str | None = None
    last_error: str | None = None
    # (at, ok) of the last samples, for the dashboard's timeline: status.probes[].recent
    recent: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))

    @classmethod
    def of(cls, probe: Probe) -> ProbeStats:
        return cls(
            name=probe.name,
            type=str(probe.type),
            mode=str(probe.mode),
            weight=probe.weight,
            failure_threshold=probe.failureThreshold,
        )

    def record(self, sample: Sample) -> None:
        self.samples += 1
        self.recent.append((sample.at, sample.ok))
        if sample.ok:
            self.passed += 1
            self.consecutive_failures = 0
        else:
            self.failed += 1
            self.errored += sample.errored
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self.tripped = True
            self.last_error = sample.error
        if sample.latency_ms is not None:
            self.latencies.append(sample.latency_ms)
        if sample.value is not None:
            self.last_value = sample.value
            with contextlib.suppress(ValueError):
                self.values.append(float(sample.value))

    @property
    def success_percent(self) -> float | None:
        return round(100 * self.passed / self.samples, 2) if self.samples else None

    @property
    def verdict(self) -> str | None:
        if self.checked is False or self.tripped:
            return "Failed"
        if self.checked is True or (self.samples and not self.tripped):
            return "Passed"
        return None

    def to_result(self) -> ProbeResult:
        p50 = percentile(self.latencies, 50)
        p95 = percentile(self.latencies, 95)
        return ProbeResult(
            name=self.name,
            type=self.type,
            mode=self.mode,
            samples=self.samples,
            passed=self.passed,
            failed=self.failed,
            errored=self.errored,
            successPercent=self.success_percent,
            latencyP50Ms=round(p50, 2) if p50 is not None else None,
            latencyP95Ms=round(p95, 2) if p95 is not None else None,
            lastValue=self.last_value,
            lastError=self.last_error,
            verdict=self.verdict,
            recent=[ProbeSampleMark(at=datetime.fromtimestamp(at, UTC), ok=ok) for at, ok in self.recent],
        )

    def restore(self, result: ProbeResult) -> None:
        """Carry counts over from a status written by an earlier operator process (of the samples themselves, only
        the recent marks remain)."""
        self.samples, self.passed, self.failed = result.samples, result.passed, result.failed
        self.errored = result.errored
        self.recent.extend((mark.at.timestamp(), mark.ok) for mark in result.recent)
        self.tripped = result.verdict == "Failed" and self.mode in (ProbeMode.DURING, ProbeMode.CONTINUOUS)
        self.last_value, self.last_error = result.lastValue, result.lastError


def default_operator(kind: AssertionType | str) -> Comparison:
    return Comparison.GE if str(kind) in (AssertionType.AVAILABILITY, AssertionType.THROUGHPUT) else Comparison.LE


def evaluate_assertion(
    assertion: Assertion, stats: Mapping[str, ProbeStats], recovery_seconds: float | None
) -> AssertionResult:
    """Expected vs actual for one assertion about the probes and recovery. ``audit_trail`` is judged on the final
    ledger instead (``evaluate_audit_trail``): ValueError here."""
    kind = AssertionType(assertion.type)
    if kind == AssertionType.AUDIT_TRAIL:
        raise ValueError(
            f"assertion {assertion.name}: audit_trail is judged on the final ledger (evaluate_audit_trail)"
        )
    op = Comparison(assertion.operator) if assertion.operator else default_operator(kind)
    expected_text = f"{op.value} {assertion.expected:g}" if assertion.expected is not None else "Passed"
    base = {"name": assertion.name, "type": kind.value, "expected": expected_text}
    if kind == AssertionType.RECOVERY_TIME:
        if recovery_seconds is None:
            return AssertionResult(
                **base,
                passed=False,
                state=AssertionState.SKIPPED,
                message="no recovery time: the scenario has no probes",
            )
        ok = compare(recovery_seconds, op, assertion.expected)
        return AssertionResult(
            **base, actual=f"{recovery_seconds:g}s", passed=ok, message=None if ok else "recovery too slow"
        )
    probe = stats.get(assertion.probe or "")
    if probe is None:
        return AssertionResult(
            **base, passed=False, state=AssertionState.ERROR, message=f"probe {assertion.probe!r} is not declared"
        )
    unjudged = _unjudged(base, probe)
    if unjudged is not None:
        return unjudged
    if kind in (AssertionType.SERVICE_HEALTH, AssertionType.DATA_CONSISTENCY):
        verdict = probe.verdict or "NoSamples"
        ok = verdict == "Passed"
        return AssertionResult(
            **base, actual=verdict, passed=ok, message=None if ok else f"probe {probe.name}: {probe.last_error}"
        )
    actual: float | None
    unit = ""
    if kind == AssertionType.AVAILABILITY:
        actual, unit = probe.success_percent, "%"
    elif kind == AssertionType.ERROR_RATE:
        actual, unit = round(100 * probe.failed / probe.samples, 2), "%"
    elif kind in (AssertionType.LATENCY, AssertionType.RESPONSE_TIME):
        actual, unit = percentile(probe.latencies, assertion.percentile), "ms"
        if actual is None:
            return AssertionResult(
                **base,
                passed=False,
                state=AssertionState.ERROR,
                message=f"probe {probe.name} recorded no latencies",
            )
        actual = round(actual, 2)
    else:  # throughput: the mean of the values the (prometheus) probe returned
        if not probe.values:
            return AssertionResult(
                **base, passed=False, state=AssertionState.ERROR, message=f"probe {probe.name} returned no numbers"
            )
        actual = round(sum(probe.values) / len(probe.values), 4)
    assert actual is not None
    ok = compare(actual, op, assertion.expected)
    return AssertionResult(
        **base,
        actual=f"{actual:g}{unit}",
        passed=ok,
        message=None if ok else f"{actual:g}{unit} is not {expected_text}",
    )


def _unjudged(base: Mapping[str, str], probe: ProbeStats) -> AssertionResult | None:
    """The result of an assertion whose probe gave nothing to judge: ``skipped`` when it never ran, ``error`` when
    every sample errored (it observed nothing); None when there is something to judge."""
    if not probe.samples and probe.checked is None:
        return AssertionResult(
            **base, passed=False, state=AssertionState.SKIPPED, message=f"probe {probe.name} never ran (no samples)"
        )
    if probe.samples and probe.errored == probe.samples:
        return AssertionResult(
            **base,
            passed=False,
            state=AssertionState.ERROR,
            message=f"probe {probe.name} errored in all {probe.samples} sample(s): {probe.last_error}",
        )
    return None


AUDIT_EXPECTED = "every change reverted or one-shot; requester recorded"
AUDIT_LISTED = 3  # unaccounted changes named in the message


def evaluate_audit_trail(
    assertion: Assertion, injections: Sequence[Injection], requested_by: Requester | None
) -> AssertionResult:
    """``audit_trail``: every change in the ledger has its matching revert (Reverted with revertedAt) or is
    one-shot (Irreversible), and the requester is recorded. Judged on the ledger as the run leaves it (after its
    final revert), which is what the history keeps.

    A run that changed nothing (a dry run, one that ended before injecting) has a complete but empty trail: it
    passes only with a requester, and the message says that nothing was changed, so an empty trail is never
    mistaken for a checked one."""
    base = {"name": assertion.name, "type": AssertionType.AUDIT_TRAIL.value, "expected": AUDIT_EXPECTED}
    changes = [i for i in injections if made_change(i)]
    open_changes = [i for i in changes if not accounted_for(i)]
    reverted = sum(1 for i in changes if i.state == InjectionState.REVERTED and i.revertedAt is not None)
    one_shot = sum(1 for i in changes if i.state == InjectionState.IRREVERSIBLE)
    who = f"requested by {requested_by.username}" if requested_by is not None else "no requester"
    actual = f"{len(changes)} change(s): {reverted} reverted, {one_shot} one-shot, {len(open_changes)} not; {who}"
    problems = []
    if open_changes:
        listed = ", ".join(_unaccounted(i) for i in open_changes[:AUDIT_LISTED])
        more = len(open_changes) - AUDIT_LISTED
        problems.append(
            f"{len(open_changes)} change(s) without a matching revert: {listed}"
            + (f" and {more} more" if more > 0 else "")
        )
    if requested_by is None:
        problems.append("status.requestedBy is not set: nobody is recorded as the requester")
    if problems:
        return AssertionResult(**base, actual=actual, passed=False, message="; ".join(problems))
    if not changes:
        return AssertionResult(
            **base, actual=actual, passed=True, message="the run changed nothing: the trail is complete but empty"
        )
    return AssertionResult(**base, actual=actual, passed=True)


def _unaccounted(injection: Injection) -> str:
    missing = ", no revertedAt" if injection.state == InjectionState.REVERTED else ""
    return f"{injection.id} ({injection.state}{missing})"


def resilience_score(
    stats: Iterable[ProbeStats], assertions: Sequence[AssertionResult] = (), *, injected: bool = True
) -> int | None:
    """0-100: how well the steady state held under the faults, and whether the run's claims came true.

    The probe part is Litmus's: sum(weight x success %) / sum(weight) over the probes that took samples. It is
    multiplied by the share of assertions that passed (1 without assertions), so a run Failed by an assertion
    never scores 100. None (no score, not 100) when no probe took a sample or no fault was applied: nothing was
    measured under a fault then.
    """
    if not injected:
        return None
    weighted = [(s.weight, s.success_percent) for s in stats if s.success_percent is not None]
    total = sum(w for w, _ in weighted)
    if not weighted or total == 0:
        return None
    probe_part = sum(w * (pct or 0.0) for w, pct in weighted) / total
    held = sum(1 for a in assertions if a.passed) / len(assertions) if assertions else 1.0
    return round(probe_part * held)


def failed_probe(stats: Iterable[ProbeStats]) -> ProbeStats | None:
    return next((s for s in stats if s.verdict == "Failed"), None)


def pass_rate(passed: int, decided: int) -> str | None:
    """``passed / decided`` as a percentage; decided runs are the finished ones that were not Cancelled (an abort
    says nothing about the system under test). None while no run has been decided."""
    return f"{round(100 * passed / decided)}%" if decided > 0 else None


def scenario_ref(spec: Mapping[str, object], namespace: str) -> str:
    """``namespace/name`` of the scenario a TestRun's spec names (its own namespace unless it says another): how
    metrics and the history report both name a run, even one whose scenario was never found."""
    ref = spec.get("scenarioRef")
    ref = ref if isinstance(ref, Mapping) else {}
    return f"{ref.get('namespace') or namespace}/{ref.get('name', '')}"
