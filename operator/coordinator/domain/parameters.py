"""Scenario parameters: declared on the ChaosScenario, set by a TestRun, referenced as ``{{ params.NAME }}``.

A reference may stand anywhere in a string field of the scenario spec. When it is the whole string, the field takes
the parameter's typed value (``replicas: "{{ params.replicas }}"`` becomes the integer 2); inside a longer string it
is replaced by the value's text (``"{{ params.seconds }}s"`` becomes ``"5s"``). Rendering happens when a TestRun
starts, before the scenario is validated, so the rendered spec must satisfy the same rules as a literal one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.api.durations import parse_duration
from coordinator.api.models import Parameter, ParameterType

Value = str | int | float | bool

# {{ params.NAME }} with optional spaces inside the braces.
REFERENCE = re.compile(r"\{\{\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Anything in double braces: a reference of another shape ({{ param.x }}, {{ x }}) is a mistake, not literal text.
_BRACES = re.compile(r"\{\{(.*?)\}\}")
# Top-level spec fields that are never rendered: the declarations themselves, values for scheduled runs, prose.
NOT_RENDERED = frozenset({"parameters", "runTemplate", "description"})


@dataclass(frozen=True)
class Problem:
    """One parameter problem: the field it is about (``spec.parameters.replicas``) and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ParameterError(ValueError):
    """Parameters that cannot be resolved or rendered; ``problems`` lists each, naming its field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = list(problems)


def _describe(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def coerce(kind: ParameterType | str, value: object) -> Value:
    """``value`` as the declared type; ValueError saying what was expected.

    TestRun parameters are ints or strings (the CRD's int-or-string), so strings are parsed for the other types:
    "3" is an integer, "1.5" a number, "true"/"false" booleans, "30s" a duration (kept as its text).
    """
    kind = ParameterType(kind)
    if isinstance(value, str) and "{{" in value:
        # Values are not rendered again: a reference inside one would reach a field as literal text.
        raise ValueError(f"a value cannot hold a {{{{ }}}} reference, got {_describe(value)}")
    if isinstance(value, bool) and kind != ParameterType.BOOLEAN:
        raise ValueError(f"expected {_article(kind)}, got {_describe(value)}")
    if kind == ParameterType.STRING:
        if isinstance(value, str | int | float):
            return str(value)
    elif kind == ParameterType.INTEGER:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            return int(value)
    elif kind == ParameterType.NUMBER:
        if isinstance(value, int | float) and math.isfinite(value):
            return value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return int(number) if number.is_integer() and "." not in value else number
    elif kind == ParameterType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind == ParameterType.DURATION and isinstance(value, str):
        parse_duration(value)  # raises with its own explanation
        return value
    raise ValueError(f"expected {_article(kind)}, got {_describe(value)}")


def _article(kind: ParameterType) -> str:
    return {
        ParameterType.STRING: "a string",
        ParameterType.INTEGER: "an integer",
        ParameterType.NUMBER: "a number",
        ParameterType.BOOLEAN: "a boolean (true or false)",
        ParameterType.DURATION: "a duration such as 30s or 5m",
    }[kind]


def resolve_parameters(declared: Sequence[Parameter], overrides: Mapping[str, object]) -> dict[str, Value]:
    """The value of every declared parameter: the TestRun's override, else the default, checked against its type.

    Raises ParameterError naming ``spec.parameters.<name>`` for an override the scenario does not declare or of
    the wrong type, and for a declared parameter that has neither a value nor a default.
    """
    problems: list[Problem] = []
    known = {p.name for p in declared}
    for name in overrides:
        if name not in known:
            choices = ", ".join(sorted(known)) or "none"
            problems.append(Problem(f"spec.parameters.{name}", f"the scenario declares no such parameter ({choices})"))
    values: dict[str, Value] = {}
    for index, parameter in enumerate(declared):
        field, prefix = f"spec.parameters.{parameter.name}", ""
        if parameter.name in overrides:
            raw: object = overrides[parameter.name]
        elif parameter.default is not None:
            raw = parameter.default
            # The scenario's own default is wrong: name the scenario's field.
            field, prefix = f"spec.parameters[{index}].default", f"parameter {parameter.name}: "
        else:
            problems.append(Problem(field, "required: the parameter has no default and the TestRun sets no value"))
            continue
        try:
            values[parameter.name] = coerce(parameter.type, raw)
        except ValueError as exc:
            problems.append(Problem(field, f"{prefix}{exc}"))
    if problems:
        raise ParameterError(problems)
    return values


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(spec: Mapping[str, Any], values: Mapping[str, Value], root: str = "spec") -> dict[str, Any]:
    """A copy of ``spec`` with every ``{{ params.NAME }}`` replaced by its value (top-level NOT_RENDERED fields
    are copied as they are). Raises ParameterError naming the field of each unknown or malformed reference."""
    problems: list[Problem] = []

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            return {key: walk(sub, f"{path}.{key}") for key, sub in node.items()}
        if isinstance(node, list):
            return [walk(sub, f"{path}[{index}]") for index, sub in enumerate(node)]
        if not isinstance(node, str) or "{{" not in node:
            return node
        for bad in _malformed(node):
            problems.append(Problem(path, f"malformed reference {bad}: write {{{{ params.NAME }}}}"))
        unknown = [name for name in REFERENCE.findall(node) if name not in values]
        for name in unknown:
            declared = ", ".join(sorted(values)) or "none"
            problems.append(Problem(path, f"unknown parameter {name!r} (declared: {declared})"))
        if unknown:
            return node
        whole = REFERENCE.fullmatch(node.strip())
        if whole is not None:
            return values[whole.group(1)]
        return REFERENCE.sub(lambda m: _text(values[m.group(1)]), node)

    rendered = {key: (value if key in NOT_RENDERED else walk(value, f"{root}.{key}")) for key, value in spec.items()}
    if problems:
        raise ParameterError(problems)
    return rendered


def _malformed(text: str) -> Iterator[str]:
    for match in _BRACES.finditer(text):
        if REFERENCE.fullmatch(match.group(0)) is None:
            yield match.group(0)


def references(spec: Mapping[str, Any], root: str = "spec") -> Iterator[tuple[str, str]]:
    """Every ``(field path, parameter name)`` referenced in ``spec`` outside the NOT_RENDERED fields."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, Mapping):
            for key, sub in node.items():
                yield from walk(sub, f"{path}.{key}")
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                yield from walk(sub, f"{path}[{index}]")
        elif isinstance(node, str):
            for name in REFERENCE.findall(node):
                yield path, name

    for key, value in spec.items():
        if key not in NOT_RENDERED:
            yield from walk(value, f"{root}.{key}")
