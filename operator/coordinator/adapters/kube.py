"""A small async JSON client for the Kubernetes API, with client-side rate limiting.

Credentials come from the service account or a kubeconfig (adapters/kubeconfig.py; kubernetes_asyncio only for a
kubeconfig that needs an exec plugin or an auth provider). Requests go over one aiohttp session as plain JSON,
which is both faster than model deserialisation for large lists and exactly the shape the pure domain code works
on. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import aiohttp
import msgspec
import orjson

from coordinator.adapters.kubeconfig import (
    ConnectionConfig,
    KubeconfigError,
    in_cluster_config,
    kubeconfig_paths,
    read_kubeconfig,
)

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

CONNECTIONS = 32  # the pool's size: requests in flight at once

# A list answered with each item's metadata only (kind PartialObjectMetadata): the API server leaves out spec
# and status, half of the bytes it encodes for a pod list (and a third of the CPU it spends on it).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

HOME_KUBECONFIG = "~/.kube/config"


def _decode(raw: bytes) -> JSON:
    try:
        # orjson: decoding a 10,000-pod LIST was 42 % of the operator's CPU with the json module.
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        # Not a Status object: a proxy's or a missing API's plain-text answer ("404 page not found").
        return {"message": raw.decode(errors="replace").strip()[:500]}
    if not isinstance(payload, dict):
        return {"message": str(payload)[:500]}
    return payload


# --- what target selection reads of a listed object (msgspec skips every other field without building it) ---


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _Metadata(msgspec.Struct, omit_defaults=True):
    name: str = ""
    namespace: str | None = None
    uid: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deletionTimestamp: str | None = None


class _Status(msgspec.Struct, omit_defaults=True):
    phase: str | None = None
    conditions: list[_Condition] | None = None


class _Summary(msgspec.Struct, omit_defaults=True):
    metadata: _Metadata = msgspec.field(default_factory=_Metadata)
    status: _Status | None = None


class _RawList(msgspec.Struct):
    items: list[msgspec.Raw] | None = None


_RAW_LIST = msgspec.json.Decoder(_RawList)
_SUMMARY = msgspec.json.Decoder(_Summary)


@dataclass(frozen=True)
class Listed:
    """One listed object: ``summary`` holds its ``metadata`` (name, namespace, uid, labels, annotations,
    deletionTimestamp) and ``status`` (phase, conditions' type and status) as JSON-shaped dicts; ``object()``
    decodes all of it."""

    summary: JSON
    raw: msgspec.Raw

    @classmethod
    def of(cls, raw: msgspec.Raw) -> Listed:
        try:
            summary: JSON = msgspec.to_builtins(_SUMMARY.decode(raw))
        except msgspec.DecodeError:  # a field of an unexpected shape: read the whole object instead
            summary = _decode(bytes(raw))
        return cls(summary=summary, raw=raw)

    def object(self) -> JSON:
        return _decode(bytes(self.raw))


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str | int]:
    """A list request's selector parameters (those given)."""
    params: dict[str, str | int] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


ListedItems = list[Listed]  # (inside KubeClient, ``list`` names its method)


def listed_items(raw: bytes, source: str) -> ListedItems:
    """The items of a list response body (``source``: where it came from, for the error)."""
    try:
        items = _RAW_LIST.decode(raw).items or []
    except msgspec.DecodeError as exc:
        raise ApiError(500, "InvalidResponse", f"the list from {source} is not a list: {exc}") from exc
    return [Listed.of(item) for item in items]


# The status an ApiError carries when the API server could not be reached at all (connection refused or reset,
# a timeout): the same as the server's own "try again later".
NETWORK_ERROR_STATUS = 503


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = dict(body or {})

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class RateLimiter:
    """A token bucket: ``qps`` sustained, ``burst`` at once. Waits (asynchronously) instead of failing.

    No lock: the event loop runs one task at a time, and ``acquire`` takes its token before its only ``await``.
    A caller that finds the bucket empty reserves the next token (the bucket goes into debt) and sleeps until it
    is due, so callers are served in the order they came and a late wake-up costs no capacity. The bucket used
    to sit behind an ``asyncio.Lock``: every request queued for the lock, which changes hands once per turn of
    the event loop, and at 100 runs in flight that, not the rate, capped the operator at about 240 requests/s
    (benchmarks/README.md, finding 23).
    """

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.throttled_seconds = 0.0  # the waits of all requests added up, for benchmarks and logs

    async def acquire(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps) - 1
        self._last = now
        if self._tokens >= 0:
            return
        wait = -self._tokens / self.qps
        self.throttled_seconds += wait
        await asyncio.sleep(wait)


@dataclass(frozen=True)
class Credentials:
    host: str
    ssl_context: ssl.SSLContext | bool
    token: str | None
    token_file: Path | None
    # Where the TLS material came from, so kopf can log in with the same credentials (handlers/login.py).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def insecure(self) -> bool:
        return self.ssl_context is False

    def current_token(self) -> str | None:
        """The bearer token now: the static one, or the service-account file's (it rotates). Reads a file."""
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token


def _credentials(config: ConnectionConfig) -> Credentials:
    """The SSL context and token source for ``config``. Reads the CA and certificate files: off the event loop.

    Raises:
        KubeconfigError: a CA or client certificate file is missing or not PEM.
    """
    ctx: ssl.SSLContext | bool
    try:
        if config.insecure:
            if config.cert_file is None:
                ctx = False
            else:  # not verifying the server, still presenting our certificate
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=config.ca_file)
        if config.cert_file and isinstance(ctx, ssl.SSLContext):
            ctx.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:  # SSLError is an OSError; named for the reader
        files = ", ".join(f for f in (config.ca_file, config.cert_file, config.key_file) if f)
        raise KubeconfigError(f"cannot load the TLS files of {config.host} ({files}): {exc}") from exc
    return Credentials(
        host=config.host,
        ssl_context=ctx,
        token=config.token,
        token_file=config.token_file,
        ca_file=config.ca_file,
        cert_file=config.cert_file,
        key_file=config.key_file,
    )


