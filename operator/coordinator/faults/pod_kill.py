"""pod-kill: delete the pod (with a grace period); its controller is expected to replace it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi
from coordinator.api.models import POD_KILL, Fault, Injection, InjectionState, PodKillOptions
from coordinator.faults.base import FaultContext, FaultDriver, target_path


class PodKillFault(FaultDriver):
    declaration = POD_KILL
    reversible = False
    reads_targets = False

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        options = POD_KILL.options_of(fault) or PodKillOptions()
        ctx.guard(injection.target)
        # The UID precondition makes a repeated apply (after a restart) a no-op instead of killing the replacement.
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": options.gracePeriodSeconds,
            "preconditions": {"uid": injection.target.uid},
        }
        try:
            await ctx.client.delete(target_path(injection.target), body)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise
        return InjectionState.IRREVERSIBLE

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        return None
