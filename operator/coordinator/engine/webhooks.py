"""The admission webhooks' serving certificate and configurations, kept in the cluster.

The CA and the serving certificate live in a Secret in the operator's namespace, so a restarted operator (or a
second replica) serves with the same certificate and the caBundle in the configurations stays valid. The operator
creates the Secret on first start, renews it before it expires, and writes the caBundle (and, run as a local
process, its own URL) into its webhook configurations.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from coordinator.adapters.certificates import KeyPair, ServingBundle, renewal_reason, renewed
from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.domain.admission import configuration_name, webhook_configurations
from coordinator.settings import Settings

log = logging.getLogger("coordinator.webhooks")

# Secret keys: the usual tls.crt/tls.key, the CA that signed it (with its key: the operator renews the serving
# certificate itself) and CAs still trusted while a rotation settles.
_KEYS = ("tls.crt", "tls.key", "ca.crt", "ca.key", "ca-previous.crt")


# One certificate per operator namespace, whatever the instance: local operator processes on one cluster share
# the webhook port (SO_REUSEPORT), so each must serve what every configuration trusts.
TLS_SECRET = "test-coordinator-webhook-tls"  # noqa: S105 - a Secret's name, not a password


def serving_hosts(settings: Settings) -> list[str]:
    """The names the serving certificate must cover: the URL's host locally, the Service's DNS names in-cluster."""
    if settings.webhook_service:
        name = settings.webhook_service
        ns = settings.namespace
        return [f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}", name]
    return [settings.webhook_host]


def client_config_base(settings: Settings) -> dict[str, Any]:
    """How the API server reaches this instance's webhooks (without the handler path)."""
    if settings.webhook_service:
        return {"service": {"namespace": settings.namespace, "name": settings.webhook_service, "port": 443}}
    host = settings.webhook_host
    netloc = f"[{host}]" if ":" in host else host
    return {"url": f"https://{netloc}:{settings.webhook_port}"}


def _bundle_of(secret: Mapping[str, Any]) -> ServingBundle | None:
    data = secret.get("data") or {}
    try:
        raw = {k: base64.b64decode(data[k]) for k in _KEYS if k in data}
        bundle = ServingBundle(
            KeyPair(raw["ca.crt"], raw["ca.key"]),
            KeyPair(raw["tls.crt"], raw["tls.key"]),
            raw.get("ca-previous.crt", b""),
        )
        _ = (bundle.authority.not_after, bundle.serving.not_after)  # parses both
    except (KeyError, ValueError):
        return None
    return bundle


def _secret_data(bundle: ServingBundle) -> dict[str, str]:
    raw = {
        "tls.crt": bundle.serving.cert,
        "tls.key": bundle.serving.key,
        "ca.crt": bundle.authority.cert,
        "ca.key": bundle.authority.key,
        "ca-previous.crt": bundle.previous_authorities,
    }
    return {k: base64.b64encode(v).decode() for k, v in raw.items()}


async def ensure_bundle(client: KubeApi, settings: Settings, now: datetime) -> ServingBundle:
    """The Secret's bundle, created or renewed first when it is missing, unreadable, expiring or for other hosts.

    Two replicas starting together both try; the one whose write conflicts reads the winner's bundle.
    """
    hosts = serving_hosts(settings)
    path = resource_path("Secret", settings.namespace, TLS_SECRET)
    for _ in range(5):
        secret = await client.get_or_none(path)
        bundle = _bundle_of(secret) if secret is not None else None
        reason = "no certificate yet" if bundle is None else renewal_reason(bundle, hosts, now)
        if reason is None and bundle is not None:
            return bundle
        fresh = await asyncio.to_thread(renewed, bundle, f"{settings.instance_name}-webhook-ca", hosts, now)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",  # as the install ships it (empty), so its RBAC need not allow create
            "metadata": {
                "name": TLS_SECRET,
                "namespace": settings.namespace,
                "labels": {"app.kubernetes.io/name": "test-coordinator"},
            },
            "data": _secret_data(fresh),
        }
        try:
            if secret is None:
                await client.create(resource_path("Secret", settings.namespace), body)
            else:
                body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
                await client.request("PUT", path, body=body)
        except ApiError as exc:
            if exc.conflict:
                continue  # another replica wrote first: use its bundle
            raise
        log.info(
            "webhook serving certificate written to Secret %s/%s (%s)",
            settings.namespace,
            TLS_SECRET,
            reason,
        )
        return fresh
    raise RuntimeError(f"could not write Secret {settings.namespace}/{TLS_SECRET}: it kept changing")


