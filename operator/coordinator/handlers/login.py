"""kopf logs in with the operator's own credentials, over a session with a bounded connection pool.

Without a login handler kopf tries its built-in ones; the one that understands exec plugins imports the synchronous
``kubernetes`` client, and kopf's own session has no connection limit: a burst of new TestRuns (one finalizer
patch each, all at once) opened over a hundred TLS connections, about 0.35 MB resident each, and the memory stayed
(benchmarks/README.md, footprint). The operator already resolves credentials (in-cluster service account,
kubeconfig: adapters/kubeconfig.py; exec plugins: kubernetes_asyncio); kopf gets the same, in a session of its own
whose pool holds its watch streams plus a fixed number of requests. kopf asks again when the API server answers
401 (an exec plugin's token expired, an account token rotated), and closes the session it replaces.
"""

from __future__ import annotations

import asyncio

import aiohttp
import kopf

from coordinator.adapters.kube import Credentials, load_credentials
from coordinator.settings import uses_patterns

# Requests kopf may have in flight at once besides its watches (finalizers, progress annotations, events).
KOPF_REQUESTS = 16
# kopf's watches: TestRuns and ChaosScenarios in each watched namespace (or cluster-wide), and, unless scanning is
# off, CustomResourceDefinitions and Namespaces.
WATCHED_RESOURCES = 2
SCANNING_WATCHES = 2


def kopf_connection_limit(watched: list[str]) -> int:
    """Connections kopf's session may open: one per watch stream, plus ``KOPF_REQUESTS``; 0 (no limit) when
    namespace patterns make the number of watches unknowable, since a watch waiting for a connection would
    never start."""
    if uses_patterns(watched):
        return 0
    streams = WATCHED_RESOURCES * max(len(watched), 1) + SCANNING_WATCHES
    return streams + KOPF_REQUESTS


def session_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def handle_login(watched: list[str]) -> kopf.AiohttpSession:
    """Resolve the credentials afresh (KUBECONFIG, ~/.kube/config, or the service account) into a session for
    kopf; client certificates are in the credentials' SSL context."""
    credentials: Credentials = await load_credentials()
    token = await asyncio.to_thread(credentials.current_token)
    connector = aiohttp.TCPConnector(ssl=credentials.ssl_context, limit=kopf_connection_limit(watched))
    session = aiohttp.ClientSession(connector=connector, headers=session_headers(token))
    return kopf.AiohttpSession(server=credentials.host, aiohttp_session=session)