def _resolve(explicit: str | None) -> Credentials | None:
    """An explicit kubeconfig, else ~/.kube/config, else the pod's service account; ``None`` when the kubeconfig
    needs kubernetes_asyncio. Reads files."""
    if explicit:
        config = read_kubeconfig(kubeconfig_paths(explicit))
    elif Path(HOME_KUBECONFIG).expanduser().exists():
        config = read_kubeconfig(kubeconfig_paths(HOME_KUBECONFIG))
    else:
        config = in_cluster_config()
    return None if config is None else _credentials(config)


async def _library_credentials(explicit: str | None) -> Credentials:
    """A kubeconfig with an exec plugin or an auth provider, through kubernetes_asyncio (imported only then)."""
    from kubernetes_asyncio import config as kube_config
    from kubernetes_asyncio.client import Configuration

    cfg = Configuration()
    await kube_config.load_kube_config(config_file=explicit, client_configuration=cfg)
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    config = ConnectionConfig(
        host=str(cfg.host).rstrip("/"),
        ca_file=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        token=auth.removeprefix("Bearer ").strip() if auth else None,
        cert_file=cfg.cert_file or None,
        key_file=cfg.key_file or None,
    )
    return await asyncio.to_thread(_credentials, config)


async def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """From an explicit kubeconfig (or ``KUBECONFIG``), ~/.kube/config, or the in-cluster service account.

    Raises:
        KubeconfigError: none of them is usable (the message says why).
    """
    explicit = kubeconfig or os.environ.get("KUBECONFIG") or None
    credentials = await asyncio.to_thread(_resolve, explicit)
    return credentials if credentials is not None else await _library_credentials(explicit)


async def load_in_cluster_credentials() -> Credentials:
    """The pod's own service account, whatever kubeconfig may lie around (the in-cluster dashboard's identity).

    Raises:
        KubeconfigError: not in a pod, or no service-account token mounted.
    """
    return await asyncio.to_thread(lambda: _credentials(in_cluster_config()))


