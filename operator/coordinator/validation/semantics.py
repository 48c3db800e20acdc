"""The checks the operator makes when a run starts, made offline: parameters, fault vs target kind, protected
namespaces, selectors that can never match, schedules."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from coordinator.api.models import (
    ChaosScenarioSpec,
    LabelSelector,
    Parameter,
    ParameterType,
    ScenarioScheduling,
    SelectorOperator,
    TargetKind,
    TestRunSpec,
)
from coordinator.domain.fieldpaths import validation_problem
from coordinator.domain.lifecycle import (
    ARCHIVED_REASON,
    DEPRECATED,
    DRAFT_REASON,
    deprecation_warning,
    lifecycle_of,
    run_refusal,
)
from coordinator.domain.parameters import REFERENCE, ParameterError, Value, coerce, render, resolve_parameters
from coordinator.domain.scenario_types import type_mismatches
from coordinator.domain.schedule import ScheduleError, parse_schedule, parse_zone
from coordinator.domain.selection import SelectionError, label_selector_to_string, namespace_allowed, select_targets
from coordinator.engine.probing import ProbeReach
from coordinator.engine.probing import refusal as probe_refusal
from coordinator.faults import kind_problems
from coordinator.validation.source import Document, FieldPath, Finding, format_path

# Stand-ins for parameters without a default, so the rest of the scenario can still be checked.
_SAMPLES: dict[str, Value] = {
    ParameterType.STRING: "sample",
    ParameterType.INTEGER: 1,
    ParameterType.NUMBER: 1,
    ParameterType.BOOLEAN: True,
    ParameterType.DURATION: "1s",
}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> FieldPath:
    """``spec.steps[0].duration`` as ``("spec", "steps", 0, "duration")``."""
    return tuple(int(index) if index else name for name, index in _PATH_PART.findall(text))


def _at(data: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# --- label selectors --------------------------------------------------------------------------------------------


@dataclass
class _KeyConstraint:
    must_exist: bool = False
    must_not_exist: bool = False
    allowed: set[str] | None = None  # None: any value
    excluded: set[str] = field(default_factory=set)
    said: list[str] = field(default_factory=list)

    def impossible(self) -> bool:
        if self.must_exist and self.must_not_exist:
            return True
        return self.allowed is not None and not (self.allowed - self.excluded)


def selector_contradictions(selector: LabelSelector) -> Iterator[tuple[FieldPath, str]]:
    """Requirements no set of labels can satisfy together, each at the requirement that makes it impossible."""
    keys: dict[str, _KeyConstraint] = {}
    for key, value in selector.matchLabels.items():
        keys[key] = _KeyConstraint(must_exist=True, allowed={value}, said=[f"matchLabels {key}={value}"])
    for index, requirement in enumerate(selector.matchExpressions):
        state = keys.setdefault(requirement.key, _KeyConstraint())
        if state.impossible():
            continue  # reported at the requirement that made it so
        values = set(requirement.values)
        operator = requirement.operator
        shown = ", ".join(sorted(values))
        if operator == SelectorOperator.IN:
            state.must_exist = True
            state.allowed = values if state.allowed is None else state.allowed & values
            text = f"{requirement.key} in ({shown})"
        elif operator == SelectorOperator.NOT_IN:
            state.excluded |= values
            text = f"{requirement.key} notin ({shown})"
        elif operator == SelectorOperator.EXISTS:
            state.must_exist = True
            text = f"{requirement.key} exists"
        else:
            state.must_not_exist = True
            text = f"{requirement.key} does not exist"
        if state.impossible():
            yield (
                ("matchExpressions", index),
                f"the selector can never match: {text} contradicts {' and '.join(state.said)}",
            )
        state.said.append(text)


# --- ChaosScenario ------------------------------------------------------------------------------------------------


@dataclass
class ScenarioFacts:
    """What a TestRun in the same file set needs to know about its scenario: its declarations, its spec as written
    (defaulted) to render with the run's values, and what the scenario's own findings already say."""

    declared: list[Parameter]
    spec: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""  # "ChaosScenario ns/name", for messages
    namespace: str | None = None
    reported: frozenset[tuple[str, str]] = frozenset()  # (field, message) of the scenario's own rule findings


def declared_parameters(document: Document, spec: Mapping[str, Any], findings: list[Finding]) -> list[Parameter]:
    """The parameters ``spec`` declares; a duplicate name is added to ``findings``."""
    declared: list[Parameter] = []
    seen: set[str] = set()
    for index, raw in enumerate(spec.get("parameters") or []):
        try:
            parameter = Parameter.model_validate(raw)
        except ValidationError:
            continue  # the schema findings cover it
        if parameter.name in seen:
            findings.append(
                document.finding(("spec", "parameters", index, "name"), f"duplicate parameter {parameter.name!r}")
            )
        seen.add(parameter.name)
        declared.append(parameter)
    return declared


def parameter_values(
    document: Document, declared: Sequence[Parameter], findings: list[Finding]
) -> tuple[dict[str, Value], set[str]]:
    """A value for each declared parameter: its default, or a stand-in (named in the set returned) when it has
    none or a bad one, so the rest of the spec can still be checked; a bad default is added to ``findings``."""
    values: dict[str, Value] = {}
    sampled: set[str] = set()
    for index, parameter in enumerate(declared):
        if parameter.default is None:
            values[parameter.name] = _SAMPLES[parameter.type]
            sampled.add(parameter.name)
            continue
        try:
            values[parameter.name] = coerce(parameter.type, parameter.default)
        except ValueError as exc:
            findings.append(
                document.finding(("spec", "parameters", index, "default"), f"parameter {parameter.name}: {exc}")
            )
            values[parameter.name] = _SAMPLES[parameter.type]
            sampled.add(parameter.name)
    return values, sampled


def scenario_findings(document: Document, spec: Mapping[str, Any], reach: ProbeReach) -> list[Finding]:
    """Semantic problems of a schema-valid, defaulted ChaosScenario spec."""
    findings: list[Finding] = []
    declared = declared_parameters(document, spec, findings)
    values, sampled = parameter_values(document, declared, findings)
    try:
        rendered = render(spec, values)
    except ParameterError as exc:
        findings += [document.finding(parse_path(p.field), p.message) for p in exc.problems]
        return findings
    try:
        scenario = ChaosScenarioSpec.model_validate(rendered)
    except ValidationError as exc:
        for error in exc.errors():
            path = ("spec", *error["loc"])
            raw = _at(spec, error["loc"])
            names = REFERENCE.findall(raw) if isinstance(raw, str) else []
            if any(name in sampled for name in names):
                continue  # a stand-in value: only a TestRun can say
            note = f" (the value of parameter {names[0]})" if names else ""
            findings.append(document.finding(path, f"{error['msg']}{note}"))
        return findings
    own = (document.data.get("metadata") or {}).get("namespace")
    findings += [document.finding(path, message) for path, message in scenario_rules(scenario, reach, own)]
    findings += schedule_findings(document, scenario, declared)
    return findings


def scenario_warnings(document: Document, spec: Mapping[str, Any]) -> list[Finding]:
    """A fault that does not serve the scenario's ``type`` (domain/scenario_types.py), at the fault's ``type``; a
    deprecated lifecycle (domain/lifecycle.py), at ``spec.lifecycle``."""
    warnings = [
        document.finding(("spec", "steps", m.step, "faults", m.fault, "type"), m.message)
        for m in type_mismatches(str(spec.get("type") or ""), spec.get("steps") or [])
    ]
    if lifecycle_of(spec) == DEPRECATED:
        warnings.append(document.finding(("spec", "lifecycle"), deprecation_warning(f"ChaosScenario {document.ref}")))
    return warnings


def scenario_rules(
    scenario: ChaosScenarioSpec, reach: ProbeReach, own_namespace: str | None
) -> list[tuple[FieldPath, str]]:
    """What the operator refuses in a rendered, model-valid scenario when a run starts or plans a step: a fault
    for another target kind, protected namespaces, a label selector it cannot send or that never matches, a probe
    that asks for what no probe may reach (a Secret, a protected namespace, a denied address)."""
    protected = reach.protected
    findings: list[tuple[FieldPath, str]] = []
    probes = scenario.steadyState.probes if scenario.steadyState else []
    for index, probe in enumerate(probes):
        refused = probe_refusal(probe, own_namespace or "default", reach)
        if refused is not None:
            where = ("spec", "steadyState", "probes", index, *parse_path(refused.field))
            findings.append((where, refused.reason))
    kind = str(scenario.target.kind)
    findings += kind_problems(scenario)
    if kind != TargetKind.NODE:
        for index, namespace in enumerate(scenario.target.namespaces):
            if namespace in protected:
                findings.append(
                    (
                        ("spec", "target", "namespaces", index),
                        f"namespace {namespace!r} is protected: the operator never touches it",
                    )
                )
        if not scenario.target.namespaces and own_namespace in protected:
            findings.append(
                (
                    ("metadata", "namespace"),
                    f"the targets are in the scenario's own namespace {own_namespace!r}, which is protected",
                )
            )
    try:
        # The value is checked before any candidate is looked at: what a step's selection refuses, whatever the
        # cluster holds (a templated percent over 100 passes the CRD's rule, which cannot read a reference).
        select_targets([], scenario.mode, scenario.value)
    except SelectionError as exc:
        findings.append((("spec", "value"), exc.args[0] if exc.args else str(exc)))
    selector = scenario.target.labelSelector
    if selector is not None:
        base = ("spec", "target", "labelSelector")
        try:
            label_selector_to_string(selector)
        except SelectionError as exc:
            findings.append((base, exc.args[0] if exc.args else str(exc)))
        findings += [((*base, *where), message) for where, message in selector_contradictions(selector)]
    return findings


def schedule_findings(
    document: Document, scenario: ScenarioScheduling, declared: list[Parameter], owner: str = "scenario"
) -> list[Finding]:
    """Problems of the schedule and of the values its runs are created with (``owner``: whose parameters)."""
    if not scenario.schedule:
        return []
    findings = []
    try:
        parse_zone(scenario.timeZone)
    except ScheduleError as exc:
        return [document.finding(("spec", "timeZone"), str(exc))]
    try:
        parse_schedule(scenario.schedule, scenario.timeZone)
    except ScheduleError as exc:
        findings.append(document.finding(("spec", "schedule"), str(exc)))
    overrides = scenario.runTemplate.parameters if scenario.runTemplate else {}
    try:
        resolve_parameters(declared, overrides)
    except ParameterError as exc:
        index = {parameter.name: i for i, parameter in enumerate(declared)}
        for problem in exc.problems:
            path = parse_path(problem.field)
            if path[:2] != ("spec", "parameters") or len(path) != 3 or not isinstance(path[2], str):
                continue  # a bad default: reported with the declarations
            field = ("spec", "runTemplate", "parameters", path[2])
            # A value the template lacks is best shown at the declaration that has no default.
            where = field if field in document.lines else ("spec", "parameters", index.get(path[2], 0))
            message = problem.message.replace("the TestRun", "spec.runTemplate").replace("the scenario", f"the {owner}")
            findings.append(Finding(document.file, document.line_of(where), message, format_path(field)))
    return findings


# --- TestRun ------------------------------------------------------------------------------------------------------


def testrun_findings(
    document: Document, spec: Mapping[str, Any], scenario: ScenarioFacts | None, reach: ProbeReach
) -> list[Finding]:
    """Semantic problems of a schema-valid TestRun. When its scenario is in the files checked, the run start is
    checked as the operator makes it: the run's parameters resolved, the scenario rendered with them and validated,
    and the scenario's rules applied to the result."""
    try:
        run = TestRunSpec.model_validate(spec)
    except ValidationError as exc:
        return [
            document.finding(parse_path(validation_problem(error)[0]), validation_problem(error)[1])
            for error in exc.errors()
        ]
    if run.scenarioRef is None:
        return []  # a workflow run: its workflow's findings say what its nodes would meet
    own = (document.data.get("metadata") or {}).get("namespace")
    elsewhere = run.scenarioRef.namespace
    if elsewhere and elsewhere != own:
        # As the operator asks before it reads a scenario of another namespace; whether that namespace opted in
        # is the cluster's to say, so only the protected namespaces are known here.
        allowed, reason = namespace_allowed(
            elsewhere, protected=reach.protected, namespace_labels={}, require_opt_in=False
        )
        if not allowed:
            return [document.finding(("spec", "scenarioRef", "namespace"), reason)]
    if scenario is None:
        return []
    stopped = run_refusal(scenario.name, lifecycle_of(scenario.spec), run.dryRun)
    if stopped is not None:
        # A draft's run is admitted and ends Error when it starts; an archived scenario's run is refused at
        # admission instead (testrun_admission_findings).
        return [document.finding(("spec", "dryRun"), stopped[1])] if stopped[0] == DRAFT_REASON else []
    findings = []
    try:
        values = resolve_parameters(scenario.declared, run.parameters)
    except ParameterError as exc:
        for problem in exc.problems:
            path = parse_path(problem.field)
            if len(path) == 3 and path[:2] == ("spec", "parameters"):
                findings.append(document.finding(path, problem.message))
        return findings
    return _rendered_findings(document, run, scenario, values, reach)


