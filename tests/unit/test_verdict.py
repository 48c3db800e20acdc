"""Probe comparisons, response checks, assertions, the score and recovery tracking (pure)."""

from __future__ import annotations

import pytest

from coordinator.api.models import FaultType, Injection, InjectionState, Requester, TargetRef
from coordinator.api.probes import (
    RECENT_SAMPLES,
    Assertion,
    AssertionResult,
    AssertionState,
    HttpProbe,
    K8sProbe,
    Probe,
    ProbeResult,
)
from coordinator.domain.samples import ProbeError, Sample, compare
from coordinator.domain.verdict import (
    ProbeStats,
    evaluate_assertion,
    evaluate_audit_trail,
    pass_rate,
    resilience_score,
    scenario_ref,
)
from coordinator.engine.probing import RecoveryTracker
from coordinator.engine.run.probes import assertion_failed
from coordinator.probes.base import lookup
from coordinator.probes.http import check_response
from coordinator.probes.k8s import collection_path, evaluate
from coordinator.probes.prometheus import query_value


@pytest.mark.parametrize(
    ("actual", "op", "expected", "result"),
    [
        (3, ">=", 3, True),
        ("2", ">=", 3, False),
        (1.5, "<", "2", True),
        ("up", "==", "up", True),
        ("a", "!=", "b", True),
    ],
)
def test_compare(actual: object, op: str, expected: object, result: bool) -> None:
    assert compare(actual, op, expected) is result


def test_compare_refuses_ordering_strings() -> None:
    with pytest.raises(ProbeError, match="not numbers"):
        compare("abc", ">", "b")


def test_lookup_paths() -> None:
    doc = {"status": {"readyReplicas": 2}, "items": [{"name": "a"}]}
    assert lookup(doc, "status.readyReplicas") == 2
    assert lookup(doc, "items.0.name") == "a"
    assert lookup(doc, "items[0].name") == "a"
    with pytest.raises(KeyError):
        lookup(doc, "status.missing")


def _deployment(ready: int | None, replicas: int = 3, available: str = "True") -> dict[str, object]:
    status: dict[str, object] = {"conditions": [{"type": "Available", "status": available}]}
    if ready is not None:
        status["readyReplicas"] = ready
    return {"metadata": {"name": "web"}, "spec": {"replicas": replicas}, "status": status}


def test_k8s_field_against_another_field() -> None:
    spec = K8sProbe(name="web", fieldPath="status.readyReplicas", valueFromPath="spec.replicas")
    assert evaluate(spec, [_deployment(3)])[0] is True
    ok, observed = evaluate(spec, [_deployment(2)])
    assert ok is False
    assert "readyReplicas=2" in observed
    assert evaluate(spec, [_deployment(None)])[0] is False, "an absent status counter counts as zero"


def test_k8s_condition_and_count() -> None:
    assert evaluate(K8sProbe(name="web", condition="Available"), [_deployment(3, available="False")])[0] is False
    pods = [
        {
            "metadata": {"name": "a"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {"metadata": {"name": "b"}, "status": {"phase": "Pending"}},
    ]
    spec = K8sProbe(kind="Pod", apiVersion="v1", labelSelector={"matchLabels": {"app": "web"}}, count=True, value=2)
    assert evaluate(spec, pods) == (False, "count=1")
    with pytest.raises(ProbeError, match="no Deployment"):
        evaluate(K8sProbe(name="web", condition="Available"), [])


def test_collection_paths() -> None:
    assert collection_path("apps/v1", "Deployment", "shop") == "/apis/apps/v1/namespaces/shop/deployments"
    assert collection_path("v1", "Node", "shop") == "/api/v1/nodes"
    assert (
        collection_path("networking.k8s.io/v1", "Ingress", "a") == "/apis/networking.k8s.io/v1/namespaces/a/ingresses"
    )


def test_http_response_checks() -> None:
    spec = HttpProbe(
        url="http://127.0.0.1/", expectedStatus=[200, 204], bodyRegex="ok", jsonPath="data.count", operator=">", value=1
    )
    assert check_response(spec, 200, '{"ok": 1, "data": {"count": 2}}') == (True, "status 200")
    assert check_response(spec, 500, "")[1] == "status 500, want [200, 204]"
    assert "does not match" in check_response(spec, 200, '{"data": {"count": 2}}')[1]
    assert check_response(spec, 200, '{"ok": 1, "data": {"count": 1}}')[0] is False


def test_prometheus_results() -> None:
    vector = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}}
    assert query_value(vector) == 0.25
    with pytest.raises(ProbeError, match="no series"):
        query_value({"status": "success", "data": {"resultType": "vector", "result": []}})
    with pytest.raises(ProbeError, match="2 series"):
        query_value(
            {"status": "success", "data": {"resultType": "vector", "result": [vector["data"]["result"][0]] * 2}}
        )  # type: ignore[index]
    with pytest.raises(ProbeError, match="bad_data"):
        query_value({"status": "error", "errorType": "bad_data", "error": "parse error"})


