"""The pages: each a shareable URL, rendered with the viewer's own rights."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import TERMINAL_PHASES
from coordinator.dashboard import runs
from coordinator.dashboard.server import render, viewer_of


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
        "workflow": "workflowRef" in spec,
        "phase": status.get("phase") or "Pending",
        "reason": status.get("reason") or "",
        "step": status.get("step") or "",
        "started": status.get("startedAt") or meta.get("creationTimestamp") or "",
    }


async def active_runs(request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
    """The viewer's active TestRuns, newest first, and the API server's refusal if it refused the list."""
    viewer = await viewer_of(request)
    try:
        items = await viewer.client.list(resource_path("TestRun"))
    except ApiError as exc:
        return [], exc.message
    rows = [run_row(item) for item in items if (item.get("status") or {}).get("phase") not in TERMINAL_PHASES]
    return sorted(rows, key=lambda r: r["started"], reverse=True), None


async def overview(request: web.Request) -> web.Response:
    runs, refused = await active_runs(request)
    return render(request, "overview.html", title="Overview", active=runs, refused=refused)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview, name="overview")
    runs.add_routes(app)
