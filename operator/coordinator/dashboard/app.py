"""Assembling and serving the dashboard: the viewer's access, the history store, the pages."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from coordinator.dashboard import namespaces, pages, sessions
from coordinator.dashboard.access import Access, KubeconfigAccess
from coordinator.dashboard.server import DashboardState, build_app, template_environment
from coordinator.dashboard.sessions import TokenAccess
from coordinator.history.store import HistoryStore
from coordinator.settings import Settings, get_settings

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    pages.add_routes(app)
    namespaces.add_routes(app)
    sessions.add_routes(app)


def application(access: Access, history: HistoryStore | None) -> web.Application:
    templates = template_environment()
    # The layout offers "Log out" only where there is a session to end.
    templates.globals["login_required"] = access.login_required
    state = DashboardState(access=access, templates=templates, history=history)
    return build_app(state, add_routes)


async def open_access(kubeconfig: str | None, in_cluster: bool = False, token_login: bool = False) -> Access:
    """Whose rights the dashboard acts with: the kubeconfig's user (local mode), or each session's own token
    (``in_cluster``: the pod's ServiceAccount reviews the tokens; ``token_login``: the same mode from outside the
    cluster, ``kubeconfig`` naming the dashboard's own identity, used only for TokenReviews)."""
    if in_cluster or token_login:
        return await TokenAccess.connect(kubeconfig, in_cluster=in_cluster)
    return await KubeconfigAccess.connect(kubeconfig)


def open_history(settings: Settings) -> HistoryStore:
    return HistoryStore.from_settings(settings)


async def serve(
    address: str, port: int, kubeconfig: str | None, in_cluster: bool = False, token_login: bool = False
) -> None:
    """Serve until cancelled; prints the URL once listening."""
    settings = get_settings()
    access = await open_access(kubeconfig, in_cluster=in_cluster, token_login=token_login)
    app = application(access, open_history(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    await site.start()
    host = f"[{address}]" if ":" in address else address
    print(f"dashboard: http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