def bearer_credentials(own: Credentials, token: str) -> Credentials:
    """The same API server and CA as ``own``, authenticated by ``token`` alone. Reads the CA file.

    No client certificate and no token file: the API server would authenticate a request by its certificate
    before its bearer token, so a request meant as the token's owner must not carry ``own``'s certificate.
    """
    insecure = own.ssl_context is False or (
        isinstance(own.ssl_context, ssl.SSLContext) and own.ssl_context.verify_mode == ssl.CERT_NONE
    )
    plain = _credentials(ConnectionConfig(host=own.host, ca_file=own.ca_file, insecure=insecure, token=token))
    return dataclasses.replace(
        own, ssl_context=plain.ssl_context, token=token, token_file=None, cert_file=None, key_file=None
    )


@runtime_checkable
class KubeApi(Protocol):
    """What code that talks to the API server needs of a client: :class:`KubeClient` in the operator, the
    in-memory ``tests/support/fake_kube.py`` in unit tests. Type a collaborator's client against this, not the
    class, when it only reads and writes objects (no ``close``, no request counters).

    Paths are API paths (:func:`resource_path`); errors are :class:`ApiError` with the API server's status
    (404 not found, 409 conflict or already exists).
    """

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
    ) -> JSON: ...

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> JSON: ...

    async def get_text(self, path: str, params: Mapping[str, str | int] | None = None) -> str: ...

    async def get_or_none(self, path: str) -> JSON | None: ...

    async def list_summaries(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
    ) -> ListedItems: ...

    async def create(self, path: str, body: JSON) -> JSON: ...

    async def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> JSON: ...

    async def delete(self, path: str, body: JSON | None = None) -> JSON: ...

    def watch(
        self,
        path: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 60,
        label_selector: str = "",
        field_selector: str = "",
    ) -> AsyncIterator[JSON]: ...

    # Last: inside the class body, ``list`` names this method.
    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> list[JSON]: ...


