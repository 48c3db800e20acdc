"""Assembling and serving the dashboard: the viewer's access, the history store, the pages."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from coordinator.dashboard import pages
from coordinator.dashboard.access import Access, KubeconfigAccess
from coordinator.dashboard.server import DashboardState, build_app, template_environment
from coordinator.history.store import HistoryStore
from coordinator.settings import Settings, get_settings

log = logging.getLogger(__name__)


def application(access: Access, history: HistoryStore | None) -> web.Application:
    state = DashboardState(access=access, templates=template_environment(), history=history)
    return build_app(state, pages.add_routes)


async def open_access(kubeconfig: str | None) -> Access:
    return await KubeconfigAccess.connect(kubeconfig)


def open_history(settings: Settings) -> HistoryStore:
    return HistoryStore.from_settings(settings)


async def serve(address: str, port: int, kubeconfig: str | None) -> None:
    """Serve until cancelled; prints the URL once listening."""
    settings = get_settings()
    access = await open_access(kubeconfig)
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
