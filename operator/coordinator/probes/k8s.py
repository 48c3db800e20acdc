"""k8s probes: a field, a condition or a count of Kubernetes objects, compared with a value."""

from __future__ import annotations

import time
from typing import Any

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.api.probes import K8sProbe
from coordinator.domain.selection import label_selector_to_string
from coordinator.probes.base import ProbeError, Sample, compare, lookup, short

# Plurals of the kinds probes usually look at; others fall back to the lowercase kind + "s".
PLURALS = {
    "Endpoints": "endpoints",
    "Ingress": "ingresses",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
}
CLUSTER_SCOPED = {"Node", "Namespace", "PersistentVolume"}


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = PLURALS.get(kind, kind.lower() + "s")
    if namespace and kind not in CLUSTER_SCOPED:
        return f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{prefix}/{plural}"


def _pod_ready(obj: dict[str, Any]) -> bool:
    if obj.get("metadata", {}).get("deletionTimestamp") or obj.get("status", {}).get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in obj["status"].get("conditions", []))


def evaluate(spec: K8sProbe, objects: list[dict[str, Any]]) -> tuple[bool, str]:
    """Pure: whether the objects satisfy the probe, and what was observed."""
    if spec.count:
        alive = [o for o in objects if spec.kind != "Pod" or _pod_ready(o)]
        return compare(len(alive), spec.operator, spec.value or 0), f"count={len(alive)}"
    if not objects:
        raise ProbeError(f"no {spec.kind} matches")
    observed = []
    for obj in objects:
        name = obj.get("metadata", {}).get("name")
        if spec.condition:
            conditions = {c.get("type"): c.get("status") for c in obj.get("status", {}).get("conditions", [])}
            status = conditions.get(spec.condition, "Unknown")
            observed.append(f"{name}:{spec.condition}={status}")
            if status != "True":
                return False, ", ".join(observed)
        if spec.fieldPath:
            try:
                actual = lookup(obj, spec.fieldPath)
            except KeyError:
                actual = 0 if spec.fieldPath.startswith("status.") else None  # absent counters mean zero
            if actual is None:
                raise ProbeError(f"{spec.kind} {name} has no field {spec.fieldPath}")
            if spec.valueFromPath:
                try:
                    expected = lookup(obj, spec.valueFromPath)
                except KeyError:
                    raise ProbeError(f"{spec.kind} {name} has no field {spec.valueFromPath}") from None
            else:
                expected = spec.value
            observed.append(f"{name}:{spec.fieldPath}={actual}")
            if not compare(actual, spec.operator, expected):
                return False, f"{', '.join(observed)} (want {spec.operator} {expected})"
    return True, ", ".join(observed)


async def sample(client: KubeClient, spec: K8sProbe, default_namespace: str) -> Sample:
    started = time.time()
    namespace = spec.namespace or default_namespace
    path = collection_path(spec.apiVersion, spec.kind, namespace)
    try:
        if spec.name and not spec.count:
            objects = [await client.get(f"{path}/{spec.name}")]
        else:
            items = await client.list(path, label_selector=label_selector_to_string(spec.labelSelector) or None)
            objects = [o for o in items if not spec.name or o["metadata"]["name"] == spec.name]
        ok, observed = evaluate(spec, objects)
    except ApiError as exc:
        reason = f"{spec.kind} {spec.name or ''} not found in {namespace}" if exc.not_found else str(exc)
        return Sample(ok=False, at=started, error=short(reason))
    except ProbeError as exc:
        return Sample(ok=False, at=started, error=short(str(exc)))
    return Sample(ok=ok, at=started, value=short(observed), error=None if ok else short(observed))
