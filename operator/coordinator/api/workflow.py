"""The ChaosWorkflow resource: scenarios chained into a DAG, run as one TestRun with a child TestRun per node.

A node runs a ChaosScenario of the workflow's namespace (``scenarioRef``) or waits (``suspend``: a duration, or
until ``chaos.coordinator.dev/resume=true`` is set on the workflow run). It starts once every node it
``dependsOn`` has ended and its ``when`` holds: ``Passed`` (every dependency passed, the default), ``Failed`` (one
of them failed) or ``Always``. Nodes without a path between them run in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from coordinator.api.base import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    MAX_STEP_DURATION,
    Model,
    RunTimeout,
    duration_check,
    duration_field,
    unique_names,
)
from coordinator.api.models import ChaosScenarioStatus as _ScenarioStatus
from coordinator.api.models import Parameter, Resource, ScenarioScheduling
from coordinator.api.notifications import Notifications
from coordinator.api.probes import Assertion, AssertionType, ProbeType, SteadyState
from coordinator.api.triggers import Triggers

# Node names go into the child TestRuns' names (<run>-<node>) and into a label value.
MAX_NODE_NAME = 40
MAX_NODES = 200
SuspendDuration = Annotated[str, duration_field(MAX_STEP_DURATION), duration_check(MAX_STEP_DURATION)]


class When(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    ALWAYS = "Always"


class FailurePolicy(StrEnum):
    STOP_ON_FAILURE = "StopOnFailure"
    CONTINUE = "Continue"


class NodeScenarioRef(Model):
    name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="The ChaosScenario, in the workflow's namespace."
    )


class Suspend(Model):
    """Wait before the nodes that depend on this one: for a duration, or for an approval."""

    duration: SuspendDuration | None = Field(
        default=None,
        description="How long to wait. Without it the node waits until the annotation "
        "chaos.coordinator.dev/resume=true is set on the workflow run (which also ends a timed wait early).",
    )


class WorkflowNode(Model):
    """One node of the DAG: a scenario to run, or a suspend gate."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=MAX_NODE_NAME, description="Unique within the workflow.")
    scenarioRef: NodeScenarioRef | None = Field(default=None, description="The scenario this node runs.")
    suspend: Suspend | None = Field(default=None, description="Make this node a suspend gate instead.")
    parameters: dict[str, int | str] = Field(
        default_factory=dict,
        description="Values for the scenario's parameters. A value may reference the workflow's parameters as "
        "{{ params.NAME }}.",
    )
    dependsOn: list[str] = Field(
        default_factory=list, max_length=32, description="Nodes that must end before this one starts."
    )
    when: When = Field(
        default=When.PASSED,
        description="Run after the dependencies: Passed (all of them passed), Failed (one of them failed, errored or "
        "timed out) or Always (whatever they did). A node whose condition does not hold is Skipped.",
    )
    timeout: RunTimeout | None = Field(default=None, description="spec.timeout of the node's TestRun.")

    cel_rules = (
        ("has(self.scenarioRef) != has(self.suspend)", "exactly one of scenarioRef and suspend is required"),
        ("!has(self.suspend) || !has(self.parameters)", "a suspend node takes no parameters"),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> WorkflowNode:
        if (self.scenarioRef is None) == (self.suspend is None):
            raise ValueError(f"node {self.name}: exactly one of scenarioRef and suspend is required")
        if self.suspend is not None and self.parameters:
            raise ValueError(f"node {self.name}: a suspend node takes no parameters")
        return self


def dag_problems(nodes: Sequence[WorkflowNode]) -> list[tuple[int, str, str]]:
    """(node index, field, message) for each unknown dependency and each cycle in ``nodes`` (pure)."""
    names = {node.name for node in nodes}
    problems: list[tuple[int, str, str]] = []
    for index, node in enumerate(nodes):
        for dep in node.dependsOn:
            if dep not in names:
                problems.append((index, "dependsOn", f"unknown node {dep!r}"))
            elif dep == node.name:
                problems.append((index, "dependsOn", "a node cannot depend on itself"))
    cycle = find_cycle({node.name: [d for d in node.dependsOn if d in names] for node in nodes})
    if cycle is not None:
        index = next(i for i, node in enumerate(nodes) if node.name == cycle[0])
        problems.append((index, "dependsOn", "dependency cycle: " + " -> ".join([*cycle, cycle[0]])))
    return problems


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of ``graph`` (node -> the nodes it depends on) as a list of names, or None (pure, iterative DFS)."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                if node in on_path:
                    return path[path.index(node) :]
                if node in done:
                    continue
                path.append(node)
                on_path.add(node)
            deps = [d for d in graph.get(node, ()) if d != node]
            if index < len(deps):
                stack.append((node, index + 1))
                stack.append((deps[index], 0))
            else:
                done.add(node)
                on_path.discard(node)
                path.pop()
    return None


CMD_PROBES_IN_SCENARIOS = "cmd probes belong in the nodes' scenarios, not in a workflow's steady state"


class ChaosWorkflowSpec(ScenarioScheduling, Triggers, Notifications):
    """Scenarios run as a DAG: in series, in parallel and on conditions, under one steady state."""

    description: str | None = Field(default=None, max_length=4096, description="What this workflow tests and why.")
    nodes: list[WorkflowNode] = Field(
        min_length=1, max_length=MAX_NODES, description="The DAG: each node runs a scenario or waits."
    )
    parameters: list[Parameter] = Field(
        default_factory=list,
        description="Parameters a workflow run may set (TestRun spec.parameters); nodes reference them as "
        "{{ params.NAME }} in their parameters.",
    )
    failurePolicy: FailurePolicy = Field(
        default=FailurePolicy.STOP_ON_FAILURE,
        description="When a node fails: StopOnFailure aborts the running nodes (every fault reverted) and skips the "
        "nodes not started, except those whose when is Failed or Always; Continue runs every node whose when holds.",
    )
    steadyState: SteadyState | None = Field(
        default=None,
        description="Probes held across the whole workflow: checked before the first node (before, edge), sampled "
        "while it runs (during, continuous), and after the last (after, edge).",
    )
    assertions: list[Assertion] = Field(
        default_factory=list,
        max_length=32,
        description="Verdicts over the whole workflow, from its probes (recovery_time: the slowest node's).",
    )

    cel_rules = (
        (
            "self.nodes.all(n, self.nodes.exists_one(m, m.name == n.name))",
            "node names must be unique",
            ".nodes",
        ),
        (
            "!has(self.steadyState) || !has(self.steadyState.probes) || "
            "self.steadyState.probes.all(p, p.type != 'cmd')",
            CMD_PROBES_IN_SCENARIOS,
            ".steadyState",
        ),
    )

    @field_validator("steadyState")
    @classmethod
    def _no_cmd_probes(cls, steady: SteadyState | None) -> SteadyState | None:
        # A cmd probe creates Pods: the requester's right to create them is checked for scenarios
        # (domain/permissions.py), not yet for a workflow's own steady state.
        if steady is not None and any(p.type == ProbeType.CMD for p in steady.probes):
            raise ValueError(CMD_PROBES_IN_SCENARIOS)
        return steady

    @field_validator("nodes")
    @classmethod
    def _dag(cls, nodes: list[WorkflowNode]) -> list[WorkflowNode]:
        unique_names(nodes, "node")
        problems = dag_problems(nodes)
        if problems:
            raise ValueError("; ".join(f"nodes[{i}].{field}: {message}" for i, field, message in problems))
        return nodes

    @field_validator("assertions")
    @classmethod
    def _workflow_assertions(cls, assertions: list[Assertion]) -> list[Assertion]:
        unique_names(assertions, "assertion")
        for assertion in assertions:
            if assertion.type == AssertionType.AUDIT_TRAIL:
                raise ValueError(
                    f"assertion {assertion.name}: audit_trail is judged on one run's ledger; declare it on the "
                    "nodes' scenarios"
                )
        return assertions


class ChaosWorkflowStatus(_ScenarioStatus):
    """Statistics over the workflow's finished runs, its schedule and its triggers, maintained by the operator."""


class ChaosWorkflow(Resource):
    """Scenarios chained into a DAG. A TestRun with spec.workflowRef runs it, one child TestRun per node."""

    kind: str = "ChaosWorkflow"
    spec: ChaosWorkflowSpec
    status: ChaosWorkflowStatus | None = None
