"""What the validating webhook checks: may the requester do what this TestRun or ChaosScenario would do?

The same check runs again before a run injects anything (engine/run/admission.py), so a right lost between
admission and the run, or a scheduled run, is caught there. At admission only what can be known is checked: a
TestRun whose scenario does not exist yet (GitOps applies both at once) or does not render is let through, and the
run itself then ends Error with the precise problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from coordinator.adapters.kube import KubeApi, resource_path
from coordinator.adapters.sharedreads import shared_get_or_none
from coordinator.api.models import REQUESTED_BY_ANNOTATION, ChaosScenarioSpec, Requester, TestRunSpec
from coordinator.api.workflow import ChaosWorkflowSpec
from coordinator.domain.admission import annotation_of, requester_in
from coordinator.domain.fieldpaths import validation_problem
from coordinator.domain.lifecycle import ARCHIVED_REASON, DEPRECATED, deprecation_warning, lifecycle_of, run_refusal
from coordinator.domain.permissions import notification_needs, scenario_read_need
from coordinator.domain.scenario_types import type_mismatches
from coordinator.engine.authorization import refusals, scenario_refusals
from coordinator.engine.run.admission import render_scenario
from coordinator.engine.run.errors import RunEnded
from coordinator.settings import Settings


def _where(kind: str, body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{kind} {metadata.get('namespace')}/{metadata.get('name') or metadata.get('generateName', '') + '*'}"


async def _refusals(
    client: KubeApi,
    settings: Settings,
    requester: Requester,
    named: str,
    raw: Mapping[str, Any],
    overrides: Mapping[str, object],
    namespace: str,
    where: str,
) -> list[str]:
    try:
        spec = ChaosScenarioSpec.model_validate(render_scenario(where, named, raw, overrides))
    except (RunEnded, ValidationError):
        return []  # not this webhook's to say: the schema, or the run when it starts, names the problem
    return await scenario_refusals(client, settings, requester, spec, namespace)


async def testrun_admission_refusals(client: KubeApi, settings: Settings, body: Mapping[str, Any]) -> list[str]:
    """Why the TestRun ``body`` (as the mutating webhook left it) must be refused; empty when it may be created."""
    where = _where("TestRun", body)
    requester = requester_in(annotation_of(body))
    if requester is None:
        return [f"{where}: no requester recorded in the annotation {REQUESTED_BY_ANNOTATION}"]
    try:
        spec = TestRunSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return []  # the CRD schema refuses it with its own message
    own = str((body.get("metadata") or {}).get("namespace") or "")
    if spec.workflowRef is not None:
        workflow = await shared_get_or_none(client, resource_path("ChaosWorkflow", own, spec.workflowRef.name))
        if workflow is None:
            return []  # the run ends Error, naming the missing workflow
        named = f"ChaosWorkflow {own}/{spec.workflowRef.name}"
        return await _node_refusals(
            client, settings, requester, named, workflow.get("spec") or {}, spec.parameters, own, where
        )
    namespace = spec.scenario.namespace or own
    # A scenario in another namespace is read with the requester's rights too, before the webhook reads it.
    if namespace != own and (refused := await refusals(client, requester, [scenario_read_need(namespace)])):
        return refused
    scenario = await shared_get_or_none(client, resource_path("ChaosScenario", namespace, spec.scenario.name))
    if scenario is None:
        return []
    named = f"ChaosScenario {namespace}/{spec.scenario.name}"
    stopped = run_refusal(named, lifecycle_of(scenario.get("spec") or {}), spec.dryRun)
    if stopped is not None and stopped[0] == ARCHIVED_REASON:
        # Refused here for a quick answer; a run created while the webhook was away ends Error when it starts. A
        # draft's run is admitted and ends Error, on the record, naming dryRun.
        return [f"{where}: {stopped[1]}"]
    return await _refusals(
        client, settings, requester, named, scenario.get("spec") or {}, spec.parameters, namespace, where
    )


def _owner_check(
    kind: str, body: Mapping[str, Any]
) -> tuple[str, Requester | None, str, Mapping[str, Any], Mapping[str, Any]]:
    """What checking a ChaosScenario or ChaosWorkflow ``body`` needs: where it is (for messages), its recorded
    requester (None without one), its namespace, its spec, and the parameters its scheduled and triggered runs get
    (``spec.runTemplate.parameters``)."""
    raw = body.get("spec") or {}
    template = raw.get("runTemplate")
    overrides = template.get("parameters") if isinstance(template, Mapping) else None
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    return (
        _where(kind, body),
        requester_in(annotation_of(body)),
        namespace,
        raw,
        overrides if isinstance(overrides, Mapping) else {},
    )


def scenario_admission_warnings(body: Mapping[str, Any]) -> list[str]:
    """What kubectl shows as warnings for a ChaosScenario: each fault that does not serve its ``type``, and a
    deprecated lifecycle."""
    spec = body.get("spec") or {}
    warnings = [
        f"spec.steps[{m.step}].faults[{m.fault}].type: {m.message}"
        for m in type_mismatches(str(spec.get("type") or ""), spec.get("steps") or [])
    ]
    if lifecycle_of(spec) == DEPRECATED:
        warnings.append(f"spec.lifecycle: {deprecation_warning(_where('ChaosScenario', body))}")
    return warnings


async def scenario_admission_refusals(client: KubeApi, settings: Settings, body: Mapping[str, Any]) -> list[str]:
    """Why the ChaosScenario ``body`` must be refused: its requester may not do what it does with the parameters
    its scheduled runs get (``spec.runTemplate.parameters`` over the declared defaults)."""
    where, requester, namespace, raw, overrides = _owner_check("ChaosScenario", body)
    if requester is None:
        return [f"{where}: no requester recorded in the annotation {REQUESTED_BY_ANNOTATION}"]
    return await _refusals(client, settings, requester, where, raw, overrides, namespace, where)


async def _node_refusals(
    client: KubeApi,
    settings: Settings,
    requester: Requester,
    named: str,
    raw: Mapping[str, Any],
    overrides: Mapping[str, object],
    namespace: str,
    where: str,
) -> list[str]:
    """Why ``requester`` may not run the workflow ``raw`` (with ``overrides`` for its parameters): each scenario
    node's scenario checked with the node's parameters, as its child run will be (once per distinct pair)."""
    try:
        workflow = ChaosWorkflowSpec.model_validate(render_scenario(where, named, raw, overrides))
    except (RunEnded, ValidationError):
        return []  # the schema or the run names the problem
    # The workflow's own webhooks: reading a urlFrom Secret (the nodes' scenarios name theirs below).
    found = await refusals(client, requester, notification_needs(workflow.notifications, namespace))
    checked: set[str] = set()
    for node in workflow.nodes:
        if node.scenarioRef is None:
            continue
        key = json.dumps([node.scenarioRef.name, node.parameters], sort_keys=True)
        if key in checked:
            continue
        checked.add(key)
        scenario = await client.get_or_none(resource_path("ChaosScenario", namespace, node.scenarioRef.name))
        if scenario is None:
            continue  # GitOps may apply the scenario after the workflow; the node's run names it if it is missing
        scenario_named = f"ChaosScenario {namespace}/{node.scenarioRef.name}"
        refused = await _refusals(
            client,
            settings,
            requester,
            scenario_named,
            scenario.get("spec") or {},
            node.parameters,
            namespace,
            f"{where} node {node.name}",
        )
        found += [f"node {node.name}: {reason}" for reason in refused]
    return found


def workflow_problems(body: Mapping[str, Any]) -> list[str]:
    """Why the ChaosWorkflow ``body`` is invalid beyond its schema (a cycle, an unknown dependency), each naming
    its field; empty when the model accepts it."""
    try:
        ChaosWorkflowSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        where = _where("ChaosWorkflow", body)
        return [f"{where}: {field}: {problem}" for field, problem in map(validation_problem, exc.errors())]
    return []


async def workflow_admission_refusals(client: KubeApi, settings: Settings, body: Mapping[str, Any]) -> list[str]:
    """Why the ChaosWorkflow ``body`` must be refused: its requester may not run one of its nodes' scenarios with
    the parameters its scheduled and triggered runs get (``spec.runTemplate.parameters``)."""
    where, requester, namespace, raw, overrides = _owner_check("ChaosWorkflow", body)
    if requester is None:
        return [f"{where}: no requester recorded in the annotation {REQUESTED_BY_ANNOTATION}"]
    return await _node_refusals(client, settings, requester, where, raw, overrides, namespace, where)
