"""Whose rights the dashboard acts with: never its own.

Local mode (``coordinator dashboard``): the user's kubeconfig, as ``kubectl proxy`` does; the server listens on
loopback and the person at the browser is the kubeconfig's owner. In-cluster mode (``--in-cluster``): each
browser session logs in with a Kubernetes bearer token, verified with a TokenReview, and every request of that
session is made with that token (``sessions.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from coordinator.adapters.kube import KubeApi, KubeClient


@dataclass(frozen=True)
class Viewer:
    """Who is using the dashboard, and the client that acts as them."""

    username: str
    client: KubeApi


class NotLoggedIn(Exception):
    """The request has no valid session: the browser goes to the login page."""


class Access(Protocol):
    """Gives each request the client that acts with its user's rights."""

    login_required: bool

    async def viewer(self, request: web.Request) -> Viewer:
        """The viewer of ``request``; raises NotLoggedIn."""
        ...

    async def close(self) -> None: ...


class KubeconfigAccess:
    """Local mode: one client with the user's kubeconfig credentials for every request."""

    login_required = False

    def __init__(self, client: KubeClient, username: str) -> None:
        self.client = client
        self.username = username

    @classmethod
    async def connect(cls, kubeconfig: str | None) -> KubeconfigAccess:
        client = await KubeClient.connect(kubeconfig)
        return cls(client, await whoami(client))

    async def viewer(self, request: web.Request) -> Viewer:
        return Viewer(self.username, self.client)

    async def close(self) -> None:
        await self.client.close()


async def whoami(client: KubeApi) -> str:
    """The user the client authenticates as (SelfSubjectReview), or "you" when the API server cannot say."""
    from coordinator.adapters.kube import ApiError

    try:
        review = await client.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    except ApiError:
        return "you"
    return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "you")
