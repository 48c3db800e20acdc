"""node-cordon: mark the node unschedulable for the step, then restore what it was."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.api.models import Fault, FaultType, Injection, InjectionState
from coordinator.faults.base import FaultContext, FaultDriver, original_of, target_path


async def set_unschedulable(client: KubeClient, injection: Injection, value: bool) -> None:
    await client.patch(target_path(injection.target), {"spec": {"unschedulable": value or None}})


class NodeCordonFault(FaultDriver):
    type = FaultType.NODE_CORDON
    kinds: ClassVar[frozenset[str]] = frozenset({"Node"})

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"unschedulable": bool(obj.get("spec", {}).get("unschedulable", False))}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        await set_unschedulable(ctx.client, injection, True)
        return InjectionState.APPLIED

    async def revert(self, client: KubeClient, injection: Injection) -> None:
        try:
            await set_unschedulable(client, injection, original_of(injection)["unschedulable"])
        except ApiError as exc:
            if not exc.not_found:
                raise
