"""Reading candidate targets from the cluster and handing them to the pure selection code."""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.adapters.kube import ApiError, KubeApi, Listed, resource_path
from coordinator.adapters.sharedreads import shared_get
from coordinator.api.models import Target, TargetKind
from coordinator.domain.selection import (
    Candidate,
    SelectionError,
    eligible,
    label_selector_to_string,
    namespace_allowed,
    select_targets,
)
from coordinator.faults.base import PlannedTarget
from coordinator.settings import Settings

OPT_IN_LABEL = "chaos.coordinator.dev/allow"
RUNNING_PODS = "status.phase=Running"


@dataclass
class Selection:
    targets: list[PlannedTarget]
    matched: int
    refused: list[str] = field(default_factory=list)  # namespaces skipped, with the reason


class NamespacePolicy:
    """Whether a namespace may be touched, cached for one run step (namespace labels rarely change mid-step)."""

    def __init__(self, client: KubeApi, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._cache: dict[str, tuple[bool, str]] = {}

    async def __call__(self, namespace: str) -> tuple[bool, str]:
        if namespace not in self._cache:
            labels: dict[str, str] = {}
            if namespace not in self._settings.protected:
                try:
                    # read after this step asked, shared with the runs asking at the same time
                    ns = await shared_get(self._client, resource_path("Namespace", name=namespace))
                    labels = ns.get("metadata", {}).get("labels") or {}
                    if (ns.get("status") or {}).get("phase") == "Terminating":
                        self._cache[namespace] = (False, f"namespace {namespace} is being deleted")
                        return self._cache[namespace]
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                    self._cache[namespace] = (False, f"namespace {namespace} does not exist")
                    return self._cache[namespace]
            self._cache[namespace] = namespace_allowed(
                namespace,
                protected=self._settings.protected,
                namespace_labels=labels,
                require_opt_in=not self._settings.cluster_wide_targeting,
                opt_in_label=OPT_IN_LABEL,
            )
        return self._cache[namespace]


def pods_by_metadata(target: Target, reads_targets: bool) -> bool:
    """Whether a step may list its candidates as metadata only: pods, for faults that do not read them.

    The API server then filters on the phase (``status.phase=Running``, which eligibility asks of a pod) and
    leaves out spec and status: for 10,000 pods a third less API server CPU and half the bytes to decode
    (benchmarks/README.md, finding 20). What selection reads besides the phase is all metadata; the Ready
    condition, which only orders two snapshots of one pod, is then unknown.
    """
    return target.kind == TargetKind.POD and not reads_targets


def _and(*selectors: str | None) -> str | None:
    return ",".join(s for s in selectors if s) or None


async def resolve_targets(
    client: KubeApi,
    policy: NamespacePolicy,
    target: Target,
    default_namespace: str,
    mode: str,
    value: int | None,
    seed: int | None,
    reads_targets: bool = True,
) -> Selection:
    """List what the target spec matches (label/field selectors server-side), filter and pick per mode.

    ``reads_targets``: whether the step's faults read the selected objects; without, pods are listed as metadata
    only (:func:`pods_by_metadata`) and ``PlannedTarget.obj`` holds just that.
    """
    kind = str(target.kind)
    label_selector = label_selector_to_string(target.labelSelector) or None
    by_metadata = pods_by_metadata(target, reads_targets)
    field_selector = _and(RUNNING_PODS, target.fieldSelector) if by_metadata else target.fieldSelector
    listed: list[Listed] = []
    refused: list[str] = []
    # One response per namespace, decoded only as far as selection reads; the chosen objects in full
    # (KubeApi.list_summaries; benchmarks/README.md, finding 15).
    try:
        if kind == TargetKind.NODE:
            listed = await client.list_summaries(
                resource_path(kind), label_selector=label_selector, field_selector=target.fieldSelector
            )
        else:
            for namespace in target.namespaces or [default_namespace]:
                allowed, reason = await policy(namespace)
                if not allowed:
                    refused.append(reason)
                    continue
                listed += await client.list_summaries(
                    resource_path(kind, namespace),
                    label_selector=label_selector,
                    field_selector=field_selector,
                    metadata_only=by_metadata,
                )
    except ApiError as exc:
        if exc.status != 400 or not target.fieldSelector:
            raise
        # The label selector was checked above, so a 400 on the list is the field selector (an unknown field
        # label, a malformed term): the scenario's mistake, named, not a Kubernetes API failure.
        raise SelectionError(f"the API server refused it: {exc.message}", "spec.target.fieldSelector") from exc
    # Listed by metadata, every pod is Running: the API server kept only those.
    status = {"status": {"phase": "Running"}} if by_metadata else {}
    candidates = [Candidate.from_object(kind, {**item.summary, **status}) for item in listed]
    by_uid = {candidate.uid: item for candidate, item in zip(candidates, listed, strict=True)}
    matching = eligible(candidates, target)
    chosen = select_targets(matching, mode, value, seed)
    return Selection(
        targets=[PlannedTarget(ref=c.to_ref(), obj=by_uid[c.uid].object()) for c in chosen],
        matched=len(matching),
        refused=refused,
    )
