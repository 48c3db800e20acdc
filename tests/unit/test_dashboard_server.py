"""The dashboard's server rules, on an in-process aiohttp server: security headers, CSRF, the viewer."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.dashboard.access import NotLoggedIn, Viewer
from coordinator.dashboard.server import (
    CONTENT_SECURITY_POLICY,
    CSRF_COOKIE,
    CSRF_HEADER,
    DashboardState,
    build_app,
    template_environment,
)


class OneViewer:
    login_required = False

    def __init__(self, logged_in: bool = True) -> None:
        self.logged_in = logged_in

    async def viewer(self, request: web.Request) -> Viewer:
        if not self.logged_in:
            raise NotLoggedIn
        return Viewer("alice", cast(Any, None))

    async def close(self) -> None:
        pass


def routes(app: web.Application) -> None:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="page")

    async def act(_: web.Request) -> web.Response:
        return web.Response(text="done")

    app.router.add_get("/", page)
    app.router.add_post("/act", act)


async def client(access: OneViewer) -> TestClient[web.Request, web.Application]:
    app = build_app(DashboardState(access=access, templates=template_environment()), routes)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    return test_client


async def test_pages_carry_the_security_headers_and_a_csrf_cookie() -> None:
    c = await client(OneViewer())
    try:
        response = await c.get("/")
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert CSRF_COOKIE in response.cookies
        assert response.cookies[CSRF_COOKIE]["samesite"] == "Strict"
    finally:
        await c.close()


async def test_an_action_needs_the_csrf_token_of_the_browser() -> None:
    c = await client(OneViewer())
    try:
        token = (await c.get("/")).cookies[CSRF_COOKIE].value
        refused = await c.post("/act", data={"csrf": "forged"})
        assert refused.status == 403
        assert "CSRF" in await refused.text()
        missing = await c.post("/act")
        assert missing.status == 403
        by_form = await c.post("/act", data={"csrf": token})
        assert by_form.status == 200
        by_header = await c.post("/act", headers={CSRF_HEADER: token})
        assert by_header.status == 200
    finally:
        await c.close()


async def test_without_a_session_pages_go_to_the_login_and_actions_are_refused() -> None:
    c = await client(OneViewer(logged_in=False))
    try:
        page = await c.get("/", allow_redirects=False)
        assert page.status == 303
        assert page.headers["Location"] == "/login?next=/"
        token = (await c.get("/healthz")).cookies[CSRF_COOKIE].value
        action = await c.post("/act", headers={CSRF_HEADER: token})
        assert action.status == 401
        assert (await c.get("/healthz")).status == 200
        assert (await c.get("/static/app.css")).status == 200
    finally:
        await c.close()


def test_the_whole_application_assembles_with_every_page_routed() -> None:
    from coordinator.dashboard.app import application

    app = application(OneViewer(), None)
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    for path in (
        "/",
        "/history",
        "/namespaces",
        "/login",
        "/events/runs",
        "/runs/{namespace}/{name}",
        "/runs/{namespace}/{name}/events",
        "/runs/{namespace}/{name}/abort",
        "/scenarios/{namespace}/{name}",
    ):
        assert path in paths, sorted(paths)
