"""k8s probes: a field, a condition or a count of Kubernetes objects, compared with a value.

A probe reads with the operator's rights, which are wider than its author's. So it never reads a Secret, never
reads anything in a protected namespace, and never shows a value read from a ConfigMap; of any other object a
message shows at most a short excerpt of each value.
"""

from __future__ import annotations

import re
import time
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi
from coordinator.api.probes import API_VERSION_PATTERN, KIND_PATTERN, OBJECT_NAME_PATTERN, K8sProbe
from coordinator.domain.resources import CLUSTER_SCOPED_KINDS, plural
from coordinator.domain.samples import ProbeError, Sample, compare
from coordinator.domain.selection import label_selector_to_string
from coordinator.probes.base import ProbeRefused, excerpt, lookup, short

# Core resources whose values are configuration or credentials: Secrets are never read, ConfigMaps never shown.
UNREADABLE = frozenset({"secrets"})
UNSHOWN = frozenset({"secrets", "configmaps"})
HIDDEN = "(hidden)"


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace and kind not in CLUSTER_SCOPED_KINDS:
        return f"{prefix}/namespaces/{namespace}/{plural(kind)}"
    return f"{prefix}/{plural(kind)}"


def _core(spec: K8sProbe) -> bool:
    return spec.apiVersion == "v1"


def shows_values(spec: K8sProbe) -> bool:
    """Whether messages may show (an excerpt of) the values this probe reads."""
    return not (_core(spec) and plural(spec.kind) in UNSHOWN)


def refusal(spec: K8sProbe, default_namespace: str, protected: frozenset[str]) -> ProbeRefused | None:
    """Pure: why this probe may not read what it names, or None. It reads in its namespace, else the default."""
    namespace = spec.namespace or default_namespace
    checks = (
        ("k8s.apiVersion", spec.apiVersion, API_VERSION_PATTERN),
        ("k8s.kind", spec.kind, KIND_PATTERN),
        ("k8s.name", spec.name, OBJECT_NAME_PATTERN),
    )
    for field, value, pattern in checks:
        # The models check these too; the API path is built from them, so they are checked where it is built.
        if value is not None and re.fullmatch(pattern, value) is None:
            return ProbeRefused(field, f"{excerpt(value)!r} cannot name an object")
    if _core(spec) and plural(spec.kind) in UNREADABLE:
        return ProbeRefused("k8s.kind", f"k8s probes never read {spec.kind} objects (Secrets)")
    if spec.kind not in CLUSTER_SCOPED_KINDS and namespace in protected:
        whose = "" if spec.namespace else " (the scenario's own namespace)"
        return ProbeRefused("k8s.namespace", f"namespace {namespace!r}{whose} is protected: probes never read it")
    return None


def _pod_ready(obj: dict[str, Any]) -> bool:
    if obj.get("metadata", {}).get("deletionTimestamp") or obj.get("status", {}).get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in obj["status"].get("conditions", []))


def field_values(
    obj: dict[str, Any], field_path: str, value: Any, value_from_path: str | None, what: str
) -> tuple[Any, Any]:
    """Pure: the value of ``field_path`` in ``obj`` and the value it is compared with (``value``, or the field
    ``value_from_path``), as k8s probes and triggers read them: an absent ``status.`` field counts as zero (the
    API server leaves out counters at zero). ProbeError names the missing field (``what``: the object)."""
    try:
        actual = lookup(obj, field_path)
    except KeyError:
        actual = 0 if field_path.startswith("status.") else None  # absent counters mean zero
    if actual is None:
        raise ProbeError(f"{what} has no field {field_path}")
    if not value_from_path:
        return actual, value
    try:
        return actual, lookup(obj, value_from_path)
    except KeyError:
        raise ProbeError(f"{what} has no field {value_from_path}") from None


def evaluate(spec: K8sProbe, objects: list[dict[str, Any]]) -> tuple[bool, str]:
    """Pure: whether the objects satisfy the probe, and what was observed (values bounded, or hidden)."""
    if spec.count:
        alive = [o for o in objects if spec.kind != "Pod" or _pod_ready(o)]
        return compare(len(alive), spec.operator, spec.value or 0), f"count={len(alive)}"
    if not objects:
        raise ProbeError(f"no {spec.kind} matches")
    visible = shows_values(spec)

    def show(value: Any) -> str:
        return excerpt(value) if visible else HIDDEN

    observed = []
    for obj in objects:
        name = excerpt(obj.get("metadata", {}).get("name"))
        if spec.condition:
            conditions = {c.get("type"): c.get("status") for c in obj.get("status", {}).get("conditions", [])}
            status = conditions.get(spec.condition, "Unknown")
            observed.append(f"{name}:{spec.condition}={show(status)}")
            if status != "True":
                return False, ", ".join(observed)
        if spec.fieldPath:
            actual, expected = field_values(obj, spec.fieldPath, spec.value, spec.valueFromPath, f"{spec.kind} {name}")
            wanted = show(expected) if spec.valueFromPath else str(spec.value)
            observed.append(f"{name}:{spec.fieldPath}={show(actual)}")
            try:
                ok = compare(actual, spec.operator, expected)
            except ProbeError:
                raise ProbeError(
                    f"{spec.kind} {name}: {spec.fieldPath}={show(actual)} cannot be compared {spec.operator} {wanted}"
                ) from None
            if not ok:
                return False, f"{', '.join(observed)} (want {spec.operator} {wanted})"
    return True, ", ".join(observed)


async def sample(client: KubeApi, spec: K8sProbe, default_namespace: str, protected: frozenset[str]) -> Sample:
    """One read. ProbeRefused (not a failed sample) when the probe names what no probe may read."""
    refused = refusal(spec, default_namespace, protected)
    if refused is not None:
        raise refused
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