def _stats(name: str, oks: list[bool], weight: int = 1, latencies: list[float] | None = None) -> ProbeStats:
    stats = ProbeStats.of(Probe(name=name, type="http", mode="continuous", weight=weight, http={"url": "http://x/"}))
    for i, ok in enumerate(oks):
        latency = latencies[i] if latencies else None
        stats.record(Sample(ok=ok, at=float(i), error=None if ok else "500", latency_ms=latency))
    return stats


def test_score_is_weighted_success() -> None:
    api = _stats("api", [True, False, True, False], weight=2)  # 50 %
    db = _stats("db", [True, True], weight=1)  # 100 %
    assert resilience_score([api, db]) == round((2 * 50 + 100) / 3)
    assert resilience_score([]) is None


def test_no_score_without_a_fault_applied_or_a_probe_sample() -> None:
    # A run Failed with NoTargets or BaselineFailed measured nothing under a fault: no score, not 100.
    healthy = _stats("api", [True, True])
    assert resilience_score([healthy], injected=False) is None
    assert resilience_score([_stats("idle", [])]) is None


def test_failed_assertions_lower_the_score() -> None:
    healthy = _stats("api", [True, True, True])  # 100 % of samples passed
    passed = AssertionResult(name="ok", type="recovery_time", expected="<= 30", passed=True)
    failed = AssertionResult(name="slow", type="recovery_time", expected="<= 1", actual="4", passed=False)
    assert resilience_score([healthy], [passed]) == 100
    assert resilience_score([healthy], [passed, failed]) == 50, "a run Failed by an assertion never scores 100"
    assert resilience_score([healthy], [failed]) == 0


def test_pass_rate_leaves_out_cancelled_runs() -> None:
    assert pass_rate(passed=3, decided=4) == "75%"
    assert pass_rate(passed=0, decided=0) is None, "only aborted runs: no rate yet"


def test_assertions_expected_vs_actual() -> None:
    stats = {"api": _stats("api", [True, True, True, False], latencies=[10, 20, 30, 400])}
    availability = evaluate_assertion(Assertion(name="a", type="availability", probe="api", expected=70), stats, None)
    assert availability.passed is True
    assert availability.actual == "75%"
    assert availability.expected == ">= 70"
    errors = evaluate_assertion(Assertion(name="e", type="error_rate", probe="api", expected=10), stats, None)
    assert errors.passed is False
    assert errors.actual == "25%"
    latency = evaluate_assertion(
        Assertion(name="l", type="latency", probe="api", expected=100, percentile=95), stats, None
    )
    assert latency.actual == "400ms"
    assert latency.passed is False
    recovery = evaluate_assertion(Assertion(name="r", type="recovery_time", expected=5), stats, 2.1)
    assert recovery.passed is True
    assert recovery.actual == "2.1s"
    missing = evaluate_assertion(Assertion(name="m", type="service_health", probe="nope"), stats, None)
    assert missing.passed is False
    assert "not declared" in (missing.message or "")


# --- audit_trail ---------------------------------------------------------------------------------------------

AUDIT = Assertion(name="trail", type="audit_trail")
ALICE = Requester(username="alice", groups=["team-a"])
AT = "2026-12-06T12:00:00Z"


def _change(
    name: str, state: str, reverted: bool = True, applied: bool = True, original: str | None = None
) -> Injection:
    return Injection.model_validate(
        {
            "id": f"0/scale/Deployment/shop/{name}",
            "step": 0,
            "fault": FaultType.SCALE,
            "target": TargetRef(kind="Deployment", namespace="shop", name=name),
            "state": state,
            "appliedAt": AT if applied else None,
            "revertedAt": AT if reverted and state == InjectionState.REVERTED else None,
            "original": original,
        }
    )


def test_audit_trail_holds_when_every_change_is_reverted_or_one_shot_and_the_requester_is_known() -> None:
    ledger = [_change("a", "Reverted"), _change("b", "Irreversible", reverted=False)]
    result = evaluate_audit_trail(AUDIT, ledger, ALICE)
    assert result.passed is True
    assert result.actual == "2 change(s): 1 reverted, 1 one-shot, 0 not; requested by alice"
    assert result.message is None
    assert result.type == "audit_trail"


