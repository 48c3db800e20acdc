"""The checks a ChaosWorkflow and a workflow run meet, made offline: the DAG (unknown nodes, cycles), the scenarios
its nodes name (which must be among the files checked), each node's parameters against its scenario's
declarations with the workflow's ``{{ params.NAME }}`` resolved, the workflow's own rules (failure policy,
assertions, probes, schedule), and a workflow TestRun's parameters against the workflow's declarations."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from coordinator.api.models import Parameter, TestRunSpec
from coordinator.api.workflow import ChaosWorkflowSpec, WorkflowNode, dag_problems
from coordinator.domain.fieldpaths import validation_problem
from coordinator.domain.parameters import REFERENCE, ParameterError, Value, render, resolve_parameters
from coordinator.engine.probing import ProbeReach
from coordinator.engine.probing import refusal as probe_refusal
from coordinator.validation.semantics import (
    ScenarioFacts,
    declared_parameters,
    parameter_values,
    parse_path,
    schedule_findings,
)
from coordinator.validation.source import Document, FieldPath, Finding, format_path

ScenarioKey = tuple[object, object]  # (namespace, name) of a ChaosScenario among the files checked


@dataclass
class WorkflowFacts:
    """What a workflow TestRun in the same file set needs to know about its workflow."""

    declared: list[Parameter]
    nodes: list[tuple[int, WorkflowNode, ScenarioFacts]] = field(default_factory=list)  # scenario nodes resolved
    name: str = ""  # "ChaosWorkflow ns/name", for messages
    reported: frozenset[tuple[str, str]] = frozenset()  # (field, message) of the workflow's own findings


def _named_item(spec: Mapping[str, Any], loc: Sequence[str | int], message: str) -> FieldPath:
    """Where a model error about a list of named items belongs: at the item its message names (``assertion x:
    ...``), else at the list."""
    path: FieldPath = ("spec", *loc)
    items = spec.get(str(loc[0])) if len(loc) == 1 else None
    named = re.match(r"^\w+ ([a-z0-9-]+): ", message)
    if isinstance(items, list) and named:
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("name") == named.group(1):
                return (*path, index)
    return path


def _dependency_entry(node: WorkflowNode, message: str) -> int | None:
    """The ``dependsOn`` entry a ``dag_problems`` message is about, so the finding points at its line: the node it
    quotes (unknown), the node itself, or the next node of the cycle it names (``dependency cycle: a -> b -> a``
    is about a's entry b). None when the message names none of them."""
    cycle = message.removeprefix("dependency cycle: ")
    if cycle != message:
        names = cycle.split(" -> ")
        named = names[1] if len(names) > 1 else None
    elif "itself" in message:
        named = node.name
    else:
        quoted = re.search(r"'([^']*)'", message)
        named = quoted.group(1) if quoted else None
    return node.dependsOn.index(named) if named in node.dependsOn else None


def node_problems(
    index: int,
    node: WorkflowNode,
    scenario: ScenarioFacts,
    values: Mapping[str, Value],
    unknowable: frozenset[str] = frozenset(),
) -> list[tuple[FieldPath, str]]:
    """(field, message) for a node's parameters: each value rendered with the workflow's ``values`` (an unknown
    or malformed reference is an error), then resolved against the scenario's declarations as a TestRun's
    parameters are when the node's child run starts. A value that references a parameter in ``unknowable`` (a
    stand-in, when the workflow declares it without a default) is not judged: only a run can say."""
    base: FieldPath = ("spec", "nodes", index, "parameters")
    problems: list[tuple[FieldPath, str]] = []
    rendered: dict[str, object] = {}
    from_workflow: dict[str, list[str]] = {}  # node parameter -> the workflow parameters its value references
    for name, raw in node.parameters.items():
        try:
            # Wrapped, so a parameter named like a field that is never rendered (description) still is.
            rendered[name] = render({"value": raw}, values)["value"]
        except ParameterError as exc:
            problems += [((*base, name), problem.message) for problem in exc.problems]
            continue
        if isinstance(raw, str) and REFERENCE.search(raw):
            from_workflow[name] = REFERENCE.findall(raw)
    if problems:
        return problems
    try:
        resolve_parameters(scenario.declared, rendered)
    except ParameterError as exc:
        for problem in exc.problems:
            path = parse_path(problem.field)
            if len(path) != 3 or path[:2] != ("spec", "parameters") or not isinstance(path[2], str):
                continue  # a bad default of the scenario: its own findings say it
            name = path[2]
            if unknowable.intersection(from_workflow.get(name, ())):
                continue
            message = problem.message.replace("the scenario", scenario.name).replace("the TestRun", "the node")
            if name in from_workflow:
                message += f" (the value of workflow parameter {from_workflow[name][0]})"
            where = (*base, name) if name in node.parameters else ("spec", "nodes", index, "scenarioRef")
            problems.append((where, message))
    return problems


def workflow_findings(
    document: Document, spec: Mapping[str, Any], scenarios: Mapping[ScenarioKey, ScenarioFacts], reach: ProbeReach
) -> tuple[list[Finding], WorkflowFacts]:
    """Semantic problems of a schema-valid, defaulted ChaosWorkflow spec, and what its runs need to know."""
    findings: list[Finding] = []
    declared = declared_parameters(document, spec, findings)
    values, sampled = parameter_values(document, declared, findings)
    own = (document.data.get("metadata") or {}).get("namespace")
    facts = WorkflowFacts(declared, name=f"ChaosWorkflow {document.ref}")
    nodes: list[WorkflowNode] = []
    for index, raw in enumerate(spec.get("nodes") or []):
        try:
            nodes.append(WorkflowNode.model_validate(raw))
        except ValidationError as exc:
            for error in exc.errors():
                findings.append(document.finding(("spec", "nodes", index, *error["loc"]), validation_problem(error)[1]))
    if len(nodes) < len(spec.get("nodes") or []):
        return findings, facts
    dag = dag_problems(nodes)
    for index, where, message in dag:
        path: FieldPath = ("spec", "nodes", index, where)
        entry = _dependency_entry(nodes[index], message) if where == "dependsOn" else None
        findings.append(document.finding(path if entry is None else (*path, entry), message))
    for index, node in enumerate(nodes):
        if node.scenarioRef is None:
            continue
        scenario = scenarios.get((own, node.scenarioRef.name))
        if scenario is None:
            findings.append(
                document.finding(
                    ("spec", "nodes", index, "scenarioRef", "name"),
                    f"ChaosScenario {own or '(default)'}/{node.scenarioRef.name} is not among the files checked "
                    "(a node runs a scenario of the workflow's namespace)",
                )
            )
            continue
        facts.nodes.append((index, node, scenario))
        problems = node_problems(index, node, scenario, values, frozenset(sampled))
        findings += [document.finding(path, message) for path, message in problems]
    if not dag:  # the model refuses the same DAG: said once, above
        findings += _model_findings(document, spec, declared, own, reach)
    facts.reported = frozenset((f.field, f.message) for f in findings)
    return findings, facts


def _model_findings(
    document: Document, spec: Mapping[str, Any], declared: list[Parameter], own: str | None, reach: ProbeReach
) -> list[Finding]:
    """What the model refuses in a workflow with a sound DAG (an audit_trail assertion, ...), else what its
    steady-state probes may not reach and what its schedule gets wrong."""
    findings: list[Finding] = []
    try:
        workflow = ChaosWorkflowSpec.model_validate(spec)
    except ValidationError as exc:
        for error in exc.errors():
            message = validation_problem(error)[1]
            findings.append(document.finding(_named_item(spec, error["loc"], message), message))
        return findings
    probes = workflow.steadyState.probes if workflow.steadyState else []
    for index, probe in enumerate(probes):
        refused = probe_refusal(probe, own or "default", reach)
        if refused is not None:
            where = ("spec", "steadyState", "probes", index, *parse_path(refused.field))
            findings.append(document.finding(where, refused.reason))
    findings += schedule_findings(document, workflow, declared, owner="workflow")
    return findings


def workflow_run_findings(document: Document, spec: Mapping[str, Any], workflow: WorkflowFacts | None) -> list[Finding]:
    """Semantic problems of a schema-valid workflow TestRun: its parameters resolved against the workflow's
    declarations, and each node's parameters rendered with the result, as the run would render them. A problem the
    workflow's own findings do not already say is reported at the run parameter it comes from."""
    try:
        run = TestRunSpec.model_validate(spec)
    except ValidationError as exc:
        return [
            document.finding(parse_path(validation_problem(error)[0]), validation_problem(error)[1])
            for error in exc.errors()
        ]
    if workflow is None:
        return []  # the workflow is not among the files checked: the cluster may hold it
    findings = []
    try:
        values = resolve_parameters(workflow.declared, run.parameters)
    except ParameterError as exc:
        for problem in exc.problems:
            path = parse_path(problem.field)
            if len(path) == 3 and path[:2] == ("spec", "parameters"):
                findings.append(document.finding(path, problem.message.replace("the scenario", "the workflow")))
        return findings
    for index, node, scenario in workflow.nodes:
        for path, message in node_problems(index, node, scenario, values):
            if (format_path(path), message) in workflow.reported:
                continue
            names = [n for n in REFERENCE.findall(str(node.parameters.get(str(path[-1]), ""))) if n in run.parameters]
            at: FieldPath = ("spec", "parameters", names[0]) if names else ("spec", "workflowRef")
            findings.append(
                document.finding(at, f"with this run's parameters, {workflow.name}: {format_path(path)}: {message}")
            )
    return findings