def testrun_admission_findings(
    document: Document, spec: Mapping[str, Any], scenario: ScenarioFacts | None
) -> list[Finding]:
    """What the TestRun webhook refuses besides rights: a run of an archived scenario (when it is in the files)."""
    ref = spec.get("scenarioRef")
    if scenario is None or not isinstance(ref, Mapping):
        return []
    stopped = run_refusal(scenario.name, lifecycle_of(scenario.spec), bool(spec.get("dryRun")))
    if stopped is None or stopped[0] != ARCHIVED_REASON:
        return []
    return [document.finding(("spec", "scenarioRef", "name"), stopped[1])]


def _references_under(raw: Any) -> list[str]:
    """The parameters referenced anywhere in ``raw`` (a value of the scenario spec as written)."""
    if isinstance(raw, str):
        return REFERENCE.findall(raw)
    if isinstance(raw, Mapping):
        return [name for value in raw.values() for name in _references_under(value)]
    if isinstance(raw, list):
        return [name for value in raw for name in _references_under(value)]
    return []


def _rendered_findings(
    document: Document,
    run: TestRunSpec,
    scenario: ScenarioFacts,
    values: Mapping[str, Value],
    reach: ProbeReach,
) -> list[Finding]:
    """What the operator would refuse at this run's start that the scenario's own findings do not already say:
    a problem that comes from a parameter's value is reported at the TestRun, at the parameter when the run set
    it (else at its scenarioRef), naming the scenario's field."""

    def at(names: Sequence[str]) -> FieldPath:
        given = [name for name in names if name in run.parameters]
        return ("spec", "parameters", given[0]) if given else ("spec", "scenarioRef")

    try:
        rendered = render(scenario.spec, values)
    except ParameterError:
        return []  # a bad reference: the scenario's own findings say it
    try:
        parsed = ChaosScenarioSpec.model_validate(rendered)
    except ValidationError as exc:
        findings = []
        for error in exc.errors():
            names = _references_under(_at(scenario.spec, error["loc"]))
            if not names:
                continue  # not from a parameter: the scenario's own findings say it
            field, problem = validation_problem(error)
            note = f" (the value of parameter {names[0]})"
            findings.append(
                document.finding(at(names), f"with this run's parameters, {scenario.name}: {field}: {problem}{note}")
            )
        return findings
    findings = []
    for path, message in scenario_rules(parsed, reach, scenario.namespace):
        if (format_path(path), message) in scenario.reported:
            continue
        names = _references_under(_at(scenario.spec, path[1:])) if path[:1] == ("spec",) else []
        text = f"with this run's parameters, {scenario.name}: {format_path(path)}: {message}"
        findings.append(document.finding(at(names), text))
    return findings
