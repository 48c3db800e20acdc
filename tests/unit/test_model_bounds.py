"""Bounded values (docs/limits.md) in the models: the same limits the CRD's CEL rules put before the API server,
so a spec that reaches the operator without admission (rendered from parameters, or stored before a limit existed)
is refused at run start, before anything is applied."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.api.models import ChaosScenarioSpec, TestRunSpec
from coordinator.domain.parameters import render, resolve_parameters


def scenario(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "steps": [{"name": "kill", "duration": "30s", "faults": [{"type": "pod-kill"}]}],
    }
    spec.update(changes)
    return spec


def probe(**changes: Any) -> dict[str, Any]:
    return {"name": "up", "type": "http", "http": {"url": "http://web/"}, **changes}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (scenario(steps=[{"name": "a", "duration": "24h1s", "faults": [{"type": "pod-kill"}]}]), "at most 24h"),
        (scenario(steps=[{"name": "a", "duration": "9" * 30 + "h", "faults": [{"type": "pod-kill"}]}]), "at most"),
        (scenario(steadyState={"probes": [probe(interval="50ms")]}), "between 100ms and 1h"),
        (scenario(steadyState={"probes": [probe(timeout="11m")]}), "between 1ms and 10m"),
        (scenario(steadyState={"probes": [probe(initialDelay="2h")]}), "at most 1h"),
        (scenario(steadyState={"probes": [probe(), probe()]}), "probe names must be unique: 'up'"),
        (
            scenario(assertions=[{"name": "r", "type": "recovery_time", "expected": 1}] * 2),
            "assertion names must be unique: 'r'",
        ),
        (
            scenario(
                steps=[{"name": "a", "faults": [{"type": "pod-kill"}]}, {"name": "a", "faults": [{"type": "pod-kill"}]}]
            ),
            "step names must be unique: 'a'",
        ),
        (
            scenario(
                steps=[
                    {
                        "name": "cut",
                        "faults": [
                            {
                                "type": "network-partition",
                                "networkPartition": {"allowedPeers": [{"cidr": "10.0.0.300/8"}]},
                            }
                        ],
                    }
                ]
            ),
            "is not a CIDR",
        ),
    ],
)
def test_out_of_bounds_scenarios_are_refused(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ChaosScenarioSpec.model_validate(spec)


@pytest.mark.parametrize("timeout", ["0.5s", "168h1ms", "9" * 25 + "h"])
def test_run_timeouts_are_bounded(timeout: str) -> None:
    with pytest.raises(ValidationError, match="between 1s and 168h"):
        TestRunSpec.model_validate({"scenarioRef": {"name": "x"}, "timeout": timeout})


def test_the_limits_themselves_are_accepted() -> None:
    TestRunSpec.model_validate({"scenarioRef": {"name": "x"}, "timeout": "168h"})
    ChaosScenarioSpec.model_validate(
        scenario(
            steps=[{"name": "a", "duration": "24h", "faults": [{"type": "pod-kill"}]}],
            steadyState={"probes": [probe(interval="100ms", timeout="10m", initialDelay="1h")]},
        )
    )


def test_a_templated_duration_is_checked_once_rendered() -> None:
    """The CRD lets a reference through; the value a parameter supplies meets the same bound at run start."""
    raw = scenario(
        parameters=[{"name": "hold", "type": "duration", "default": "5s"}],
        steps=[{"name": "a", "duration": "{{ params.hold }}", "faults": [{"type": "pod-kill"}]}],
    )
    ChaosScenarioSpec.model_validate(raw)
    declared = ChaosScenarioSpec.model_validate(raw).parameters
    with pytest.raises(ValidationError, match="at most 24h"):
        ChaosScenarioSpec.model_validate(render(raw, resolve_parameters(declared, {"hold": "100h"})))


def test_the_starting_deadline_is_bounded() -> None:
    """A deadline of 10**20 s overflowed `now - timedelta(...)` in the scheduler on every tick."""
    with pytest.raises(ValidationError, match="less than or equal to 31622400"):
        ChaosScenarioSpec.model_validate(scenario(schedule="@every 1h", startingDeadlineSeconds=10**20))