class KubeClient:
    """JSON in, JSON out. Paths are API paths (``/api/v1/namespaces/x/pods``)."""

    def __init__(self, credentials: Credentials, qps: float = 50.0, burst: int = 100, timeout: float = 30.0) -> None:
        self._creds = credentials
        self._limiter = RateLimiter(qps, burst)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token_cache: tuple[float, str] | None = None
        self.requests = 0
        # Requests by HTTP method (watches count as GET): /metrics and the benchmarks read these.
        self.requests_by_method: collections.Counter[str] = collections.Counter()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, qps: float = 50.0, burst: int = 100) -> KubeClient:
        return cls(await load_credentials(kubeconfig), qps=qps, burst=burst)

    @property
    def throttled_seconds(self) -> float:
        return self._limiter.throttled_seconds

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept}
        token = self._creds.token
        if self._creds.token_file is not None:
            # Bound service-account tokens rotate; re-read the file at most once a minute.
            now = time.monotonic()
            if self._token_cache is None or now - self._token_cache[0] > 60:
                self._token_cache = (now, self._creds.current_token() or "")
            token = self._token_cache[1]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Each open TLS connection costs about 0.35 MB resident, kept while it idles in the pool. 32 matches
            # the engine's apply parallelism; requests beyond it wait for a connection (benchmarks/README.md).
            connector = aiohttp.TCPConnector(ssl=self._creds.ssl_context, limit=CONNECTIONS)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> bytes:
        """One request; the response body as it came (raises ApiError on an error status)."""
        await self._limiter.acquire()
        self.requests += 1
        self.requests_by_method[method] += 1
        headers = self._headers(accept)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        session = self._get_session()
        try:
            async with session.request(
                method, self._creds.host + path, data=data, params=dict(params or {}), headers=headers
            ) as resp:
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The API server could not be reached or did not answer: transient (503), so a run retries it with
            # backoff instead of failing, and callers need to know only ApiError.
            raise ApiError(
                NETWORK_ERROR_STATUS, "ServiceUnavailable", f"{method} {path}: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status >= 400:
            payload = _decode(raw)
            raise ApiError(
                resp.status, str(payload.get("reason", resp.reason)), str(payload.get("message", "")), payload
            )
        return raw

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        return _decode(await self._exchange(method, path, body=body, params=params, content_type=content_type))

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> JSON:
        return await self.request("GET", path, params=params)

    async def get_text(self, path: str, params: Mapping[str, str | int] | None = None) -> str:
        """A plain-text GET, e.g. a container's log (``.../pods/<name>/log``)."""
        # The log subresource answers plain text but only negotiates JSON, YAML or protobuf: accept anything.
        raw = await self._exchange("GET", path, params=params, accept="*/*")
        return raw.decode("utf-8", errors="replace")

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> list[JSON]:
        """Every item of a collection, following ``continue`` tokens."""
        items: list[JSON] = []
        params = {"limit": page_size, **_selectors(label_selector, field_selector)}
        while True:
            page = await self.get(path, params=params)
            items.extend(page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def list_summaries(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
    ) -> ListedItems:
        """Every item of a collection as a ``Listed``: the fields target selection reads, decoded; the rest
        decoded only for the items asked for. ``metadata_only``: the API server sends each item's metadata and
        nothing else (``object()`` is then a PartialObjectMetadata, and the summary has no status).

        One request without a limit: since Kubernetes 1.31 the API server serves it from its watch cache (still
        a consistent read), where every continued page of a paginated list is an etcd read. Decoding all of a
        10,000-pod list took 1.2-2.5 s with orjson; skipping what selection does not read takes about 0.15 s.
        """
        params = _selectors(label_selector, field_selector)
        accept = METADATA_LIST if metadata_only else "application/json"
        return listed_items(await self._exchange("GET", path, params=params, accept=accept), path)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self,
        path: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 60,
        label_selector: str = "",
        field_selector: str = "",
    ) -> AsyncIterator[JSON]:
        """Stream watch events (``{"type": ..., "object": ...}``) until the server closes the watch."""
        params: dict[str, str | int] = {"watch": "true", "timeoutSeconds": timeout_seconds}
        if resource_version:
            params["resourceVersion"] = resource_version
        params.update(_selectors(label_selector, field_selector))
        await self._limiter.acquire()
        self.requests += 1
        self.requests_by_method["GET"] += 1
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + 30)
        async with session.get(
            self._creds.host + path, params=params, headers=self._headers(), timeout=timeout
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", await resp.text())
            async for line in resp.content:
                if line.strip():
                    yield orjson.loads(line)


# --- paths ---------------------------------------------------------------------------------------------------

_RESOURCES: dict[str, tuple[str, str]] = {
    # kind -> (API prefix, plural)
    "Pod": ("/api/v1", "pods"),
    "Node": ("/api/v1", "nodes"),
    "Namespace": ("/api/v1", "namespaces"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ChaosScenario": ("/apis/chaos.coordinator.dev/v1alpha1", "chaosscenarios"),
    "TestRun": ("/apis/chaos.coordinator.dev/v1alpha1", "testruns"),
    "ChaosWorkflow": ("/apis/chaos.coordinator.dev/v1alpha1", "chaosworkflows"),
    "Secret": ("/api/v1", "secrets"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices"),
    "MutatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations"),
    "ValidatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1", "validatingwebhookconfigurations"),
}

CLUSTER_SCOPED = frozenset({"Node", "Namespace", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})


def resource_path(kind: str, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
    """The API path of a kind's collection, or of one object (and its subresource)."""
    prefix, plural = _RESOURCES[kind]
    path = prefix
    if namespace and kind not in CLUSTER_SCOPED:
        path += f"/namespaces/{quote(namespace)}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name)}"
        if subresource:
            path += f"/{subresource}"
    return path


def api_version_of(kind: str) -> str:
    prefix = _RESOURCES[kind][0]
    return prefix.removeprefix("/apis/").removeprefix("/api/")
