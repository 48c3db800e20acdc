"""What a finished TestRun becomes in the history: pure functions from the TestRun object to plain records.

Kept apart from the store so the mapping is unit-tested without a database, and so the benchmark can build
records in bulk the same way the operator does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.api.models import GROUP, WORKFLOW_NODE_LABEL, WORKFLOW_RUN_LABEL, Phase
from coordinator.domain.timestamps import parse_iso

SNAPSHOT_KEY = "scenarioSnapshot"  # where the executor keeps the scenario spec the run used
# Status keys that are bookkeeping about the mirror itself: left out so the stored record is the same whether
# it is written before or after the TestRun's status says it was synced.
UNMIRRORED_STATUS_KEYS = frozenset({"history"})
# What the history keeps of each node of a workflow run (``status.nodes[]``): enough for the report to list the
# nodes in the workflow's order, Skipped and suspend nodes included (they have no child run of their own).
NODE_KEYS = (
    "name",
    "phase",
    "testRun",
    "startedAt",
    "completedAt",
    "reason",
    "message",
    "resilienceScore",
    "recoveryTimeSeconds",
)


@dataclass(frozen=True)
class ScenarioRecord:
    namespace: str
    name: str
    type: str | None = None
    description: str | None = None
    steps: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class EventRecord:
    """One injection from the run's ledger."""

    injection_id: str
    step: int
    fault: str
    target_kind: str
    target_name: str
    state: str
    step_name: str | None = None
    target_namespace: str | None = None
    target_uid: str | None = None
    injected_at: datetime | None = None
    reverted_at: datetime | None = None
    recovered_at: datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class ResultRecord:
    """One probe or assertion outcome."""

    kind: str  # "probe" or "assertion"
    name: str
    type: str | None = None
    passed: bool | None = None
    expected: str | None = None
    actual: str | None = None
    message: str | None = None
    state: str | None = None  # passed, failed, skipped or error; None for a probe without a verdict


@dataclass(frozen=True)
class RunRecord:
    uid: str
    namespace: str
    name: str
    scenario: ScenarioRecord
    phase: str
    completed_at: datetime
    reason: str | None = None
    message: str | None = None
    dry_run: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    duration_seconds: float | None = None
    recovery_seconds: float | None = None
    resilience_score: int | None = None
    targets: int | None = None
    status: dict[str, Any] = field(default_factory=dict)
    requested_by: dict[str, Any] | None = None  # status.requestedBy: who asked for the run
    events: tuple[EventRecord, ...] = ()
    results: tuple[ResultRecord, ...] = ()
    # A workflow run: its ChaosWorkflow ("namespace/name") and its nodes (NODE_KEYS of status.nodes, in order).
    workflow: str | None = None
    nodes: tuple[dict[str, Any], ...] = ()
    # A child of a workflow run: the parent TestRun (uid and name) and the node it ran.
    parent_uid: str | None = None
    parent_name: str | None = None
    node: str | None = None

    @property
    def passed(self) -> bool:
        return self.phase == Phase.PASSED.value


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it, as an aware UTC datetime (None when absent or invalid)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _snapshot(raw: object) -> Mapping[str, Any]:
    """The executor stores the scenario snapshot as a JSON string (older runs: an object)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, Mapping) else {}


def workflow_of(testrun: Mapping[str, Any]) -> str | None:
    """A workflow run's ChaosWorkflow as ``namespace/name``: ``status.workflow``, else ``spec.workflowRef`` (in the
    run's namespace); None for a scenario run."""
    status = testrun.get("status") or {}
    if isinstance(status.get("workflow"), str) and "/" in status["workflow"]:
        return str(status["workflow"])
    ref = (testrun.get("spec") or {}).get("workflowRef")
    if isinstance(ref, Mapping) and ref.get("name"):
        return f"{(testrun.get('metadata') or {}).get('namespace', '')}/{ref['name']}"
    return None


def parent_of(testrun: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(uid, name, node) of the workflow run a child TestRun belongs to, from its owner reference (a TestRun of our
    group) and its workflow-run and workflow-node labels; Nones for a run that is no workflow's child. The owner's
    name comes first: the label holds at most 63 characters of it."""
    meta = testrun.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner: Mapping[str, Any] = next(
        (
            ref
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == "TestRun" and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
        ),
        {},
    )
    name = owner.get("name") or labels.get(WORKFLOW_RUN_LABEL)
    if not name:
        return None, None, None
    return _text(owner.get("uid")), str(name), _text(labels.get(WORKFLOW_NODE_LABEL))


def node_records(status: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """A workflow run's ``status.nodes``, in the workflow's order, as the history keeps them."""
    nodes = status.get("nodes") or []
    return tuple(
        {key: node[key] for key in NODE_KEYS if node.get(key) is not None} for node in nodes if isinstance(node, dict)
    )


def scenario_record(testrun: Mapping[str, Any]) -> ScenarioRecord:
    """The scenario a run executed: from ``status.scenario`` and its snapshot, else from ``spec.scenarioRef``.

    A workflow run executed no scenario: its record is its workflow's ``namespace/name`` (without a type, so a
    scenario of the same name keeps its own); the report tells the two apart by the run's ``workflow``."""
    meta = testrun.get("metadata") or {}
    status = testrun.get("status") or {}
    workflow = workflow_of(testrun)
    if workflow is not None:
        namespace, name = workflow.split("/", 1)
        return ScenarioRecord(namespace=namespace, name=name)
    ref = (testrun.get("spec") or {}).get("scenarioRef") or {}
    if isinstance(status.get("scenario"), str) and "/" in status["scenario"]:
        namespace, name = status["scenario"].split("/", 1)
    else:
        namespace, name = ref.get("namespace") or meta.get("namespace", ""), ref.get("name", "")
    snapshot = _snapshot(status.get(SNAPSHOT_KEY))
    steps = snapshot.get("steps")
    return ScenarioRecord(
        namespace=namespace,
        name=name,
        type=_text(snapshot.get("type")),
        description=_text(snapshot.get("description")),
        steps=len(steps) if isinstance(steps, list) else None,
    )


