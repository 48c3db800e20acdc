"""pod-failure: swap the containers' images for one that cannot start, then put the originals back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import STRATEGIC_PATCH, KubeApi
from coordinator.api.models import POD_FAILURE, Fault, Injection, InjectionState, PodFailureOptions
from coordinator.faults.base import FaultContext, FaultDriver, FaultError, original_of, target_path, unless_gone


def _images_patch(images: Mapping[str, str]) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": name, "image": image} for name, image in sorted(images.items())]}}


class PodFailureFault(FaultDriver):
    declaration = POD_FAILURE

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        options = POD_FAILURE.options_of(fault) or PodFailureOptions()
        containers = obj.get("spec", {}).get("containers", [])
        wanted = set(options.containerNames) or {c["name"] for c in containers}
        missing = wanted - {c["name"] for c in containers}
        if missing:
            name = obj.get("metadata", {}).get("name")
            raise FaultError(f"pod {name} has no container(s) {sorted(missing)} (podFailure.containerNames)")
        return {"images": {c["name"]: c["image"] for c in containers if c["name"] in wanted}}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        options = POD_FAILURE.options_of(fault) or PodFailureOptions()
        ctx.guard(injection.target)
        broken = {name: options.image for name in original_of(injection)["images"]}
        await ctx.client.patch(target_path(injection.target), _images_patch(broken), STRATEGIC_PATCH)
        return InjectionState.APPLIED

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        images = _images_patch(original_of(injection)["images"])
        await unless_gone(client.patch(target_path(injection.target), images, STRATEGIC_PATCH))