def test_audit_trail_fails_on_a_change_whose_revert_failed_or_left_no_time() -> None:
    ledger = [_change("a", "Reverted"), _change("b", "Applied"), _change("c", "Reverted", reverted=False)]
    result = evaluate_audit_trail(AUDIT, ledger, ALICE)
    assert result.passed is False
    assert result.message == (
        "2 change(s) without a matching revert: 0/scale/Deployment/shop/b (Applied), "
        "0/scale/Deployment/shop/c (Reverted, no revertedAt)"
    )
    failed_revert = _change("d", "Failed", original='{"replicas": 3}')
    assert evaluate_audit_trail(AUDIT, [failed_revert], ALICE).passed is False, "a failure that changed the target"


def test_audit_trail_names_three_unreverted_changes_and_counts_the_rest() -> None:
    ledger = [_change(f"w{i}", "Applied") for i in range(5)]
    message = evaluate_audit_trail(AUDIT, ledger, ALICE).message or ""
    assert message.startswith("5 change(s) without a matching revert: ")
    assert message.count("(Applied)") == 3
    assert message.endswith(" and 2 more")


def test_audit_trail_needs_the_requester() -> None:
    result = evaluate_audit_trail(AUDIT, [_change("a", "Reverted")], None)
    assert result.passed is False
    assert result.message == "status.requestedBy is not set: nobody is recorded as the requester"
    assert result.actual is not None
    assert result.actual.endswith("; no requester")


def test_an_empty_trail_passes_only_with_a_requester_and_says_it_is_empty() -> None:
    never_applied = _change("a", "Failed", applied=False)  # the apply failed: nothing changed, nothing to undo
    for ledger in ([], [never_applied]):
        empty = evaluate_audit_trail(AUDIT, ledger, ALICE)
        assert empty.passed is True
        assert empty.actual == "0 change(s): 0 reverted, 0 one-shot, 0 not; requested by alice"
        assert empty.message == "the run changed nothing: the trail is complete but empty"
        assert evaluate_audit_trail(AUDIT, ledger, None).passed is False


def test_audit_trail_is_not_a_probe_assertion() -> None:
    with pytest.raises(ValueError, match="audit_trail is judged on the final ledger"):
        evaluate_assertion(AUDIT, {}, None)


def test_failure_threshold_trips_only_on_consecutive_failures() -> None:
    probe = Probe(name="p", type="http", mode="during", failureThreshold=2, http={"url": "http://x/"})
    stats = ProbeStats.of(probe)
    for ok in (False, True, False, True):
        stats.record(Sample(ok=ok, at=0.0))
    assert stats.verdict == "Passed"
    stats.record(Sample(ok=False, at=0.0))
    stats.record(Sample(ok=False, at=0.0))
    assert stats.verdict == "Failed"


def test_recent_samples_are_bounded_and_in_status_oldest_first() -> None:
    stats = _stats("api", [i % 3 != 0 for i in range(RECENT_SAMPLES + 15)])
    result = stats.to_result()
    assert len(result.recent) == RECENT_SAMPLES, "the oldest samples fall off: status stays bounded"
    assert result.recent[0].at.timestamp() == 15.0
    assert result.recent[-1].at.timestamp() == RECENT_SAMPLES + 14
    assert [m.ok for m in result.recent] == [i % 3 != 0 for i in range(15, RECENT_SAMPLES + 15)]
    written = result.model_dump(mode="json")["recent"][0]
    assert written == {"at": "1970-01-01T00:00:15.000000Z", "ok": False}


def test_restore_carries_the_recent_samples_over() -> None:
    before = _stats("api", [True, False, True]).to_result()
    after = ProbeStats.of(Probe(name="api", type="http", mode="continuous", http={"url": "http://x/"}))
    after.restore(ProbeResult.model_validate(before.model_dump(mode="json")))
    after.record(Sample(ok=True, at=3.0))
    assert [(m.at.timestamp(), m.ok) for m in after.to_result().recent] == [
        (0.0, True),
        (1.0, False),
        (2.0, True),
        (3.0, True),
    ]


def test_recovery_tracker() -> None:
    tracker = RecoveryTracker(started=100.0)
    tracker.observe(True, 100.1)
    assert tracker.seconds == 0.0, "no impact seen: nothing to recover from"
    tracker.observe(False, 100.2)
    assert tracker.seconds is None
    assert not tracker.done
    tracker.observe(False, 101.0)
    tracker.observe(True, 102.05)
    tracker.observe(False, 103.0)  # a later blip does not move the first recovery
    assert tracker.seconds == 2.05


def test_a_run_is_named_by_the_scenario_its_spec_names() -> None:
    # A run whose scenario was never found has no status.scenario: metrics said scenario="" while the report
    # named it from the spec. Both use this now.
    from coordinator.history.records import scenario_record

    spec = {"scenarioRef": {"name": "gone"}}
    assert scenario_ref(spec, "shop") == "shop/gone"
    assert scenario_ref({"scenarioRef": {"name": "x", "namespace": "lib"}}, "shop") == "lib/x"
    record = scenario_record({"metadata": {"namespace": "shop"}, "spec": spec, "status": {}})
    assert f"{record.namespace}/{record.name}" == scenario_ref(spec, "shop")


