"""The dashboard's aiohttp application: security headers, CSRF, the viewer of each request, pages and assets.

Every page and action runs with the viewer's own client (``access.py``): a refusal is the API server's, shown
with its message. Every asset is served from the package (no CDN). Pages are rendered on the server (Jinja2,
autoescaped); the little JavaScript there is adds live updates (server-sent events fed by watches) and charts.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from coordinator.dashboard.access import Access, NotLoggedIn, Viewer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSRF_COOKIE = "coordinator_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
# Scripts, styles, images, connections (server-sent events): this origin only. No inline script or style, no
# framing, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class DashboardState:
    """What every handler may reach: how viewers are resolved, the templates, and the history store."""

    access: Access
    templates: jinja2.Environment
    history: Any = None  # coordinator.history.store.HistoryStore, or None when no store is configured
    extras: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("dashboard_state", DashboardState)
VIEWER = web.RequestKey("viewer", Viewer)
CSRF = web.RequestKey("csrf", str)


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coordinator.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    return env


def static_dir() -> Path:
    return Path(str(resources.files("coordinator.dashboard") / "static"))


def state_of(request: web.Request) -> DashboardState:
    return request.app[STATE]


def csrf_token(request: web.Request) -> str:
    """The CSRF token of this browser (double-submit: a SameSite=Strict cookie and the same value in each form)."""
    token = request.get(CSRF)
    if isinstance(token, str):
        return token
    return request.cookies.get(CSRF_COOKIE) or ""


async def viewer_of(request: web.Request) -> Viewer:
    known = request.get(VIEWER)
    if isinstance(known, Viewer):
        return known
    viewer = await state_of(request).access.viewer(request)
    request[VIEWER] = viewer
    return viewer


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page of ``template`` with the layout's context (the viewer's name, the CSRF token)."""
    viewer = request.get(VIEWER)
    page = (
        state_of(request)
        .templates.get_template(template)
        .render(
            viewer=viewer.username if isinstance(viewer, Viewer) else None,
            csrf=csrf_token(request),
            path=request.path,
            **context,
        )
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def csrf_protection(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a state-changing request whose CSRF token does not match the browser's cookie; give each browser a
    token."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            sent = str((await request.post()).get(CSRF_FIELD) or "")
        if not cookie or not sent or not hmac.compare_digest(cookie, sent):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again")
    token = cookie or secrets.token_urlsafe(32)
    request[CSRF] = token
    response = await handler(request)
    if not cookie:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


@web.middleware
async def require_viewer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the viewer before the handler runs; without a session, go to the login page."""
    if request.path.startswith("/static/") or request.path in ("/healthz", "/login"):
        return await handler(request)
    try:
        await viewer_of(request)
    except NotLoggedIn:
        if request.method in SAFE_METHODS and "text/event-stream" not in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/login?next={request.path_qs}") from None
        raise web.HTTPUnauthorized(text="log in first") from None
    return await handler(request)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app(state: DashboardState, routes: Callable[[web.Application], None]) -> web.Application:
    """The application: middlewares, the static assets, and the pages ``routes`` adds."""
    app = web.Application(middlewares=[security_headers, csrf_protection, require_viewer])
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", static_dir(), show_index=False)
    routes(app)

    async def close(_: web.Application) -> None:
        await state.access.close()
        if state.history is not None:
            await state.history.close()

    app.on_cleanup.append(close)
    return app
