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
