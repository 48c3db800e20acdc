"""Scenario parameters: resolving TestRun values against declarations, rendering {{ params.NAME }} references."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.api.models import ChaosScenarioSpec, Parameter, ParameterType
from coordinator.domain.parameters import ParameterError, coerce, references, render, resolve_parameters
from coordinator.engine.run import RunEnded, render_scenario


def declare(**types: str) -> list[Parameter]:
    return [Parameter(name=name, type=kind) for name, kind in types.items()]  # type: ignore[arg-type]


# --- types --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("string", "web", "web"),
        ("string", 3, "3"),
        ("integer", 3, 3),
        ("integer", "3", 3),
        ("integer", "-2", -2),
        ("number", "1.5", 1.5),
        ("number", "2", 2),
        ("number", 2, 2),
        ("boolean", "true", True),
        ("boolean", "False", False),
        ("duration", "1m30s", "1m30s"),
    ],
)
def test_values_are_coerced_to_the_declared_type(kind: str, value: object, expected: object) -> None:
    result = coerce(kind, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("integer", "three", 'expected an integer, got "three"'),
        ("integer", "1.5", "expected an integer"),
        ("integer", True, "expected an integer, got True"),
        ("number", "nan", "expected a number"),
        ("boolean", "yes", "expected a boolean"),
        ("boolean", 1, "expected a boolean"),
        ("duration", "10", "missing unit"),
        ("duration", 10, "expected a duration"),
    ],
)
def test_ill_typed_values_are_refused_with_what_was_expected(kind: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coerce(kind, value)


# --- resolving ----------------------------------------------------------------------------------------------


def test_overrides_win_over_defaults() -> None:
    declared = [Parameter(name="replicas", type="integer", default=1), Parameter(name="app", default="web")]  # type: ignore[arg-type]
    assert resolve_parameters(declared, {"replicas": "2"}) == {"replicas": 2, "app": "web"}


def test_an_unknown_override_names_the_testrun_field() -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(declare(replicas="integer"), {"replicas": 1, "replcias": 2})
    [problem] = caught.value.problems
    assert problem.field == "spec.parameters.replcias"
    assert "declares no such parameter (replicas)" in problem.message


def test_a_missing_value_without_default_is_required() -> None:
    with pytest.raises(ParameterError, match=r"spec\.parameters\.replicas: required"):
        resolve_parameters(declare(replicas="integer"), {})


def test_an_ill_typed_override_names_the_parameter() -> None:
    with pytest.raises(ParameterError, match=r'spec\.parameters\.replicas: expected an integer, got "many"'):
        resolve_parameters(declare(replicas="integer"), {"replicas": "many"})


def test_an_ill_typed_default_names_the_scenario_field() -> None:
    declared = [Parameter(name="ok", default="x"), Parameter(name="hold", type="duration", default="soon")]  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"spec\.parameters\[1\]\.default: parameter hold: invalid duration"):
        resolve_parameters(declared, {})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(declare(a="integer", b="boolean"), {"a": "x", "b": "maybe", "c": 1})
    assert [p.field for p in caught.value.problems] == ["spec.parameters.c", "spec.parameters.a", "spec.parameters.b"]


# --- rendering ----------------------------------------------------------------------------------------------


def test_a_whole_string_reference_takes_the_typed_value() -> None:
    spec = {"value": "{{ params.count }}", "flag": "{{params.on}}"}
    assert render(spec, {"count": 2, "on": True}) == {"value": 2, "flag": True}


def test_embedded_references_become_text() -> None:
    spec = {"steps": [{"duration": "{{ params.seconds }}s", "name": "hold-{{ params.name }}-{{ params.on }}"}]}
    rendered = render(spec, {"seconds": 5, "name": "a", "on": False})
    assert rendered == {"steps": [{"duration": "5s", "name": "hold-a-false"}]}


def test_rendering_leaves_the_input_alone_and_skips_declarations() -> None:
    spec: dict[str, Any] = {
        "parameters": [{"name": "n", "default": "{{ params.n }}"}],
        "description": "uses {{ params.unknown }} in prose",
        "runTemplate": {"parameters": {"n": "{{ x }}"}},
        "value": "{{ params.n }}",
    }
    rendered = render(spec, {"n": 1})
    assert rendered["value"] == 1
    assert spec["value"] == "{{ params.n }}"
    assert rendered["parameters"] == spec["parameters"]
    assert rendered["description"] == spec["description"]


def test_an_unknown_reference_names_its_field_path() -> None:
    spec = {"target": {"namespaces": ["ok", "{{ params.ns }}"]}, "steps": [{"duration": "{{ params.hold }}"}]}
    with pytest.raises(ParameterError) as caught:
        render(spec, {"hold": "1s"})
    [problem] = caught.value.problems
    assert problem.field == "spec.target.namespaces[1]"
    assert problem.message == "unknown parameter 'ns' (declared: hold)"


def test_a_malformed_reference_is_an_error_not_literal_text() -> None:
    with pytest.raises(ParameterError, match=r"spec\.value: malformed reference \{\{ param\.n \}\}"):
        render({"value": "{{ param.n }}"}, {"n": 1})


def test_references_lists_every_use() -> None:
    spec = {"value": "{{ params.a }}", "steps": [{"duration": "{{ params.b }}s"}], "parameters": ["{{ params.c }}"]}
    assert sorted(references(spec)) == [("spec.steps[0].duration", "b"), ("spec.value", "a")]


# --- what the executor does with them -----------------------------------------------------------------------

SCENARIO: dict[str, Any] = {
    "target": {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "{{ params.app }}"}}},
    "mode": "fixed",
    "value": "{{ params.count }}",
    "parameters": [
        {"name": "app", "default": "web"},
        {"name": "count", "type": "integer", "default": 1},
        {"name": "replicas", "type": "integer"},
        {"name": "hold", "type": "duration", "default": "2s"},
    ],
    "steps": [
        {
            "name": "shrink",
            "duration": "{{ params.hold }}",
            "faults": [{"type": "scale", "scale": {"replicas": "{{ params.replicas }}"}}],
        }
    ],
}


def test_a_rendered_scenario_validates_with_typed_values() -> None:
    rendered = render_scenario("TestRun ns/run", "ChaosScenario ns/sc", SCENARIO, {"replicas": 2, "count": "2"})
    spec = ChaosScenarioSpec.model_validate(rendered)
    assert spec.value == 2
    assert spec.steps[0].faults[0].scale is not None
    assert spec.steps[0].faults[0].scale.replicas == 2
    assert spec.steps[0].duration == "2s"
    assert spec.target.labelSelector is not None
    assert spec.target.labelSelector.matchLabels == {"app": "web"}


def test_an_unrendered_integer_reference_is_not_a_valid_model() -> None:
    with pytest.raises(ValueError, match="valid integer"):
        ChaosScenarioSpec.model_validate(SCENARIO)


def test_the_executor_ends_the_run_with_invalid_parameters_naming_each_object() -> None:
    with pytest.raises(RunEnded) as caught:
        render_scenario("TestRun ns/run", "ChaosScenario ns/sc", SCENARIO, {"replicas": "two", "colour": "red"})
    assert caught.value.reason == "InvalidParameters"
    assert caught.value.message == (
        "TestRun ns/run: spec.parameters.colour: the scenario declares no such parameter (app, count, hold, replicas); "
        'TestRun ns/run: spec.parameters.replicas: expected an integer, got "two"'
    )


def test_a_value_holding_a_reference_is_refused_and_never_reaches_a_field() -> None:
    """Rendering is one pass: a reference inside a value would reach the field as literal text (a duration
    "{{ params.d }}" the model's templated pattern still accepted, and the run then failed to compute)."""
    declared = [Parameter(name="d", type=ParameterType.DURATION, default="5s"), Parameter(name="s", default="x")]
    for name in ("d", "s"):
        with pytest.raises(ParameterError) as caught:
            resolve_parameters(declared, {name: "{{ params.d }}"})
        assert caught.value.problems[0].field == f"spec.parameters.{name}"
        assert "cannot hold a {{ }} reference" in str(caught.value)
