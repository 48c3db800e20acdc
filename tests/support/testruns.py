"""Finished TestRun objects as the API server returns them, for the history tests (no cluster needed)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.domain.timestamps import format_iso

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return format_iso(moment)


def finished_testrun(
    name: str = "run-1",
    namespace: str = "shop",
    scenario: str = "kill-web",
    phase: str = "Passed",
    completed: datetime = T0,
    recovery: float | None = 2.5,
    targets: tuple[str, ...] = ("web-1",),
    uid: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    assertions: list[dict[str, Any]] | None = None,
    probes: list[dict[str, Any]] | None = None,
    requested_by: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A TestRun that ended in ``phase`` at ``completed``, with one pod-kill step on ``targets``."""
    started = completed - timedelta(seconds=10)
    injected = started + timedelta(seconds=1)
    step: dict[str, Any] = {
        "name": "kill",
        "outcome": "Reverted",
        "targets": [{"kind": "Pod", "namespace": namespace, "name": t, "uid": f"uid-{t}"} for t in targets],
        "targetCount": len(targets),
        "injectedAt": iso(injected),
        "revertedAt": iso(injected + timedelta(seconds=3)),
    }
    if recovery is not None:
        step["recoveryTimeSeconds"] = recovery
    status: dict[str, Any] = {
        "phase": phase,
        "reason": reason or ("Completed" if phase == "Passed" else "AssertionFailed"),
        "message": message or ("1 step(s) completed" if phase == "Passed" else "assertion fast failed"),
        "scenario": f"{namespace}/{scenario}",
        "scenarioGeneration": 1,
        "startedAt": iso(started),
        "completedAt": iso(completed),
        "durationSeconds": 10.0,
        "targets": len(targets),
        "steps": [step],
        "injections": [
            {
                "id": f"0/0/pod/{namespace}/{t}",
                "step": 0,
                "faultIndex": 0,
                "fault": "pod-kill",
                "target": {"kind": "Pod", "namespace": namespace, "name": t, "uid": f"uid-{t}"},
                "state": "Irreversible",
                "appliedAt": iso(injected),
            }
            for t in targets
        ],
        "scenarioSnapshot": json.dumps(
            {"type": "service_restart", "description": "kill a web pod", "steps": [{"name": "kill"}]}
        ),
        "assertions": assertions
        if assertions is not None
        else [{"name": "fast", "type": "recovery_time", "expected": "<= 10", "actual": "2.5s", "passed": True}],
        "probes": probes
        if probes is not None
        else [
            {
                "name": "web-ready",
                "type": "k8s",
                "mode": "edge",
                "samples": 4,
                "passed": 4,
                "failed": 0,
                "successPercent": 100.0,
                "verdict": "Passed",
            }
        ],
    }
    if recovery is not None:
        status["recoveryTimeSeconds"] = recovery
    if requested_by is not None:
        status["requestedBy"] = requested_by
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "creationTimestamp": iso(started - timedelta(seconds=1)),
        },
        "spec": {"scenarioRef": {"name": scenario}},
        "status": status,
    }


def workflow_run(
    name: str = "game-day-1",
    namespace: str = "shop",
    workflow: str = "game-day",
    phase: str = "Failed",
    completed: datetime = T0,
    nodes: list[dict[str, Any]] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """A workflow run (spec.workflowRef) that ended in ``phase`` at ``completed``; by default its nodes are a
    passed scenario node, a passed suspend gate, a failed node and a node Skipped after the failure."""
    started = completed - timedelta(seconds=60)
    if nodes is None:
        nodes = [
            {"name": "kill-cache", "phase": "Passed", "testRun": f"{name}-kill-cache", "reason": "Completed",
             "startedAt": iso(started), "completedAt": iso(started + timedelta(seconds=20)),
             "recoveryTimeSeconds": 2.0, "resilienceScore": 100},
            {"name": "approve", "phase": "Passed", "reason": "Resumed", "startedAt": iso(started + timedelta(seconds=20)),
             "completedAt": iso(started + timedelta(seconds=30))},
            {"name": "kill-db", "phase": "Failed", "testRun": f"{name}-kill-db", "reason": "AssertionFailed",
             "message": "assertion fast failed: recovery 12s > 10s", "startedAt": iso(started + timedelta(seconds=30)),
             "completedAt": iso(started + timedelta(seconds=55))},
            {"name": "report", "phase": "Skipped", "reason": "DependencyFailed",
             "message": "kill-db did not pass"},
        ]  # fmt: skip
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "creationTimestamp": iso(started - timedelta(seconds=1)),
        },
        "spec": {"workflowRef": {"name": workflow}},
        "status": {
            "phase": phase,
            "reason": "Completed" if phase == "Passed" else "NodeFailed",
            "message": "every node passed" if phase == "Passed" else "node kill-db Failed",
            "workflow": f"{namespace}/{workflow}",
            "startedAt": iso(started),
            "completedAt": iso(completed),
            "durationSeconds": 60.0,
            "resilienceScore": 50,
            "recoveryTimeSeconds": 2.0,
            "nodes": nodes,
        },
    }


def workflow_child(parent: dict[str, Any], node: str, scenario: str, **kwargs: Any) -> dict[str, Any]:
    """The child TestRun of ``parent`` (a ``workflow_run``) that ran ``node``: named, labelled and owned as the
    workflow engine makes it."""
    meta = parent["metadata"]
    child = finished_testrun(name=f"{meta['name']}-{node}", namespace=meta["namespace"], scenario=scenario, **kwargs)
    child["metadata"]["labels"] = {
        "chaos.coordinator.dev/workflow-run": meta["name"],
        "chaos.coordinator.dev/workflow-node": node,
    }
    child["metadata"]["ownerReferences"] = [
        {"apiVersion": "chaos.coordinator.dev/v1alpha1", "kind": "TestRun", "name": meta["name"], "uid": meta["uid"],
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    return child
