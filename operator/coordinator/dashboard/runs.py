"""A run's page: its live timeline (or a workflow run's DAG), the verdict, and the abort action.

``/runs/<namespace>/<name>`` renders the timeline model (``timeline.py``) into the page; ``.../events`` streams a new
model on every change of the TestRun as server-sent events, fed by a watch of that one object made with the
viewer's client (the browser keeps one connection open; nothing polls). ``.../abort`` sets ``spec.abort`` with the
viewer's rights: a refusal is shown with the API server's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from markupsafe import Markup

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.dashboard import timeline
from coordinator.dashboard.scope import history_refusal
from coordinator.dashboard.server import render, state_of, viewer_of

log = logging.getLogger(__name__)

# A comment line this often keeps proxies from closing an idle stream, and shows within seconds that the browser
# left (a write to a closed connection fails): its watch is closed then.
HEARTBEAT_SECONDS = 5.0
# Each watch asks the API server to end it after this long; the stream then watches again from where it was.
WATCH_SECONDS = 300
GONE = 410


def now_ms() -> float:
    return time.time() * 1000


def embedded_json(model: Any) -> Markup:
    """``model`` as JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` can
    end the element or start markup."""
    text = json.dumps(model, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 (escaped above: JSON cannot leave the script element)


async def read_model(request: web.Request, namespace: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The run's timeline model (from the cluster, else from the history store) and the API server's refusal."""
    viewer = await viewer_of(request)
    try:
        testrun = await viewer.client.get(resource_path("TestRun", namespace, name))
    except ApiError as exc:
        if not exc.not_found:
            return None, exc.message
    else:
        return timeline.build(testrun, now_ms()), None
    return await history_model(request, namespace, name), None


async def history_model(request: web.Request, namespace: str, name: str) -> dict[str, Any] | None:
    """The model of a run whose TestRun is gone, from the status its history record kept."""
    store = state_of(request).history
    if store is None or await history_refusal(request, namespace) is not None:
        return None  # not found, for a viewer who may not read that namespace's stored runs
    try:
        uid = await store.latest_uid(namespace, name)
        record = await store.get_run(uid) if uid else None
    except Exception:  # the store is down or refuses us: the page says the run is not found
        log.warning("history store: cannot read run %s/%s", namespace, name, exc_info=True)
        return None
    return timeline.build(timeline.from_history(record), now_ms(), source="history") if record else None


async def run_page(request: web.Request, refused: str | None = None, status: int = 200) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    model, read_refusal = await read_model(request, namespace, name)
    if model is None and read_refusal is None and refused is None:
        raise web.HTTPNotFound(text=f"TestRun {namespace}/{name} not found, in the cluster or the history store")
    return render(
        request,
        "run.html",
        status=status,
        title=f"Run {namespace}/{name}",
        namespace=namespace,
        name=name,
        model=model,
        model_json=embedded_json(model),
        refused=read_refusal,
        action_refused=refused,
    )


async def watch_run(client: KubeApi, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
    """The TestRun now, then after each change; None once it is deleted (or not there). Watches again from the
    last resourceVersion when a watch ends, and reads the object again when the version is too old (410)."""
    path = resource_path("TestRun", namespace, name)
    collection = resource_path("TestRun", namespace)
    version: str | None = None
    while True:
        if version is None:
            current = await client.get_or_none(path)
            yield current
            if current is None:
                return
            version = str(current["metadata"].get("resourceVersion") or "")
        try:
            async for event in client.watch(
                collection,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                field_selector=f"metadata.name={name}",
            ):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    version = None  # expired (410 Gone) or refused: read afresh
                    break
                if kind == "BOOKMARK":
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    continue
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind == "DELETED":
                    yield None
                    return
                yield obj
        except ApiError as exc:
            if exc.status != GONE:
                raise
            version = None


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def run_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``model`` (the timeline model) on every change of the TestRun, ``gone`` when it is
    deleted and not in the history store, ``refused`` with the API server's message. The watch ends when the
    browser goes away."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    viewer = await viewer_of(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def feed() -> None:
        try:
            async for testrun in watch_run(viewer.client, namespace, name):
                if testrun is not None:
                    await queue.put(sse("model", timeline.build(testrun, now_ms())))
                    continue
                model = await history_model(request, namespace, name)
                await queue.put(sse("model", model) if model is not None else sse("gone", {}))
        except ApiError as exc:
            await queue.put(sse("refused", {"status": exc.status, "message": exc.message}))
        except (OSError, TimeoutError) as exc:  # the API server went away: the browser reconnects by itself
            log.info("run events %s/%s: %s", namespace, name, exc)
        await queue.put(None)

    task = asyncio.create_task(feed())
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                chunk = b": keep-alive\n\n"
            if chunk is None:
                break
            await response.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the browser went away
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return response


async def abort_run(request: web.Request) -> web.StreamResponse:
    """Set ``spec.abort`` with the viewer's rights, then back to the run page (which shows a refusal)."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    viewer = await viewer_of(request)
    try:
        await viewer.client.patch(resource_path("TestRun", namespace, name), {"spec": {"abort": True}})
    except ApiError as exc:
        return await run_page(request, refused=exc.message, status=exc.status if exc.status >= 400 else 400)
    raise web.HTTPSeeOther(f"/runs/{namespace}/{name}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/runs/{namespace}/{name}", run_page, name="run")
    app.router.add_get("/runs/{namespace}/{name}/events", run_events, name="run-events")
    app.router.add_post("/runs/{namespace}/{name}/abort", abort_run, name="run-abort")
