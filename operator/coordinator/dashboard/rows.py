"""What the lists of TestRuns show of each run (the overview's active runs, a scenario's current runs)."""

from __future__ import annotations

from typing import Any

from coordinator.api.models import TERMINAL_PHASES


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """What a list shows of a TestRun."""
    meta = run["metadata"]
    spec = run.get("spec") or {}
    status = run.get("status") or {}
    ref = spec.get("scenarioRef") or spec.get("workflowRef") or {}
    return {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "scenario": ref.get("name", ""),
        "scenarioNamespace": ref.get("namespace") or meta["namespace"],
        "workflow": "workflowRef" in spec,
        "phase": status.get("phase") or "Pending",
        "reason": status.get("reason") or "",
        "step": status.get("step") or "",
        "started": status.get("startedAt") or meta.get("creationTimestamp") or "",
    }


def is_active(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") not in TERMINAL_PHASES


def active_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The active runs among ``items``, newest first."""
    rows = [run_row(item) for item in items if is_active(item)]
    return sorted(rows, key=lambda r: r["started"], reverse=True)
