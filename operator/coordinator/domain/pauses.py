"""The emergency stop as a person sets it: what a pause or resume acts on, the label patch, and what to say.

``coordinator pause``/``resume`` and the dashboard's namespaces page share these, so the two say the same thing.
The operator's side (who is paused now, which runs stop) is ``engine/pausing.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.api.models import PAUSED_LABEL


@dataclass(frozen=True)
class PauseScope:
    """What a pause or resume acts on: a namespace, or the cluster (the operator's namespace)."""

    namespace: str
    cluster_wide: bool

    @property
    def named(self) -> str:
        return f"the operator's namespace {self.namespace}" if self.cluster_wide else f"namespace {self.namespace}"

    @property
    def resume_command(self) -> str:
        return "coordinator resume" + ("" if self.cluster_wide else f" --namespace {self.namespace}")


def label_patch(paused: bool) -> dict[str, object]:
    """The merge patch that sets (or removes) the pause label."""
    return {"metadata": {"labels": {PAUSED_LABEL: "true" if paused else None}}}


def done_message(scope: PauseScope, paused: bool, was_paused: bool) -> str:
    """What a pause or resume did, for the person who asked."""
    label = f"{PAUSED_LABEL}=true"
    if paused:
        if was_paused:
            return f"{scope.named} is already paused ({label}); `{scope.resume_command}` ends the pause"
        what = "the whole cluster" if scope.cluster_wide else f"namespace {scope.namespace}"
        runs = "every run" if scope.cluster_wide else "every run that touches it"
        return (
            f"paused {what} (label {label} on {scope.named}): {runs} is cancelled with every change reverted, "
            f"and new runs wait until `{scope.resume_command}`"
        )
    if not was_paused:
        return f"{scope.named} was not paused; nothing to do"
    what = "the whole cluster" if scope.cluster_wide else f"namespace {scope.namespace}"
    return f"resumed {what} (label {PAUSED_LABEL} removed from {scope.named}): waiting runs start"
