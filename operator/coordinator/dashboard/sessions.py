"""In-cluster mode: each browser session logs in with a Kubernetes bearer token and acts with that token only.

``/login`` takes a token (a POST with the CSRF token; never a URL), the dashboard verifies it with a TokenReview
made with its own ServiceAccount (the only thing that account may do), and opens a server-side session: a random
id in an HttpOnly, SameSite=Strict cookie. Every request of the session uses a client with the user's token (the
dashboard's host and CA, nothing else of its credentials), so the API server authorizes each request as the user
and refuses what the user may not do. A session ends after ``SESSION_LIFETIME`` or at ``POST /logout``; the token
lives only in that session's client, in memory, and is never written into a page.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coordinator.adapters.kube import (
    ApiError,
    Credentials,
    KubeApi,
    KubeClient,
    bearer_credentials,
    load_credentials,
    load_in_cluster_credentials,
)
from coordinator.dashboard.access import NotLoggedIn, Viewer
from coordinator.dashboard.server import render, state_of

SESSION_COOKIE = "coordinator_session"
SESSION_LIFETIME = 8 * 3600.0  # seconds: a working day, then the token is asked for again
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"  # noqa: S105 (an API path, not a secret)


@dataclass
class Session:
    """One logged-in browser: who it is, the client acting with its token, and when it ends (monotonic)."""

    id: str
    username: str
    client: KubeApi
    expires: float


class SessionStore:
    """The open sessions by id. Pure bookkeeping: the caller closes the clients of the sessions that end."""

    def __init__(self, lifetime: float = SESSION_LIFETIME, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, username: str, client: KubeApi) -> Session:
        """A new session with an unguessable id (256 random bits)."""
        session = Session(secrets.token_urlsafe(32), username, client, self.clock() + self.lifetime)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names; None for no id, an unknown one, or an expired one."""
        session = self._sessions.get(session_id or "")
        if session is None or session.expires <= self.clock():
            return None
        return session

    def end(self, session_id: str | None) -> Session | None:
        """Forget the session (logout); returns it, so its client can be closed."""
        return self._sessions.pop(session_id or "", None)

    def expired(self) -> list[Session]:
        """Forget and return every session past its end."""
        now = self.clock()
        gone = [s for s in self._sessions.values() if s.expires <= now]
        for session in gone:
            del self._sessions[session.id]
        return gone

    def drain(self) -> list[Session]:
        """Forget and return every session (shutdown)."""
        gone = list(self._sessions.values())
        self._sessions.clear()
        return gone


class LoginRefused(Exception):
    """The token was not accepted; the message says why, for the login page."""


def review_body(token: str) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}


def reviewed_username(review: dict[str, Any]) -> str:
    """The user a TokenReview authenticated; raises LoginRefused with the API server's error if it did not."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        error = status.get("error") or "the token is not valid (expired, revoked, or for another cluster)"
        raise LoginRefused(f"the API server did not accept this token: {error}")
    username = (status.get("user") or {}).get("username")
    if not username:
        raise LoginRefused("the API server accepted the token but named no user")
    return str(username)


class TokenAccess:
    """In-cluster mode: the viewer of a request is its session's user, acting with their own token.

    ``reviewer`` is the dashboard's own client, used for TokenReviews and nothing else; ``credentials`` are its
    credentials, from which each session's client takes only the host and the CA.
    """

    login_required = True

    def __init__(self, reviewer: KubeApi, credentials: Credentials, store: SessionStore | None = None) -> None:
        self.reviewer = reviewer
        self.credentials = credentials
        self.store = store or SessionStore()

    @classmethod
    async def connect(cls, kubeconfig: str | None, in_cluster: bool) -> TokenAccess:
        """The dashboard's own identity: the pod's ServiceAccount (``in_cluster``), or ``kubeconfig``'s user."""
        credentials = await load_in_cluster_credentials() if in_cluster else await load_credentials(kubeconfig)
        return cls(KubeClient(credentials), credentials)

    async def login(self, token: str) -> Session:
        """Verify ``token`` with a TokenReview and open a session acting with it. Raises LoginRefused."""
        token = token.strip()
        if not token:
            raise LoginRefused("paste a bearer token (for example the output of `kubectl create token NAME`)")
        try:
            review = await self.reviewer.create(TOKEN_REVIEWS, review_body(token))
        except ApiError as exc:
            raise LoginRefused(f"the dashboard could not review the token: {exc.message}") from exc
        username = reviewed_username(review)
        credentials = await asyncio.to_thread(bearer_credentials, self.credentials, token)
        return self.store.open(username, KubeClient(credentials))

    async def logout(self, session_id: str | None) -> None:
        ended = self.store.end(session_id)
        if ended is not None:
            await _close(ended.client)

    async def viewer(self, request: web.Request) -> Viewer:
        for gone in self.store.expired():
            await _close(gone.client)
        session = self.store.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise NotLoggedIn()
        return Viewer(session.username, session.client)

    async def close(self) -> None:
        for session in self.store.drain():
            await _close(session.client)
        await _close(self.reviewer)


async def _close(client: KubeApi) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        await close()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this dashboard only (never another site: ``//host``, ``/\\host``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def token_access_of(request: web.Request) -> TokenAccess | None:
    access = state_of(request).access
    return access if isinstance(access, TokenAccess) else None


async def login_page(request: web.Request) -> web.Response:
    if token_access_of(request) is None:
        raise web.HTTPSeeOther("/")  # local mode: the kubeconfig's owner needs no login
    return render(request, "login.html", title="Log in", next=safe_next(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.StreamResponse:
    access = token_access_of(request)
    if access is None:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    target = safe_next(str(form.get("next") or ""))
    try:
        session = await access.login(str(form.get("token") or ""))
    except LoginRefused as exc:
        return render(request, "login.html", status=401, title="Log in", next=target, error=str(exc))
    await access.logout(request.cookies.get(SESSION_COOKIE))  # a new login replaces the browser's old session
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=int(access.store.lifetime),
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    access = token_access_of(request)
    if access is None:
        raise web.HTTPSeeOther("/")
    await access.logout(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page, name="login")
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout, name="logout")
