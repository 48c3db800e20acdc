"""Kubernetes Events on TestRuns and on the objects they touch. Posting an Event never fails a run.

Every Event about a run carries the run's correlation ID (its UID) in the annotation ``CORRELATION_ANNOTATION``,
also those on the objects it touches (``ChaosInjected``/``ChaosReverted``), whose involved object is the target:
``kubectl get events -A -o json`` then finds everything one run did, as its log lines (``correlation_id``) and
history rows (``uid``/``run_uid``) do.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, api_version_of, resource_path
from coordinator.api.models import TargetRef
from coordinator.domain.timestamps import now_iso_seconds

log = logging.getLogger(__name__)
COMPONENT = "test-coordinator"
CORRELATION_ANNOTATION = "chaos.coordinator.dev/correlation-id"


def involved_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    ref = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


def target_object(target: TargetRef) -> dict[str, Any]:
    try:
        api_version = api_version_of(target.kind)
    except KeyError:
        api_version = "v1"
    meta: dict[str, Any] = {"name": target.name, "uid": target.uid}
    if target.namespace:
        meta["namespace"] = target.namespace
    return {"apiVersion": api_version, "kind": target.kind, "metadata": meta}


def event_metadata(involved: Mapping[str, Any], correlation_id: str | None) -> dict[str, Any]:
    """An Event's metadata: a unique name beside its object, and the run's correlation ID as an annotation (the
    involved object's own UID when it is a TestRun and no other run is named)."""
    namespace = involved.get("namespace") or "default"
    meta: dict[str, Any] = {"name": f"{involved['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace}
    if correlation_id is None and involved.get("kind") == "TestRun":
        correlation_id = involved.get("uid")
    if correlation_id:
        meta["annotations"] = {CORRELATION_ANNOTATION: correlation_id}
    return meta


async def post_event(
    client: KubeApi,
    obj: Mapping[str, Any],
    reason: str,
    message: str,
    type_: str = "Normal",
    *,
    correlation_id: str | None = None,
) -> None:
    """Post an Event on ``obj``; ``correlation_id`` is the UID of the run it is about (by default ``obj``'s own
    when ``obj`` is a TestRun)."""
    involved = involved_object(obj)
    namespace = involved.get("namespace") or "default"
    stamp = now_iso_seconds()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": event_metadata(involved, correlation_id),
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await client.create(resource_path("Event", namespace), body)
    except (ApiError, OSError) as exc:  # events are best effort; the status is the record
        log.warning("could not post event %s on %s/%s: %s", reason, namespace, involved["name"], exc)
