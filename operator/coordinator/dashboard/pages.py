"""The pages: each a shareable URL, rendered with the viewer's own rights.

``add_routes`` is the registry of every page: each page module adds its own routes with one line here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.dashboard import history, queries, runs, scenarios
from coordinator.dashboard.rows import active_rows, is_active, run_row
from coordinator.dashboard.scope import history_refusal
from coordinator.dashboard.server import render, state_of, viewer_of
from coordinator.history.store import HistoryUnavailable

log = logging.getLogger(__name__)

WATCH_SECONDS = 30  # each watch request's length: between two, the stream sends a keep-alive comment


async def active_runs(request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
    """The viewer's active TestRuns, newest first, and the API server's refusal if it refused the list."""
    viewer = await viewer_of(request)
    try:
        items = await viewer.client.list(resource_path("TestRun"))
    except ApiError as exc:
        return [], exc.message
    return active_rows(items), None


async def overview(request: web.Request) -> web.Response:
    runs, refused = await active_runs(request)
    store = state_of(request).history
    now = datetime.now(UTC)
    day: queries.DayFigures | None = None
    slowest: list[queries.SlowScenario] = []
    history_problem = None if store is not None else "no history store is configured"
    if store is not None:
        history_problem = await history_refusal(request, None)
    if store is not None and history_problem is None:
        try:
            day = await store.read(lambda conn, t: queries.last_day(conn, t, now))
            slowest = await store.read(lambda conn, t: queries.slowest_recovery(conn, t, now))
        except HistoryUnavailable as exc:
            history_problem = str(exc)
    return render(
        request,
        "overview.html",
        title="Overview",
        active=runs,
        refused=refused,
        day=day,
        slowest=slowest,
        history_problem=history_problem,
    )


def sse(event: str, data: Any) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def watch_runs(client: KubeApi, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Send a ``snapshot`` of the active runs, then each change as a ``run`` event, for as long as ``send``
    succeeds. A watch the API server ends is resumed from the last resourceVersion; an expired one (410) starts
    again from a fresh snapshot."""
    version: str | None = None
    while True:
        if version is None:
            collection = await client.get(resource_path("TestRun"))
            version = str((collection.get("metadata") or {}).get("resourceVersion") or "")
            await send(sse("snapshot", active_rows(list(collection.get("items") or []))))
        try:
            watch = client.watch(resource_path("TestRun"), resource_version=version, timeout_seconds=WATCH_SECONDS)
            async for event in watch:
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    # A Status object: 410 means the version expired (start again from a snapshot); any other
                    # code is the API server refusing, which the page shows.
                    raise ApiError(
                        int(obj.get("code") or 500), str(obj.get("reason") or ""), str(obj.get("message") or "")
                    )
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event.get("type") == "BOOKMARK":
                    continue
                row = run_row(obj)
                gone = event.get("type") == "DELETED" or not is_active(obj)
                await send(sse("run", {"run": row, "active": not gone}))
        except ApiError as exc:
            if exc.status != 410:
                raise
            version = None
        await send(b": keep-alive\n\n")


async def run_events(request: web.Request) -> web.StreamResponse:
    """``GET /events/runs``: the overview's live list, pushed (server-sent events fed by a watch of TestRuns
    with the viewer's client)."""
    viewer = await viewer_of(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)

    async def send(data: bytes) -> None:
        await response.write(data)

    try:
        await watch_runs(viewer.client, send)
    except ApiError as exc:
        await send(sse("refused", {"message": exc.message}))
    except ConnectionResetError:
        pass  # the browser left
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview, name="overview")
    runs.add_routes(app)
    app.router.add_get("/events/runs", run_events, name="active-run-events")
    scenarios.add_routes(app)
    history.add_routes(app)
