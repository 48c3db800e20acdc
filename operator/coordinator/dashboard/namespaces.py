"""``/namespaces``: the emergency stop from the browser, with the viewer's own rights.

The page lists the namespaces the viewer may list, each paused or not, with a Pause or Resume button; the
operator's own namespace pauses the whole cluster. Each button is a confirmed POST (CSRF) that labels the
namespace with the viewer's client, exactly as ``coordinator pause`` does (``engine/pausing.set_paused``): the
API server decides, and a refusal is shown with its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.dashboard.server import render, viewer_of
from coordinator.domain.pauses import PauseScope
from coordinator.engine.pausing import is_paused, set_paused
from coordinator.settings import get_settings


@dataclass(frozen=True)
class NamespaceRow:
    name: str
    paused: bool


@dataclass(frozen=True)
class Outcome:
    """What the last action did, or the API server's refusal."""

    message: str
    refused: bool


def namespace_rows(items: list[dict[str, Any]]) -> list[NamespaceRow]:
    """Namespaces by name, each with its pause state."""
    rows = [
        NamespaceRow(str(item["metadata"]["name"]), is_paused((item.get("metadata") or {}).get("labels")))
        for item in items
    ]
    return sorted(rows, key=lambda row: row.name)


def operator_namespace() -> str:
    return get_settings().namespace


async def cluster_pause(client: KubeApi) -> tuple[bool | None, str | None]:
    """Whether the whole cluster is paused (the label on the operator's namespace); None and the API server's
    message when the viewer may not read it."""
    try:
        namespace = await client.get(resource_path("Namespace", name=operator_namespace()))
    except ApiError as exc:
        return None, exc.message
    return is_paused((namespace.get("metadata") or {}).get("labels")), None


async def namespaces_page(request: web.Request, outcome: Outcome | None = None, status: int = 200) -> web.Response:
    viewer = await viewer_of(request)
    refused = None
    try:
        rows = namespace_rows(await viewer.client.list(resource_path("Namespace")))
    except ApiError as exc:
        rows, refused = [], exc.message
    operator = operator_namespace()
    cluster_paused, cluster_refused = await cluster_pause(viewer.client)
    return render(
        request,
        "namespaces.html",
        status=status,
        title="Namespaces",
        namespaces=[row for row in rows if row.name != operator],
        refused=refused,
        operator_namespace=operator,
        cluster_paused=cluster_paused,
        cluster_refused=cluster_refused,
        outcome=outcome,
    )


async def show(request: web.Request) -> web.Response:
    return await namespaces_page(request)


async def act(request: web.Request) -> web.Response:
    """POST /namespaces/{name}/pause or /resume."""
    return await change(request, request.match_info["name"], paused=request.match_info["action"] == "pause")


async def change(request: web.Request, name: str, paused: bool) -> web.Response:
    """Label (or unlabel) namespace ``name`` with the viewer's client; the page says what happened."""
    scope = PauseScope(name, cluster_wide=name == operator_namespace())
    viewer = await viewer_of(request)
    try:
        done = await set_paused(viewer.client, scope, paused)
    except ApiError as exc:
        verb = "pause" if paused else "resume"
        what = f"{scope.named} not found" if exc.not_found else exc.message
        message = f"The API server refused to {verb} {scope.named}: {what}"
        return await namespaces_page(request, Outcome(message, refused=True), status=exc.status)
    return await namespaces_page(request, Outcome(done[0].upper() + done[1:], refused=False))


async def act_by_name(request: web.Request) -> web.Response:
    """POST /namespaces with a name and an action: for a viewer who may not list namespaces."""
    form = await request.post()
    name, action = str(form.get("name") or "").strip(), str(form.get("action") or "")
    if not name or action not in ("pause", "resume"):
        return await namespaces_page(request, Outcome("Name a namespace, then Pause or Resume.", refused=True), 400)
    return await change(request, name, paused=action == "pause")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/namespaces", show, name="namespaces")
    app.router.add_post("/namespaces", act_by_name)
    app.router.add_post(r"/namespaces/{name}/{action:pause|resume}", act)
