"""Kubernetes Events on TestRuns and on the objects they touch. Posting an Event never fails a run."""

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


async def post_event(client: KubeApi, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
    involved = involved_object(obj)
    namespace = involved.get("namespace") or "default"
    stamp = now_iso_seconds()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
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
