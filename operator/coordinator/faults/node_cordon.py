"""node-cordon: mark the node unschedulable for the step, then restore what it was."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import KubeApi
from coordinator.api.models import NODE_CORDON, Fault, FaultDeclaration, Injection, InjectionState
from coordinator.faults.base import FaultContext, FaultDriver, original_of, target_path, unless_gone


async def set_unschedulable(client: KubeApi, injection: Injection, value: bool) -> None:
    await client.patch(target_path(injection.target), {"spec": {"unschedulable": value or None}})


class NodeCordonFault(FaultDriver):
    """Cordons the node; node-drain (NodeDrainFault) builds on it and restores the node the same way."""

    declaration: FaultDeclaration[Any] = NODE_CORDON

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"unschedulable": bool(obj.get("spec", {}).get("unschedulable", False))}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        await set_unschedulable(ctx.client, injection, True)
        return InjectionState.APPLIED

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        await unless_gone(set_unschedulable(client, injection, original_of(injection)["unschedulable"]))