# --- assertion states ----------------------------------------------------------------------------------------


def _judge(kind: str, stats: dict[str, ProbeStats], recovery: float | None = None) -> AssertionResult:
    expected = None if kind in ("service_health", "data_consistency") else 50
    return evaluate_assertion(Assertion(name="x", type=kind, probe="api", expected=expected), stats, recovery)


def _sampled(*samples: Sample) -> dict[str, ProbeStats]:
    stats = ProbeStats.of(Probe(name="api", type="http", mode="continuous", http={"url": "http://x/"}))
    for sample in samples:
        stats.record(sample)
    return {"api": stats}


ERRORED = Sample(ok=False, at=0.0, error="http://x/ unreachable: connection refused")
MISSED = Sample(ok=False, at=1.0, value="503", error="503", latency_ms=4.0)
MET = Sample(ok=True, at=2.0, value="200", latency_ms=3.0)


@pytest.mark.parametrize("kind", ["availability", "error_rate", "latency", "throughput", "service_health"])
def test_an_assertion_whose_probe_never_ran_is_skipped_never_passed(kind: str) -> None:
    result = _judge(kind, _sampled())
    assert (result.state, result.passed) == (AssertionState.SKIPPED, False)
    assert result.message == "probe api never ran (no samples)"


@pytest.mark.parametrize("kind", ["availability", "error_rate", "latency", "throughput", "service_health"])
def test_an_assertion_whose_probe_errored_in_every_sample_is_an_error(kind: str) -> None:
    result = _judge(kind, _sampled(ERRORED, ERRORED))
    assert (result.state, result.passed) == (AssertionState.ERROR, False)
    assert result.message == "probe api errored in all 2 sample(s): http://x/ unreachable: connection refused"


def test_a_measured_miss_is_failed_and_a_measured_hit_passed() -> None:
    """One errored sample among measured ones leaves the assertion judged on what was measured."""
    missed = _judge("availability", _sampled(ERRORED, MISSED, MET))
    assert (missed.state, missed.passed, missed.actual) == (AssertionState.FAILED, False, "33.33%")
    held = _judge("availability", _sampled(MET, MET, ERRORED))
    assert (held.state, held.passed) == (AssertionState.PASSED, True)


def test_recovery_time_without_a_measurement_is_skipped_and_an_undeclared_probe_an_error() -> None:
    unmeasured = evaluate_assertion(Assertion(name="r", type="recovery_time", expected=5), {}, None)
    assert (unmeasured.state, unmeasured.passed) == (AssertionState.SKIPPED, False)
    undeclared = evaluate_assertion(Assertion(name="m", type="availability", probe="nope", expected=9), {}, None)
    assert (undeclared.state, undeclared.passed) == (AssertionState.ERROR, False)


def test_a_status_from_before_states_reads_its_state_from_passed() -> None:
    old = {"name": "a", "type": "availability", "expected": ">= 9"}
    assert AssertionResult.model_validate({**old, "passed": True}).state == AssertionState.PASSED
    assert AssertionResult.model_validate({**old, "passed": False}).state == AssertionState.FAILED


@pytest.mark.parametrize("state", ["skipped", "error", "failed"])
def test_an_unjudged_or_failed_state_never_says_passed(state: str) -> None:
    with pytest.raises(ValueError, match=f"state {state} disagrees with passed=True"):
        AssertionResult(name="a", type="availability", expected=">= 9", passed=True, state=state)
    with pytest.raises(ValueError, match="state passed disagrees with passed=False"):
        AssertionResult(name="a", type="availability", expected=">= 9", passed=False, state="passed")


def test_restore_keeps_the_count_of_errored_samples() -> None:
    before = _sampled(ERRORED, ERRORED)["api"].to_result()
    assert before.errored == 2
    after = ProbeStats.of(Probe(name="api", type="http", mode="continuous", http={"url": "http://x/"}))
    after.restore(ProbeResult.model_validate(before.model_dump(mode="json")))
    result = _judge("availability", {"api": after})
    assert result.state == AssertionState.ERROR, "a resumed run judges the samples of the process before"


def test_a_run_ended_by_an_unjudged_assertion_says_it_was_not_judged() -> None:
    skipped = _judge("availability", _sampled())
    assert assertion_failed(skipped).message == (
        "assertion x (availability) was not judged (skipped): expected >= 50 — probe api never ran (no samples)"
    )
    missed = _judge("availability", _sampled(MISSED))
    assert (
        assertion_failed(missed).message
        == "assertion x (availability) failed: expected >= 50, got 0% — 0% is not >= 50"
    )
