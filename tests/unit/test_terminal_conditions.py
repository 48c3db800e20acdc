"""A finished run says pass or fail in conditions that `kubectl wait` and GitOps health checks read."""

from __future__ import annotations

import pytest

from coordinator.domain import conditions as cond


def _by_type(conditions: list[cond.Condition]) -> dict[str, cond.Condition]:
    return {c.type: c for c in conditions}


def test_a_passed_run_succeeded_and_is_ready() -> None:
    running = cond.running_conditions([])
    assert {c.type: c.status for c in running} == {"Completed": "False", "Ready": "False"}
    done = _by_type(cond.terminal_conditions(running, "Passed", "Completed", "1 step(s) completed"))
    assert (done["Completed"].status, done["Succeeded"].status, done["Failed"].status, done["Ready"].status) == (
        "True",
        "True",
        "False",
        "True",
    )
    assert "Stalled" not in done


@pytest.mark.parametrize(
    ("phase", "reason"),
    [("Failed", "AssertionFailed"), ("Error", "AgentNotRunning"), ("TimedOut", "TimedOut"), ("Cancelled", "Aborted")],
)
def test_every_other_end_is_failed_with_its_reason(phase: str, reason: str) -> None:
    # Completed alone was True on Error too: `kubectl wait --for=jsonpath=...=Passed` on an errored run timed out.
    done = _by_type(cond.terminal_conditions(cond.running_conditions([]), phase, reason, "why"))
    assert done["Failed"].status == "True"
    assert done["Failed"].reason == reason
    assert "why" in done["Failed"].message
    assert done["Succeeded"].status == "False"
    assert done["Ready"].status == "False"
    assert done["Completed"].status == "True"
    assert done["Stalled"].status == "True", "kstatus (Flux) reads Stalled=True as failed"
