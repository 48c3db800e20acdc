"""rollout-restart: what ``kubectl rollout restart`` does, the "service restart" of the seed scenarios."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import KubeApi
from coordinator.api.models import ROLLOUT_RESTART, Fault, Injection, InjectionState
from coordinator.domain.timestamps import now_iso_seconds
from coordinator.faults.base import FaultContext, FaultDriver, target_path

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RolloutRestartFault(FaultDriver):
    declaration = ROLLOUT_RESTART
    reversible = False

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        ctx.guard(injection.target)
        stamp = now_iso_seconds()
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        await ctx.client.patch(target_path(injection.target), body)
        return InjectionState.IRREVERSIBLE

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        return None