def event_records(status: Mapping[str, Any]) -> tuple[EventRecord, ...]:
    """The ledger (``status.injections``) as events; recovery comes from the injecting step's measurement."""
    steps = status.get("steps") or []
    events = []
    for injection in status.get("injections") or []:
        index = int(injection.get("step") or 0)
        step = steps[index] if 0 <= index < len(steps) else {}
        injected_at = parse_time(injection.get("appliedAt")) or parse_time(step.get("injectedAt"))
        step_injected = parse_time(step.get("injectedAt"))
        recovery = _float(step.get("recoveryTimeSeconds"))
        recovered_at = step_injected + timedelta(seconds=recovery) if step_injected and recovery is not None else None
        target = injection.get("target") or {}
        events.append(
            EventRecord(
                injection_id=str(injection.get("id")),
                step=index,
                step_name=_text(step.get("name")),
                fault=str(injection.get("fault")),
                target_kind=str(target.get("kind")),
                target_namespace=_text(target.get("namespace")),
                target_name=str(target.get("name")),
                target_uid=_text(target.get("uid")),
                state=str(injection.get("state")),
                injected_at=injected_at,
                reverted_at=parse_time(injection.get("revertedAt")),
                recovered_at=recovered_at,
                message=_text(injection.get("message")),
            )
        )
    return tuple(events)


def outcome_state(passed: bool | None) -> str | None:
    """The state of a result that records only whether it passed (runs from before ``state``)."""
    return None if passed is None else "passed" if passed else "failed"


def result_records(status: Mapping[str, Any]) -> tuple[ResultRecord, ...]:
    """Assertion results as they are, and one result per probe (its verdict and sample statistics)."""
    results = []
    for item in status.get("assertions") or []:
        passed = bool(item["passed"]) if item.get("passed") is not None else None
        results.append(
            ResultRecord(
                kind="assertion",
                name=str(item.get("name")),
                type=_text(item.get("type")),
                passed=passed,
                expected=_text(item.get("expected")),
                actual=_text(item.get("actual")),
                message=_text(item.get("message")),
                state=_text(item.get("state")) or outcome_state(passed),
            )
        )
    for probe in status.get("probes") or []:
        verdict = probe.get("verdict")
        percent = _float(probe.get("successPercent"))
        samples = _int(probe.get("samples")) or 0
        actual = f"{percent:g}% of {samples} sample(s) passed" if percent is not None else f"{samples} sample(s)"
        results.append(
            ResultRecord(
                kind="probe",
                name=str(probe.get("name")),
                type=_text(probe.get("type")),
                passed=None if verdict is None else verdict == "Passed",
                expected="Passed",
                actual=f"{verdict}: {actual}" if verdict else actual,
                message=_text(probe.get("lastError")),
                state=str(verdict).lower() if verdict else None,
            )
        )
    return tuple(results)


def requester(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """Who asked for the run, as ``status.requestedBy`` records it (None when nobody is recorded)."""
    value = status.get("requestedBy")
    return dict(value) if isinstance(value, Mapping) and value.get("username") else None


def run_record(testrun: Mapping[str, Any], now: datetime | None = None) -> RunRecord:
    """The history record of a finished TestRun object (as the API server returns it)."""
    meta = testrun.get("metadata") or {}
    spec = testrun.get("spec") or {}
    status = dict(testrun.get("status") or {})
    phase = status.get("phase")
    if not phase:
        raise ValueError(f"TestRun {meta.get('namespace')}/{meta.get('name')}: status.phase is not set")
    stored = {key: value for key, value in status.items() if key not in UNMIRRORED_STATUS_KEYS}
    parent_uid, parent_name, node = parent_of(testrun)
    workflow = workflow_of(testrun)
    return RunRecord(
        uid=str(meta["uid"]),
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        scenario=scenario_record(testrun),
        phase=str(phase),
        reason=_text(status.get("reason")),
        message=_text(status.get("message")),
        dry_run=bool(spec.get("dryRun")),
        created_at=parse_time(meta.get("creationTimestamp")),
        started_at=parse_time(status.get("startedAt")),
        completed_at=parse_time(status.get("completedAt")) or now or datetime.now(UTC),
        duration_seconds=_float(status.get("durationSeconds")),
        recovery_seconds=_float(status.get("recoveryTimeSeconds")),
        resilience_score=_int(status.get("resilienceScore")),
        targets=_int(status.get("targets")),
        status=stored,
        requested_by=requester(status),
        events=event_records(status),
        results=result_records(status),
        workflow=workflow,
        nodes=node_records(status) if workflow is not None else (),
        parent_uid=parent_uid,
        parent_name=parent_name,
        node=node,
    )