def write_files(bundle: ServingBundle, directory: Path) -> tuple[Path, Path, Path]:
    """The serving pair and the CA bundle as files for the webhook server; rewritten only when changed (the server
    restarts when they change)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"tls.crt": bundle.serving.cert, "tls.key": bundle.serving.key, "ca.crt": bundle.ca_bundle}
    for name, content in files.items():
        target = directory / name
        if not target.exists() or target.read_bytes() != content:
            staging = directory / f".{name}.new"
            staging.write_bytes(content)
            staging.chmod(0o600)
            staging.replace(target)
    return directory / "tls.crt", directory / "tls.key", directory / "ca.crt"


async def register(client: KubeApi, settings: Settings, ca_bundle: str) -> None:
    """Write this instance's webhook configurations, with the caBundle (base64 PEM) and how to reach the webhooks.

    Installed from ``manifests/``, the configurations exist and only change here in their caBundle; run as a
    local process, the operator creates them itself.
    """
    mutating, validating = webhook_configurations(
        settings.namespace,
        client_config_base(settings),
        ca_bundle,
        settings.watched if not settings.watches_patterns else [],
    )
    for kind, body in (("MutatingWebhookConfiguration", mutating), ("ValidatingWebhookConfiguration", validating)):
        path = resource_path(kind, name=configuration_name(settings.namespace))
        try:
            await client.patch(path, {"webhooks": body["webhooks"]})
        except ApiError as exc:
            if not exc.not_found:
                raise
            await client.create(resource_path(kind), body)
    log.info(
        "webhook configurations %s point at %s",
        configuration_name(settings.namespace),
        client_config_base(settings),
    )


async def ensure_namespace(client: KubeApi, namespace: str) -> None:
    """Create the operator's namespace when it does not exist (a local process; installs bring their own)."""
    try:
        if await client.get_or_none(resource_path("Namespace", name=namespace)) is not None:
            return
    except ApiError as exc:
        if exc.status == 403:
            return  # an install without rights on namespaces brings its own
        raise
    try:
        await client.create(
            resource_path("Namespace"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        log.info("created the operator's namespace %s", namespace)
    except ApiError as exc:
        if not exc.conflict:
            raise


SERVING_LABEL = "chaos.coordinator.dev/serving-webhooks"


async def mark_serving(client: KubeApi, settings: Settings, serving: bool) -> None:
    """In the cluster, label this replica's pod as the one serving the webhooks (the Service selects it), or
    clear the label: every replica clears it when it starts, the leader sets it once it serves. A local process
    (no COORDINATOR_WEBHOOK_SERVICE) has no pod and does nothing."""
    if not settings.webhook_service or not settings.identity:
        return
    patch = {"metadata": {"labels": {SERVING_LABEL: "true" if serving else None}}}
    try:
        await client.patch(resource_path("Pod", settings.namespace, settings.identity), patch)
    except ApiError as exc:
        if not exc.not_found:
            raise
        log.warning(
            "pod %s/%s not found: COORDINATOR_IDENTITY should be the pod's name", settings.namespace, settings.identity
        )


async def wait_until_served(client: KubeApi, settings: Settings, deadline: float = 60.0, interval: float = 0.5) -> None:
    """In the cluster, wait (up to ``deadline`` seconds) until this pod is a ready endpoint of the webhook Service:
    until then the API server cannot reach the webhooks, and the operator does not call itself ready."""
    if not settings.webhook_service or not settings.identity:
        return
    path = resource_path("EndpointSlice", settings.namespace)
    selector = f"kubernetes.io/service-name={settings.webhook_service}"
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while loop.time() < until:
        for endpoint_slice in await client.list(path, label_selector=selector):
            for endpoint in endpoint_slice.get("endpoints") or []:
                ready = (endpoint.get("conditions") or {}).get("ready") is not False
                if ready and (endpoint.get("targetRef") or {}).get("name") == settings.identity:
                    return
        await asyncio.sleep(interval)
    log.warning("this pod is not an endpoint of Service %s after %.0fs", settings.webhook_service, deadline)
