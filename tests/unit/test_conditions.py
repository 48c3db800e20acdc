"""Kubernetes-style status conditions: set_condition and get_condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.api.models import Condition
from coordinator.domain.conditions import (
    COMPLETED,
    FAULTS_INJECTED,
    FAULTS_REVERTED,
    TARGETS_SELECTED,
    get_condition,
    set_condition,
)
from coordinator.domain.timestamps import now_iso, parse_iso

T0 = "2024-05-01T10:00:00.000000Z"
T1 = "2024-05-01T10:00:30.000000Z"
T2 = "2024-05-01T10:01:00.000000Z"


def selected(status: str = "True", when: str = T0, generation: int | None = 1) -> Condition:
    return Condition(
        type=TARGETS_SELECTED,
        status=status,
        reason="Selected",
        message="step kill-one: 1 of 3 matching",
        lastTransitionTime=when,
        observedGeneration=generation,
    )


def test_adds_a_missing_condition() -> None:
    out = set_condition([], FAULTS_INJECTED, True, "Injected", "step kill-one: 1 fault(s)", generation=2, now=T1)
    assert out == [
        Condition(
            type=FAULTS_INJECTED,
            status="True",
            reason="Injected",
            message="step kill-one: 1 fault(s)",
            lastTransitionTime=T1,
            observedGeneration=2,
        )
    ]


def test_appends_after_the_existing_conditions() -> None:
    out = set_condition([selected()], FAULTS_INJECTED, True, "Injected", now=T1)
    assert [c.type for c in out] == [TARGETS_SELECTED, FAULTS_INJECTED]
    assert out[0] == selected()


def test_replaces_in_place_and_keeps_the_others() -> None:
    reverted = Condition(type=FAULTS_REVERTED, status="False", reason="Pending", lastTransitionTime=T0)
    conditions = [selected(), reverted]
    out = set_condition(conditions, TARGETS_SELECTED, False, "NoTargets", "matched no eligible Pod", now=T2)
    assert [c.type for c in out] == [TARGETS_SELECTED, FAULTS_REVERTED]
    assert out[0].status == "False"
    assert out[0].reason == "NoTargets"
    assert out[0].message == "matched no eligible Pod"
    assert out[1] is reverted


def test_keeps_last_transition_time_when_the_status_is_unchanged() -> None:
    out = set_condition([selected(when=T0)], TARGETS_SELECTED, True, "Reselected", "step two: 2 of 3", now=T2)
    assert out[0].lastTransitionTime == T0
    # ...while everything else is updated.
    assert out[0].reason == "Reselected"
    assert out[0].message == "step two: 2 of 3"


def test_moves_last_transition_time_when_the_status_changes() -> None:
    out = set_condition([selected(when=T0)], TARGETS_SELECTED, False, "NoTargets", now=T2)
    assert out[0].status == "False"
    assert out[0].lastTransitionTime == T2


def test_a_round_trip_moves_the_time_twice() -> None:
    once = set_condition([selected("True", T0)], TARGETS_SELECTED, "Unknown", "Resolving", now=T1)
    twice = set_condition(once, TARGETS_SELECTED, True, "Selected", now=T2)
    assert once[0].lastTransitionTime == T1
    assert twice[0].lastTransitionTime == T2


def test_sets_observed_generation() -> None:
    out = set_condition([selected(generation=1)], TARGETS_SELECTED, True, "Selected", generation=4, now=T1)
    assert out[0].observedGeneration == 4
    assert out[0].lastTransitionTime == T0


def test_generation_omitted_clears_observed_generation() -> None:
    out = set_condition([selected(generation=3)], TARGETS_SELECTED, True, "Selected", now=T1)
    assert out[0].observedGeneration is None


@pytest.mark.parametrize(("status", "expected"), [(True, "True"), (False, "False"), ("Unknown", "Unknown")])
def test_status_values(status: bool | str, expected: str) -> None:
    assert set_condition([], COMPLETED, status, "Reason", now=T0)[0].status == expected


def test_message_defaults_to_empty() -> None:
    assert set_condition([], COMPLETED, True, "Passed", now=T0)[0].message == ""


def test_does_not_modify_its_input() -> None:
    original = selected(when=T0)
    conditions = [original]
    out = set_condition(conditions, TARGETS_SELECTED, False, "NoTargets", now=T2)
    assert conditions == [selected(when=T0)]
    assert conditions[0] is original
    assert original.status == "True"
    assert out is not conditions


def test_stamps_now_when_no_time_is_given() -> None:
    before = datetime.now(UTC)
    stamp = set_condition([], COMPLETED, True, "Passed")[0].lastTransitionTime
    after = datetime.now(UTC)
    assert stamp.endswith("Z")
    assert before - timedelta(seconds=1) <= parse_iso(stamp) <= after + timedelta(seconds=1)


def test_now_iso_parses_back_as_utc() -> None:
    stamp = now_iso()
    parsed = parse_iso(stamp)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5


def test_parse_iso_of_a_kubernetes_timestamp() -> None:
    assert parse_iso("2024-05-01T10:00:30Z") == datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
    assert parse_iso(T1) == datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)


def test_get_condition() -> None:
    conditions = set_condition([selected()], FAULTS_INJECTED, True, "Injected", now=T1)
    found = get_condition(conditions, FAULTS_INJECTED)
    assert found is not None
    assert found.reason == "Injected"
    assert get_condition(conditions, TARGETS_SELECTED) == selected()
    assert get_condition(conditions, COMPLETED) is None
    assert get_condition([], COMPLETED) is None
