"""node-drain: cordon the node and evict its pods through the Eviction API; uncordon afterwards.

Evictions honour PodDisruptionBudgets (a blocked eviction is retried for a while, then reported) unless
``ignorePodDisruptionBudgets`` deletes the pods instead. DaemonSet pods, mirror pods and pods in namespaces the
run may not touch stay where they are. Evicted pods are not "reverted": their controllers recreate them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import NODE_DRAIN, Fault, Injection, InjectionState, NodeDrainOptions
from coordinator.faults.base import FaultContext
from coordinator.faults.node_cordon import NodeCordonFault

EVICTION_RETRY_SECONDS = 10.0


def drainable(pod: Mapping[str, Any]) -> bool:
    """Pods a drain moves: not DaemonSet-managed, not mirror pods, not already finished or terminating."""
    meta = pod.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return False
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return False
    if any(ref.get("kind") == "DaemonSet" for ref in meta.get("ownerReferences") or []):
        return False
    return pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def _namespace_terminating(exc: ApiError) -> bool:
    return exc.status == 403 and "being terminated" in exc.message


class NodeDrainFault(NodeCordonFault):
    """A cordon (what to restore, the cordon itself and its revert are node-cordon's) plus the evictions."""

    declaration = NODE_DRAIN

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        options = NODE_DRAIN.options_of(fault) or NodeDrainOptions()
        await super().apply(ctx, fault, injection)
        pods = await ctx.client.list(resource_path("Pod"), field_selector=f"spec.nodeName={injection.target.name}")
        evicted, skipped, blocked = 0, 0, []
        for pod in pods:
            meta = pod["metadata"]
            if not drainable(pod) or not await ctx.may_touch(meta["namespace"]):
                skipped += 1
                continue
            if await self._evict(ctx.client, meta["namespace"], meta["name"], options):
                evicted += 1
            else:
                blocked.append(f"{meta['namespace']}/{meta['name']}")
        note = f"node {injection.target.name}: evicted {evicted} pod(s), left {skipped} in place"
        if blocked:
            note += f"; PodDisruptionBudget blocked {len(blocked)}: {', '.join(blocked[:10])}"
        ctx.notes.append(note)
        return InjectionState.APPLIED

    async def _evict(self, client: KubeApi, namespace: str, name: str, options: NodeDrainOptions) -> bool:
        delete_options: dict[str, Any] = {}
        if options.gracePeriodSeconds is not None:
            delete_options["gracePeriodSeconds"] = options.gracePeriodSeconds
        if options.ignorePodDisruptionBudgets:
            try:
                await client.delete(resource_path("Pod", namespace, name), delete_options or None)
            except ApiError as exc:
                if not (exc.not_found or _namespace_terminating(exc)):
                    raise
            return True
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": delete_options,
        }
        deadline = time.monotonic() + EVICTION_RETRY_SECONDS
        while True:
            try:
                await client.create(resource_path("Pod", namespace, name, "eviction"), body)
                return True
            except ApiError as exc:
                if exc.not_found or _namespace_terminating(exc):
                    return True  # gone, or going away with its namespace
                if exc.status != 429 or time.monotonic() > deadline:
                    if exc.status == 429:
                        return False
                    raise
            await asyncio.sleep(1.0)
