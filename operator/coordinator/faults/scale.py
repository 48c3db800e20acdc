"""scale: set a workload's replicas (absolute or a percentage) for the step, then restore them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.api.models import Fault, FaultType, Injection, InjectionState, ScaleOptions
from coordinator.faults.base import FaultContext, FaultDriver, original_of, target_path


def scaled_replicas(current: int, options: ScaleOptions) -> int:
    """The replica count during the fault: ``replicas``, or ``percent`` of the current count, rounded down."""
    if options.replicas is not None:
        return options.replicas
    return (current * (options.percent or 0)) // 100


class ScaleFault(FaultDriver):
    type = FaultType.SCALE
    kinds: ClassVar[frozenset[str]] = frozenset({"Deployment", "StatefulSet"})

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"replicas": int(obj.get("spec", {}).get("replicas", 1))}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        options: ScaleOptions = self.options(fault)
        ctx.guard(injection.target)
        replicas = scaled_replicas(original_of(injection)["replicas"], options)
        await ctx.client.patch(target_path(injection.target), {"spec": {"replicas": replicas}})
        return InjectionState.APPLIED

    async def revert(self, client: KubeClient, injection: Injection) -> None:
        try:
            await client.patch(
                target_path(injection.target), {"spec": {"replicas": original_of(injection)["replicas"]}}
            )
        except ApiError as exc:
            if not exc.not_found:
                raise
