"""The history page (``/history``): stored runs filtered by namespace, scenario, phase and time range, newest
first, paged by keyset. The filters and the position are in the URL, so a page can be shared."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from coordinator.dashboard import queries
from coordinator.dashboard.scope import history_refusal
from coordinator.dashboard.server import render, state_of
from coordinator.history.store import HistoryUnavailable


def page_link(filters: queries.HistoryFilters, **position: str) -> str:
    """The URL of the history with ``filters`` at ``position`` (``after=`` or ``before=`` a cursor)."""
    query = {**filters.query(), **position}
    return "/history" + (f"?{urlencode(query)}" if query else "")


async def history_page(request: web.Request) -> web.Response:
    problem, status = None, 200
    filters = queries.HistoryFilters()
    after = before = None
    try:
        filters = queries.HistoryFilters.from_query(request.query)
        if request.query.get("after"):
            after = queries.Cursor.decode(request.query["after"], "after")
        elif request.query.get("before"):
            before = queries.Cursor.decode(request.query["before"], "before")
    except queries.BadFilter as exc:
        problem, status = str(exc), 400
    page = queries.HistoryPage([])
    store = state_of(request).history
    if store is None:
        problem = problem or "no history store is configured"
    elif problem is None:
        scope = filters.namespace or (filters.scenario.split("/", 1)[0] if "/" in filters.scenario else None)
        problem = await history_refusal(request, scope)
        if problem is not None:
            status = 403
    if store is not None and problem is None:
        try:
            page = await store.read(lambda conn, t: queries.history_page(conn, t, filters, after, before))
        except HistoryUnavailable as exc:
            problem = str(exc)
    return render(
        request,
        "history.html",
        status=status,
        title="History",
        filters=filters,
        phases=queries.STORED_PHASES,
        page=page,
        problem=problem,
        older=page_link(filters, after=page.older.encode()) if page.older else None,
        newer=page_link(filters, before=page.newer.encode()) if page.newer else None,
        newest=page_link(filters),
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/history", history_page, name="history")
