"""scale: set a workload's replicas (absolute or a percentage) for the step, then restore them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import KubeApi
from coordinator.api.models import SCALE, Fault, Injection, InjectionState, ScaleOptions
from coordinator.faults.base import FaultContext, FaultDriver, FaultError, original_of, target_path, unless_gone


def scaled_replicas(current: int, options: ScaleOptions) -> int:
    """The replica count during the fault: ``replicas``, or ``percent`` of the current count, rounded down."""
    if options.replicas is not None:
        return options.replicas
    return (current * (options.percent or 0)) // 100


class ScaleFault(FaultDriver):
    declaration = SCALE

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"replicas": int(obj.get("spec", {}).get("replicas", 1))}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        options = SCALE.options_of(fault)
        if options is None:  # the CRD requires them (scale faults need scale options)
            raise FaultError(f"{injection.id}: a scale fault needs scale options")
        ctx.guard(injection.target)
        replicas = scaled_replicas(original_of(injection)["replicas"], options)
        await ctx.client.patch(target_path(injection.target), {"spec": {"replicas": replicas}})
        return InjectionState.APPLIED

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        replicas = original_of(injection)["replicas"]
        await unless_gone(client.patch(target_path(injection.target), {"spec": {"replicas": replicas}}))
